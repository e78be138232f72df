-- Klaviyo members that left a list or segment (docs/klaviyo.md, "Members that left").
-- A full members job stamps every membership it reads with its version (the planning time)
-- in seen_at, the tables' version column, and the task that reads the group's last page
-- removes the group's memberships with an older seen_at. Rows stored before this
-- migration have never been seen by a versioned job: -infinity, so the next full job of
-- their group keeps those it sees again and removes the others.
ALTER TABLE klaviyo.list_members
    ADD COLUMN seen_at timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE klaviyo.segment_members
    ADD COLUMN seen_at timestamptz NOT NULL DEFAULT '-infinity';
COMMENT ON COLUMN klaviyo.list_members.seen_at IS
    'Start of the last members job that saw this membership; older ones are removed at the end of each full job of the list.';
COMMENT ON COLUMN klaviyo.segment_members.seen_at IS
    'Start of the last members job that saw this membership; older ones are removed at the end of each full job of the segment.';
