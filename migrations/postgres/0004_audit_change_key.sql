-- One audit row per change, as the database's promise: every change janitor makes carries a
-- key (a slot removal: its outbox entry; a status change: the run, the action and the
-- started_at it was judged on), unique here, and audit writes are ON CONFLICT DO NOTHING,
-- so writing an entry twice (a retry, two drainers) leaves one row. Rows from earlier
-- versions have no key.
ALTER TABLE janitor_audit ADD COLUMN change_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS janitor_audit_change ON janitor_audit (change_key);
