-- One index where there were two, on the audit table every reaped pair writes two rows to:
-- every change key names one run's change (an outbox entry carries its run; a status change
-- names it), so (execution_id, change_key) is unique exactly when change_key is, and lookups
-- by run use its prefix. Both of a pair's rows land on one leaf page instead of one page of
-- each index (in the catch-up on SQLite about one page written per pair fewer).
CREATE UNIQUE INDEX IF NOT EXISTS janitor_audit_run_change ON janitor_audit (execution_id, change_key);
DROP INDEX IF EXISTS janitor_audit_change;
DROP INDEX IF EXISTS janitor_audit_execution;
