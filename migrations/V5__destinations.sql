-- Destinations (docs/architecture.md, "Destinations"): every job names the destination its
-- records are written to. `postgres` is the ledger's own database, the destination every
-- job had before this migration.
ALTER TABLE sluice.jobs ADD COLUMN destination text NOT NULL DEFAULT 'postgres';

-- One active job per connector/account/stream *and destination*: syncing a stream into
-- Postgres and into Redshift at once is two independent jobs.
ALTER TABLE sluice.locks ADD COLUMN destination text NOT NULL DEFAULT 'postgres';
ALTER TABLE sluice.locks DROP CONSTRAINT locks_pkey;
ALTER TABLE sluice.locks ADD PRIMARY KEY (connector, account, stream, destination);

-- Bookmarks are per destination too: an incremental job into Redshift continues from what
-- Redshift has, not from what Postgres has.
ALTER TABLE sluice.stream_state ADD COLUMN destination text NOT NULL DEFAULT 'postgres';
ALTER TABLE sluice.stream_state DROP CONSTRAINT stream_state_pkey;
ALTER TABLE sluice.stream_state ADD PRIMARY KEY (connector, account, stream, destination);

DROP INDEX sluice.jobs_active;
CREATE INDEX jobs_active ON sluice.jobs (connector, account, stream, destination)
 WHERE state IN ('queued', 'running');
