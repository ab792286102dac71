-- The platform's tables as of spring 2026 (the generation janitor was first built on):
-- sessions and per-run timeouts, no pull-mode leases. For tests; portable across SQLite
-- and PostgreSQL.

CREATE TABLE IF NOT EXISTS schedule_executions (
    id TEXT PRIMARY KEY,
    schedule_id TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    duration_ms INTEGER,
    message TEXT NOT NULL,
    response TEXT,
    error TEXT,
    triggered_by TEXT NOT NULL,
    context_used INTEGER,
    context_max INTEGER,
    cost DOUBLE PRECISION,
    tool_calls TEXT,
    execution_log TEXT,
    model_used TEXT,
    claude_session_id TEXT
);

CREATE TABLE IF NOT EXISTS agent_activities (
    id TEXT PRIMARY KEY,
    agent_name TEXT NOT NULL,
    activity_type TEXT NOT NULL,
    activity_state TEXT NOT NULL,
    parent_activity_id TEXT,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    duration_ms INTEGER,
    user_id INTEGER,
    triggered_by TEXT,
    related_chat_message_id TEXT,
    related_execution_id TEXT,
    details TEXT,
    error TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS agent_ownership (
    agent_name TEXT PRIMARY KEY,
    max_parallel_tasks INTEGER DEFAULT 3,
    execution_timeout_seconds INTEGER DEFAULT 3600
);

CREATE TABLE IF NOT EXISTS agent_schedules (
    id TEXT PRIMARY KEY,
    agent_name TEXT NOT NULL,
    timeout_seconds INTEGER,
    enabled INTEGER DEFAULT 1
);
