-- Rule 8 pages the activities left `started` by id: a partial index as small as that set.
CREATE INDEX IF NOT EXISTS janitor_activities_started_by_id ON agent_activities (id)
    WHERE activity_state = 'started';
