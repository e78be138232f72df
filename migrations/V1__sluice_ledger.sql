-- The sluice ledger (DESIGN.md, "Ledger schema"). Names of jobs, tasks and freshness are
-- contract: dashboards and scripts read them.
CREATE SCHEMA IF NOT EXISTS sluice;

CREATE TABLE sluice.jobs (
    id            uuid PRIMARY KEY,
    connector     text NOT NULL,
    stream        text NOT NULL,
    account       text NOT NULL DEFAULT 'default',
    params        jsonb NOT NULL DEFAULT '{}'::jsonb,
    mode          text NOT NULL DEFAULT 'full' CHECK (mode IN ('full', 'incremental')),
    state         text NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    error         text,
    warnings      jsonb NOT NULL DEFAULT '[]'::jsonb,
    tasks_total   bigint NOT NULL DEFAULT 0,
    rows_loaded   bigint NOT NULL DEFAULT 0,
    rows_rejected bigint NOT NULL DEFAULT 0,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_active ON sluice.jobs (connector, account, stream) WHERE state IN ('queued', 'running');

-- One row per task. Children are inserted by the loader in the transaction that marks their
-- parent done, so "no pending task" is an exact completion test.
CREATE TABLE sluice.tasks (
    task_id      text PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES sluice.jobs (id) ON DELETE CASCADE,
    parent_id    text,
    stream       text NOT NULL,
    kind         jsonb NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'done', 'failed', 'cancelled')),
    attempts     integer NOT NULL DEFAULT 0,
    error        text,
    final_part   integer,          -- part number of the part with task_complete, once seen
    rows_loaded  bigint NOT NULL DEFAULT 0,
    cursor_max   text,
    published_at timestamptz,      -- outbox: root tasks not yet published are re-published
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX tasks_job_state ON sluice.tasks (job_id, state);
CREATE INDEX tasks_unpublished ON sluice.tasks (job_id) WHERE published_at IS NULL;

-- Parts already loaded: a redelivered part is skipped.
CREATE TABLE sluice.batches (
    task_id    text NOT NULL,
    part       integer NOT NULL,
    job_id     uuid NOT NULL,
    table_name text NOT NULL,
    rows       integer NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, part)
);
CREATE INDEX batches_job ON sluice.batches (job_id);

-- One active job per connector/account/stream.
CREATE TABLE sluice.locks (
    connector   text NOT NULL,
    account     text NOT NULL,
    stream      text NOT NULL,
    job_id      uuid NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, account, stream)
);

CREATE TABLE sluice.stream_state (
    connector  text NOT NULL,
    account    text NOT NULL,
    stream     text NOT NULL,
    bookmark   jsonb NOT NULL,
    job_id     uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, account, stream)
);

-- One row per stream and successful job: how fresh the source data is (source_ts, UTC)
-- and when it landed (loaded_at).
CREATE TABLE sluice.freshness (
    connector text NOT NULL,
    account   text NOT NULL,
    stream    text NOT NULL,
    source_ts timestamptz NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    job_id    uuid NOT NULL,
    PRIMARY KEY (connector, account, stream, job_id)
);
CREATE VIEW sluice.freshness_latest AS
SELECT DISTINCT ON (connector, account, stream) connector, account, stream, source_ts, loaded_at, job_id
  FROM sluice.freshness
 ORDER BY connector, account, stream, source_ts DESC, loaded_at DESC;

-- Records a connector could not read or the destination refused, with the raw record.
CREATE TABLE sluice.rejected_rows (
    id         bigserial PRIMARY KEY,
    job_id     uuid NOT NULL,
    task_id    text,
    table_name text,
    source     text NOT NULL,
    record     jsonb NOT NULL,
    error      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejected_rows_job ON sluice.rejected_rows (job_id);
-- Redelivered parts are skipped through sluice.batches, so rejects are never stored twice
-- and need no uniqueness of their own (two bad rows may well share source and error).
