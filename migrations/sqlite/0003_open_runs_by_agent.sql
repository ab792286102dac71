-- The sweep pages open runs by (agent, id), so one page holds a few agents' runs and their
-- slots are read with one ZRANGE per agent instead of one lookup per run. The index replaces
-- janitor's earlier open-runs-by-id index (janitor's own; no platform index is touched).
CREATE INDEX IF NOT EXISTS janitor_executions_open_by_agent ON schedule_executions (agent_name, id)
    WHERE status NOT IN ('success', 'failed', 'cancelled', 'completed');
DROP INDEX IF EXISTS janitor_executions_open;
