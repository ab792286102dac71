-- The platform's own tables as of its public repository in autumn 2026, created only when
-- missing (`janitor migrate --create-platform-tables`: a fresh install, the demo, tests).
-- On an existing platform database every statement here is a no-op: janitor never alters
-- or drops a table it does not own. Columns follow the platform's schema (the ones janitor
-- and the platform's cleanup read, and the pull-mode lease columns); timestamps are
-- ISO-8601 TEXT, as the platform writes them. Portable across SQLite and PostgreSQL.

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
    subscription_id TEXT,
    attempt_number INTEGER,
    retry_of_execution_id TEXT,
    retry_scheduled_at TEXT,
    claude_session_id TEXT,
    queued_at TEXT,
    backlog_metadata TEXT,
    retry_count INTEGER DEFAULT 0,
    claim_token TEXT,
    lease_expires_at TEXT,
    claimed_by_worker TEXT,
    redelivery_count INTEGER DEFAULT 0,
    conversation_key TEXT
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
    owner_id INTEGER,
    created_at TEXT,
    is_system INTEGER DEFAULT 0,
    max_parallel_tasks INTEGER DEFAULT 3,
    execution_timeout_seconds INTEGER DEFAULT 3600,
    max_backlog_depth INTEGER
);

CREATE TABLE IF NOT EXISTS agent_schedules (
    id TEXT PRIMARY KEY,
    agent_name TEXT NOT NULL,
    name TEXT,
    cron_expression TEXT,
    message TEXT,
    timeout_seconds INTEGER,
    enabled INTEGER DEFAULT 1
);
