-- The platform's indexes on today's tables, created with them: only when
-- `migrate --create-platform-tables` created `schedule_executions` itself (on an older
-- generation's table the columns they index may not exist, and janitor never changes a
-- platform table it did not create).

-- One running turn per conversation: the platform's pull claim relies on it.
CREATE UNIQUE INDEX IF NOT EXISTS idx_executions_one_running_turn
    ON schedule_executions (agent_name, conversation_key)
    WHERE status = 'running' AND conversation_key IS NOT NULL;
