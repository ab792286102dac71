-- janitor's own table: one row per applied change, with the evidence it acted on.
CREATE TABLE IF NOT EXISTS janitor_audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    job_id TEXT,
    job_kind TEXT,
    execution_id TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    status_before TEXT,
    status_after TEXT,
    slot_score DOUBLE PRECISION,
    deadline TEXT,
    worker TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS janitor_audit_execution ON janitor_audit (execution_id);
CREATE INDEX IF NOT EXISTS janitor_audit_agent_at ON janitor_audit (agent_name, at);
CREATE INDEX IF NOT EXISTS janitor_audit_at ON janitor_audit (at);

-- The indexes janitor's reads need on the platform's tables. Partial, so they stay as small
-- as the set of open runs and cost the platform's writes almost nothing.
CREATE INDEX IF NOT EXISTS janitor_executions_open ON schedule_executions (id)
    WHERE status NOT IN ('success', 'failed', 'cancelled', 'completed');
CREATE INDEX IF NOT EXISTS janitor_activities_open ON agent_activities (related_execution_id)
    WHERE activity_state = 'started';
