-- Schedules (`sluicectl schedules …`): a sync request fired by the planner at every slot of a
-- 5-field cron expression read in an IANA time zone. The request is stored as
-- `sluicectl sync` would publish it (connector, stream, account, destination, params, mode),
-- checked against the connector's parameter specs when the schedule is added.
CREATE TABLE sluice.schedules (
    name        text PRIMARY KEY,
    -- Derives the job id of each slot (uuid v5 of id and slot): a schedule removed and
    -- added again under the same name never reuses the jobs of its predecessor.
    id          uuid NOT NULL UNIQUE,
    cron        text NOT NULL,
    timezone    text NOT NULL DEFAULT 'UTC',
    -- After planner downtime: 'once' runs the latest missed slot, 'skip' waits for the next.
    catch_up    text NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('skip', 'once')),
    connector   text NOT NULL,
    stream      text NOT NULL,
    account     text NOT NULL DEFAULT 'default',
    destination text NOT NULL DEFAULT 'postgres',
    params      jsonb NOT NULL DEFAULT '{}'::jsonb,
    mode        text NOT NULL DEFAULT 'full' CHECK (mode IN ('full', 'incremental')),
    paused      boolean NOT NULL DEFAULT false,
    -- The first slot (UTC) the planner has not handled yet. NULL after `add` and `resume`:
    -- the planner sets it from its own clock to the first slot after its now, so neither
    -- the slots before the schedule existed nor those of a pause are caught up.
    next_slot   timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON sluice.schedules (next_slot) WHERE NOT paused;

-- What became of each slot: 'fired' (job_id is the slot's job), 'skipped' (the stream's
-- previous job was still active: job_id names it) or 'missed' (the planner was down at the
-- slot's time and the catch-up policy did not run it). The primary key makes a slot's
-- outcome recorded once, whatever the number of planners.
CREATE TABLE sluice.schedule_runs (
    schedule    text NOT NULL REFERENCES sluice.schedules (name) ON DELETE CASCADE,
    slot        timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('fired', 'skipped', 'missed')),
    job_id      uuid,
    reason      text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, slot)
);
