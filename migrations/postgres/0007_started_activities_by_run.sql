-- Nothing changes on PostgreSQL (SQLite's migration 7 merges its two partial indexes on
-- `agent_activities` into one). Here an update that closes an activity adds no entry to a
-- partial index whose predicate the new row version fails, and the old entries go with
-- vacuum: the two indexes cost the worker's transaction nothing, and paging by run would
-- invite a merge join over every run. The statement below only restates what exists.
CREATE INDEX IF NOT EXISTS janitor_activities_started_by_id ON agent_activities (id)
    WHERE activity_state = 'started';
