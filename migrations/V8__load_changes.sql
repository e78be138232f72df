-- What each loaded part changed in its table (`sluicectl jobs show`: inserted, updated and
-- unchanged rows per table). One upsert writes a group of parts of a table, so its counts
-- are recorded on the group's last part and zeros on the others: summing a job's parts
-- per table gives the table's changes. NULL: not counted (parts loaded before this
-- migration, destinations whose write does not report it, such as Redshift's MERGE).
-- unchanged = rows - inserted - updated (identical to the stored row, older than it, or
-- repeated within the load).
ALTER TABLE sluice.batches
    ADD COLUMN inserted integer,
    ADD COLUMN updated  integer,
    ADD COLUMN deleted  integer;
