-- Once-per-resource child tasks (sluice_contracts::Once, docs/architecture.md "Once per
-- resource, and skip-if-fresh"): a connector may name the resource a child task fetches.
-- The loader records such a child once per job (its id derives from job and key) and not
-- at all while the resource is fresh, standing in the children its last fetch had.

-- The resource key of a once-per-resource task (NULL for every other task).
ALTER TABLE sluice.tasks ADD COLUMN resource_key text;

-- The last fetch of each keyed resource, per connector/account/destination: when its last
-- part was settled (UTC), by which job and task, and the children it had
-- ([{stream, kind, once?}], an empty list for a resource without children — an empty
-- result is remembered like any other). Bookkeeping only: the rows are in the destination.
CREATE TABLE sluice.fetched_resources (
    connector   text NOT NULL,
    account     text NOT NULL,
    destination text NOT NULL,
    key         text NOT NULL,
    fetched_at  timestamptz NOT NULL,
    job_id      uuid NOT NULL,
    task_id     text NOT NULL,
    children    jsonb NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (connector, account, destination, key)
);
CREATE INDEX fetched_resources_job ON sluice.fetched_resources (job_id);
