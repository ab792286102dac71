-- One partial index where there were two on the platform's `agent_activities`: every
-- activity a worker closes deleted an entry from each, each on its own page, written at
-- commit and again at the checkpoint. Now the `started` activities by run and id: a run's
-- open activities are found by its prefix (a worker's close, the late activities of
-- finalized runs), and rule 8 pages every `started` activity by it — those without a run
-- (NULL) by id first, then the others by (run, id). A reaped pair writes 4.4 pages instead
-- of 5.2 (`scripts/sqlite-wal-frames.py`). PostgreSQL keeps its two (its migration 7).
CREATE INDEX IF NOT EXISTS janitor_activities_started ON agent_activities (related_execution_id, id)
    WHERE activity_state = 'started';
DROP INDEX IF EXISTS janitor_activities_open;
DROP INDEX IF EXISTS janitor_activities_started_by_id;
