-- The platform's tables as its own init_database() created them in late 2025: no
-- claude_session_id, no agent_schedules.timeout_seconds, and agent_ownership keyed by an id
-- with no execution_timeout_seconds. For tests (a database shaped like that generation's);
-- portable across SQLite and PostgreSQL.

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
    execution_log TEXT
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
    id INTEGER PRIMARY KEY,
    agent_name TEXT UNIQUE NOT NULL,
    owner_id INTEGER,
    created_at TEXT,
    is_system INTEGER DEFAULT 0
);

CREATE TABLE IF NOT EXISTS agent_schedules (
    id TEXT PRIMARY KEY,
    agent_name TEXT NOT NULL,
    name TEXT,
    cron_expression TEXT,
    message TEXT,
    enabled INTEGER DEFAULT 1
);
