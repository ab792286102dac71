//! Reads and compare-and-set closes of `agent_activities` rows left `started` (rule 8).

use janitor_core::{
    format_timestamp, parse_timestamp, ActivityObservation, ActivityRun, AgentName, ExecutionId,
    Status, Timestamp,
};
use sqlx::Row as _;

use super::audit::{insert_audit_rows, AuditAction, AuditRow, Evidence};
use super::executions::{duration_ms, CorruptRow, ExecutionStore};
use super::{marks, with_pool, Backend};
use crate::StoreError;

/// One `started` activity, or why it cannot be judged.
#[derive(Debug, Clone, PartialEq)]
pub enum ActivityEntry {
    Activity(ActivityObservation),
    Corrupt(CorruptRow),
}

/// Where a page of rule 8's read of every `started` activity
/// ([`ExecutionStore::open_activities`]) ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivityCursor {
    /// After this id: every activity on PostgreSQL; on SQLite, those without a run (they
    /// come first).
    Id(String),
    /// SQLite: the activities with a run, from the first.
    LinkedStart,
    /// SQLite: after this run and activity id, among the activities with a run.
    Linked(String, String),
}

/// A requested close.
#[derive(Debug, Clone)]
pub struct ActivityClose<'a> {
    pub activity: &'a ActivityObservation,
    /// The `activity_state` written.
    pub state: &'a str,
    pub error: Option<&'a str>,
    pub now: Timestamp,
    pub evidence: &'a Evidence,
}

const SELECT: &str = "SELECT CAST(a.id AS TEXT) AS id, CAST(a.agent_name AS TEXT) AS agent_name, \
     CAST(a.started_at AS TEXT) AS started_at, CAST(a.related_execution_id AS TEXT) AS run_id, \
     CAST(e.status AS TEXT) AS run_status, CAST(CASE WHEN e.id IS NULL THEN 0 ELSE 1 END AS BIGINT) AS run_found \
     FROM agent_activities a LEFT JOIN schedule_executions e ON e.id = a.related_execution_id \
     WHERE a.activity_state = 'started'";

/// Only the activities rule 8 can close: those of an open run are the run's, and the
/// database skips them (nearly every open activity in a busy fleet) without sending them.
const CLOSABLE: &str =
    " AND (e.id IS NULL OR e.status IN ('success', 'failed', 'cancelled', 'completed'))";

/// The statuses an activity's run is open in: the close requires its run not be one.
const RUN_OPEN: &str = "NOT EXISTS (SELECT 1 FROM schedule_executions e \
     WHERE e.id = agent_activities.related_execution_id \
     AND e.status NOT IN ('success', 'failed', 'cancelled', 'completed'))";

fn entry(
    id: Option<String>,
    agent: Option<String>,
    started: Option<String>,
    run_id: Option<String>,
    run_status: Option<String>,
    run_found: i64,
) -> ActivityEntry {
    let (id, agent, started) = (
        id.unwrap_or_default(),
        agent.unwrap_or_default(),
        started.unwrap_or_default(),
    );
    let run = match run_id.filter(|r| !r.trim().is_empty()) {
        None => ActivityRun::Unlinked,
        Some(run) if run_found == 0 => ActivityRun::Missing(run),
        Some(run) => ActivityRun::Found(run, Status::parse(&run_status.unwrap_or_default())),
    };
    match ExecutionId::parse(id.clone())
        .and_then(|i| AgentName::parse(agent.clone()).map(|a| (i, a)))
    {
        Ok((id, agent)) => ActivityEntry::Activity(ActivityObservation {
            id,
            agent,
            started_at: parse_timestamp(&started),
            started_at_raw: started,
            run,
        }),
        Err(e) => ActivityEntry::Corrupt(CorruptRow {
            id,
            agent,
            status: "started".into(),
            reason: format!("activity: {e}"),
        }),
    }
}

macro_rules! read_entries {
    ($rows:expr) => {{
        let mut out = Vec::new();
        for row in $rows {
            out.push(entry(
                row.try_get("id")?,
                row.try_get("agent_name")?,
                row.try_get("started_at")?,
                row.try_get("run_id")?,
                row.try_get("run_status")?,
                row.try_get::<Option<i64>, _>("run_found")?.unwrap_or(0),
            ));
        }
        out
    }};
}

impl ExecutionStore {
    /// One page of the `started` activities rule 8 can close (no run, a run that is gone,
    /// or a finished run) after `after`, with their runs, and where the next page starts
    /// (`None`: this was the last). On PostgreSQL by id; on SQLite in the order of its one
    /// partial index of `started` activities (migration 7): those without a run first, by
    /// id, then the others by run and id. Empty when the database has no activities table.
    pub async fn open_activities(
        &self,
        after: Option<&ActivityCursor>,
        limit: u32,
    ) -> Result<(Vec<ActivityEntry>, Option<ActivityCursor>), StoreError> {
        if !self.schema().agent_activities {
            return Ok((Vec::new(), None));
        }
        let sqlite = self.database().backend() == Backend::Sqlite;
        let start = ActivityCursor::Id(String::new());
        let after = after.unwrap_or(&start);
        let page = match after {
            ActivityCursor::Id(_) if sqlite => {
                " AND a.related_execution_id IS NULL AND a.id > $1 ORDER BY a.id LIMIT $2"
            }
            ActivityCursor::Id(_) => " AND a.id > $1 ORDER BY a.id LIMIT $2",
            ActivityCursor::LinkedStart => {
                " AND a.related_execution_id IS NOT NULL \
                 ORDER BY a.related_execution_id, a.id LIMIT $1"
            }
            ActivityCursor::Linked(..) => {
                " AND (a.related_execution_id, a.id) > ($1, $2) \
                 ORDER BY a.related_execution_id, a.id LIMIT $3"
            }
        };
        let sql = marks(
            self.database().backend(),
            &format!("{SELECT}{CLOSABLE}{page}"),
        )
        .into_owned();
        let limit = limit.max(1);
        let (entries, last) = with_pool!(self.database(), pool => {
            let mut query = sqlx::query(&sql);
            query = match after {
                ActivityCursor::Id(id) => query.bind(id.as_str()),
                ActivityCursor::LinkedStart => query,
                ActivityCursor::Linked(run, id) => query.bind(run.as_str()).bind(id.as_str()),
            };
            let rows = query.bind(i64::from(limit)).fetch_all(pool).await?;
            let last: Option<(Option<String>, Option<String>)> = match rows.last() {
                Some(row) => Some((row.try_get("run_id")?, row.try_get("id")?)),
                None => None,
            };
            (read_entries!(rows.iter()), last)
        });
        let full = entries.len() as u32 == limit;
        let next = match (after, full, last) {
            (ActivityCursor::Id(_), true, Some((_, Some(id)))) => Some(ActivityCursor::Id(id)),
            // SQLite: the activities without a run are done; those with one follow.
            (ActivityCursor::Id(_), ..) if sqlite => Some(ActivityCursor::LinkedStart),
            (ActivityCursor::Id(_), ..) => None,
            (_, true, Some((Some(run), Some(id)))) => Some(ActivityCursor::Linked(run, id)),
            _ => None,
        };
        Ok((entries, next))
    }

    /// The `started` activities, at most `limit`, of the runs janitor failed or cancelled
    /// since `since` (by their audit rows). The platform writes a run's activity after its
    /// row, not in one transaction, so an activity written after janitor finalized the run
    /// is one the finalizing job could not close. One indexed query — audit rows by time,
    /// activities by run — cheap enough for every sweep, while the read of every `started`
    /// activity ([`Self::open_activities`]) keeps its slow cadence.
    pub async fn activities_of_finalized(
        &self,
        since: Timestamp,
        limit: u32,
    ) -> Result<Vec<ActivityEntry>, StoreError> {
        if !self.schema().agent_activities {
            return Ok(Vec::new());
        }
        let sql = marks(
            self.database().backend(),
            &format!(
                "{SELECT}{CLOSABLE} AND a.related_execution_id IN \
                 (SELECT j.execution_id FROM janitor_audit j \
                  WHERE j.at >= $1 AND j.action IN ('run_failed', 'run_cancelled')) \
                 ORDER BY a.id LIMIT $2"
            ),
        )
        .into_owned();
        let since = format_timestamp(since);
        let entries = with_pool!(self.database(), pool => {
            let rows = sqlx::query(&sql)
                .bind(&since)
                .bind(i64::from(limit.max(1)))
                .fetch_all(pool)
                .await?;
            read_entries!(rows.iter())
        });
        Ok(entries)
    }

    /// The `started` activities with these ids (closed or missing ones are absent).
    pub async fn activities_by_ids(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<ActivityEntry>, StoreError> {
        if ids.is_empty() || !self.schema().agent_activities {
            return Ok(Vec::new());
        }
        let marks_list: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = marks(
            self.database().backend(),
            &format!("{SELECT} AND a.id IN ({})", marks_list.join(", ")),
        )
        .into_owned();
        let entries = with_pool!(self.database(), pool => {
            let mut query = sqlx::query(&sql);
            for id in ids {
                query = query.bind(id.as_str());
            }
            let rows = query.fetch_all(pool).await?;
            read_entries!(rows.iter())
        });
        Ok(entries)
    }

    /// Closes each activity if it is still `started`, still has the `started_at` it was
    /// judged on, and its run is not open (a run that reopened or appeared since keeps its
    /// activity); one audit row per close, all in one transaction. Returns, per change,
    /// whether it was applied.
    pub async fn close_activities(
        &self,
        changes: &[ActivityClose<'_>],
        now: Timestamp,
    ) -> Result<Vec<bool>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.database().backend();
        let sql = marks(
            backend,
            &format!(
                "UPDATE agent_activities SET activity_state = $1, completed_at = $2, \
                 error = COALESCE(agent_activities.error, $3), \
                 duration_ms = COALESCE(CAST($4 AS BIGINT), agent_activities.duration_ms) \
                 WHERE id = $5 AND activity_state = 'started' \
                 AND COALESCE(CAST(started_at AS TEXT), '') = $6 AND {RUN_OPEN} \
                 RETURNING CAST(id AS TEXT) AS id"
            ),
        )
        .into_owned();
        let done_at = format_timestamp(now);
        let applied = with_pool!(self.database(), pool => {
            let mut tx = pool.begin().await?;
            let mut applied = Vec::with_capacity(changes.len());
            let mut audits = Vec::new();
            for change in changes {
                let a = change.activity;
                let ms = duration_ms(&a.started_at_raw, change.now);
                let moved = sqlx::query(&sql)
                    .bind(change.state)
                    .bind(&done_at)
                    .bind(change.error)
                    .bind(ms)
                    .bind(a.id.as_str())
                    .bind(&a.started_at_raw)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                if moved {
                    let run = match &a.run {
                        ActivityRun::Found(run, _) | ActivityRun::Missing(run) => Some(run.clone()),
                        ActivityRun::Unlinked => None,
                    };
                    let mut evidence = change.evidence.clone();
                    evidence.detail = Some(
                        serde_json::json!({ "activity_id": a.id.as_str(), "run": a.run })
                            .to_string(),
                    );
                    audits.push(AuditRow {
                        action: AuditAction::ActivityClosed,
                        // The run the activity belonged to, when it names one.
                        execution_id: run.unwrap_or_else(|| a.id.to_string()),
                        agent: a.agent.to_string(),
                        status_before: Some("started".into()),
                        status_after: Some(change.state.to_owned()),
                        evidence,
                        change_key: Some(format!("activity_closed:{}:{}", a.id, a.started_at_raw)),
                        at: None,
                    });
                }
                applied.push(moved);
            }
            for chunk in audits.chunks(400) {
                insert_audit_rows!(&mut *tx, backend, chunk, now)?;
            }
            tx.commit().await?;
            applied
        });
        Ok(applied)
    }
}
