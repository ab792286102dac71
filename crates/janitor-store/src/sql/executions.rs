//! Reads and compare-and-set writes on `schedule_executions` (and the paired activity).
//!
//! Every status write names the status it expects (`WHERE id = … AND status = …`), so a late
//! `success` is never overwritten and nothing terminal is resurrected. A write, the closing
//! of the run's open activity and the audit row happen in one transaction.

use janitor_core::{
    format_timestamp, parse_timestamp, AgentName, ExecutionId, RowObservation, Status, Timestamp,
};
use sqlx::Row as _;

use super::audit::{insert_audit, AuditAction, AuditEntry, Evidence};
use super::{with_pool, Database, Schema};
use crate::StoreError;

/// Most ids bound in one `IN (…)` list.
const MAX_IDS_PER_QUERY: usize = 500;

/// The statuses a row is never moved out of, as a SQL list. Matches the partial index
/// `janitor_executions_open` so open-row reads can use it.
const OPEN_FILTER: &str = "e.status NOT IN ('success', 'failed', 'cancelled', 'completed')";

/// A row janitor could read but whose identity is unusable: reported, never changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRow {
    pub id: String,
    pub agent: String,
    pub status: String,
    pub reason: String,
}

/// One row read from `schedule_executions`.
#[derive(Debug, Clone, PartialEq)]
pub enum RowEntry {
    Row(RowObservation),
    Corrupt(CorruptRow),
}

impl RowEntry {
    pub fn id(&self) -> &str {
        match self {
            Self::Row(r) => r.execution_id.as_str(),
            Self::Corrupt(c) => &c.id,
        }
    }
}

/// One page of open rows, in id order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPage {
    pub rows: Vec<RowEntry>,
    /// The cursor for the next page; `None` after the last one.
    pub next: Option<String>,
}

/// Result of a compare-and-set status write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The row had the expected status and was moved; `activities_closed` paired
    /// activities were closed with it.
    Applied {
        agent: String,
        activities_closed: u64,
    },
    /// The row is already terminal (e.g. a late `success`): nothing written.
    AlreadyTerminal(Status),
    /// The row moved to another non-terminal status since it was read: nothing written.
    Conflict(Status),
    /// No such row.
    NotFound,
}

/// A requested status change.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub execution_id: &'a ExecutionId,
    /// The status the row must still have.
    pub expected: &'a Status,
    pub error: &'a str,
    /// When the change is made (Redis time); written as `completed_at`.
    pub now: Timestamp,
    pub evidence: &'a Evidence,
}

#[derive(Debug)]
struct RawRow {
    id: String,
    agent: String,
    status: String,
    started_at: String,
    session: Option<String>,
    timeout: Option<i64>,
}

/// Decodes the columns of [`ExecutionStore::select_sql`] on either driver.
macro_rules! raw_row {
    ($row:expr) => {
        RawRow {
            id: $row.try_get::<Option<String>, _>("id")?.unwrap_or_default(),
            agent: $row
                .try_get::<Option<String>, _>("agent_name")?
                .unwrap_or_default(),
            status: $row
                .try_get::<Option<String>, _>("status")?
                .unwrap_or_default(),
            started_at: $row
                .try_get::<Option<String>, _>("started_at")?
                .unwrap_or_default(),
            session: $row.try_get("session")?,
            timeout: $row.try_get("timeout")?,
        }
    };
}

impl RawRow {
    fn into_entry(self) -> RowEntry {
        let ids = ExecutionId::parse(self.id.clone())
            .and_then(|id| AgentName::parse(self.agent.clone()).map(|agent| (id, agent)));
        match ids {
            Ok((execution_id, agent)) => RowEntry::Row(RowObservation {
                execution_id,
                agent,
                status: Status::parse(&self.status),
                started_at: parse_timestamp(&self.started_at),
                session: self.session,
                effective_timeout: self.timeout,
            }),
            Err(e) => RowEntry::Corrupt(CorruptRow {
                id: self.id,
                agent: self.agent,
                status: self.status,
                reason: e.to_string(),
            }),
        }
    }
}

/// `schedule_executions` and its neighbours on one database.
#[derive(Debug, Clone)]
pub struct ExecutionStore {
    db: Database,
    schema: Schema,
    open_rows_sql: String,
}

impl ExecutionStore {
    /// Checks the schema (the tables janitor needs exist) and prepares the queries.
    pub async fn open(db: Database) -> Result<Self, StoreError> {
        let schema = db.schema().await?;
        let open_rows_sql = format!(
            "{} WHERE {OPEN_FILTER} AND e.id > $1 ORDER BY e.id LIMIT $2",
            select_sql(&schema)
        );
        Ok(Self {
            db,
            schema,
            open_rows_sql,
        })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// One page of non-terminal rows after `after` (keyset pagination on `id`).
    pub async fn open_rows(&self, after: Option<&str>, limit: u32) -> Result<RowPage, StoreError> {
        let limit = limit.max(1);
        let raw = with_pool!(&self.db, pool => {
            let rows = sqlx::query(&self.open_rows_sql)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|row| Ok(raw_row!(row))).collect::<Result<Vec<RawRow>, sqlx::Error>>()?
        });
        let next = (raw.len() as u32 == limit)
            .then(|| raw.last().map(|r| r.id.clone()))
            .flatten();
        Ok(RowPage {
            rows: raw.into_iter().map(RawRow::into_entry).collect(),
            next,
        })
    }

    /// The rows with these ids, whatever their status. Missing ids are simply absent.
    pub async fn rows_by_ids(&self, ids: &[ExecutionId]) -> Result<Vec<RowEntry>, StoreError> {
        let mut entries = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_QUERY) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "{} WHERE e.id IN ({})",
                select_sql(&self.schema),
                placeholders.join(", ")
            );
            let raw = with_pool!(&self.db, pool => {
                let mut query = sqlx::query(&sql);
                for id in chunk {
                    query = query.bind(id.as_str());
                }
                let rows = query.fetch_all(pool).await?;
                rows.iter().map(|row| Ok(raw_row!(row))).collect::<Result<Vec<RawRow>, sqlx::Error>>()?
            });
            entries.extend(raw.into_iter().map(RawRow::into_entry));
        }
        Ok(entries)
    }

    /// Moves a non-terminal run to `failed` if it still has `expected` status, closing its
    /// open activity as `failed` and writing the audit row, in one transaction.
    pub async fn fail_run(&self, change: &Transition<'_>) -> Result<CasOutcome, StoreError> {
        self.transition(change, Status::Failed, "failed", AuditAction::RunFailed)
            .await
    }

    /// Moves a `skipped` run to `cancelled` (closing any open activity as `cancelled`).
    pub async fn cancel_skipped(&self, change: &Transition<'_>) -> Result<CasOutcome, StoreError> {
        if *change.expected != Status::Skipped {
            return Ok(CasOutcome::Conflict(change.expected.clone()));
        }
        self.transition(
            change,
            Status::Cancelled,
            "cancelled",
            AuditAction::RunCancelled,
        )
        .await
    }

    async fn transition(
        &self,
        change: &Transition<'_>,
        to: Status,
        activity_state: &str,
        action: AuditAction,
    ) -> Result<CasOutcome, StoreError> {
        if change.expected.is_terminal() {
            return Ok(CasOutcome::AlreadyTerminal(change.expected.clone()));
        }
        if !change.expected.is_known() {
            // Unknown statuses are preserved and left alone.
            return Ok(CasOutcome::Conflict(change.expected.clone()));
        }
        let id = change.execution_id.as_str();
        let completed_at = format_timestamp(change.now);
        let close_activities = self.schema.agent_activities;
        let outcome = with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            // Write first: the row lock (or SQLite's write lock) is taken by the first
            // statement, so nothing can slip in between the check and the change.
            let updated = sqlx::query(
                "UPDATE schedule_executions SET status = $1, error = $2, completed_at = $3 \
                 WHERE id = $4 AND status = $5 \
                 RETURNING CAST(agent_name AS TEXT) AS agent_name, CAST(started_at AS TEXT) AS started_at",
            )
            .bind(to.as_str())
            .bind(change.error)
            .bind(&completed_at)
            .bind(id)
            .bind(change.expected.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            match updated {
                None => {
                    let current: Option<Option<String>> = sqlx::query_scalar(
                        "SELECT CAST(status AS TEXT) FROM schedule_executions WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    tx.rollback().await?;
                    match current {
                        None => CasOutcome::NotFound,
                        Some(status) => {
                            let status = Status::parse(&status.unwrap_or_default());
                            if status.is_terminal() {
                                CasOutcome::AlreadyTerminal(status)
                            } else {
                                CasOutcome::Conflict(status)
                            }
                        }
                    }
                }
                Some(row) => {
                    let agent: String = row.try_get::<Option<String>, _>("agent_name")?.unwrap_or_default();
                    let started: Option<String> = row.try_get("started_at")?;
                    let duration = started.as_deref().and_then(|s| duration_ms(s, change.now));
                    sqlx::query("UPDATE schedule_executions SET duration_ms = $1 WHERE id = $2")
                        .bind(duration)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    let mut closed = 0;
                    if close_activities {
                        let activities = sqlx::query(
                            "UPDATE agent_activities SET activity_state = $1, completed_at = $2, \
                             error = COALESCE(error, $3) \
                             WHERE related_execution_id = $4 AND activity_state = 'started' \
                             RETURNING CAST(id AS TEXT) AS id, CAST(started_at AS TEXT) AS started_at",
                        )
                        .bind(activity_state)
                        .bind(&completed_at)
                        .bind(change.error)
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                        for activity in &activities {
                            closed += 1;
                            let started: Option<String> = activity.try_get("started_at")?;
                            let Some(ms) = started.as_deref().and_then(|s| duration_ms(s, change.now)) else {
                                continue;
                            };
                            let activity_id: Option<String> = activity.try_get("id")?;
                            sqlx::query("UPDATE agent_activities SET duration_ms = $1 WHERE id = $2")
                                .bind(ms)
                                .bind(activity_id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    let entry = AuditEntry {
                        at: change.now,
                        action,
                        execution_id: id,
                        agent: &agent,
                        status_before: Some(change.expected.as_str()),
                        status_after: Some(to.as_str()),
                        evidence: change.evidence,
                    };
                    insert_audit!(&mut *tx, &entry)?;
                    tx.commit().await?;
                    CasOutcome::Applied { agent, activities_closed: closed }
                }
            }
        });
        Ok(outcome)
    }
}

/// The columns every row read returns, with the run's effective timeout joined in from its
/// schedule and agent when those tables exist.
fn select_sql(schema: &Schema) -> String {
    let mut joins = String::new();
    let mut timeouts = Vec::new();
    if schema.agent_schedules {
        joins.push_str(" LEFT JOIN agent_schedules s ON s.id = e.schedule_id");
        timeouts.push("s.timeout_seconds");
    }
    if schema.agent_ownership {
        joins.push_str(" LEFT JOIN agent_ownership o ON o.agent_name = e.agent_name");
        timeouts.push("o.execution_timeout_seconds");
    }
    let timeout = match timeouts.as_slice() {
        [] => "CAST(NULL AS BIGINT)".to_owned(),
        [one] => format!("CAST({one} AS BIGINT)"),
        many => format!("CAST(COALESCE({}) AS BIGINT)", many.join(", ")),
    };
    format!(
        "SELECT CAST(e.id AS TEXT) AS id, CAST(e.agent_name AS TEXT) AS agent_name, \
         CAST(e.status AS TEXT) AS status, CAST(e.started_at AS TEXT) AS started_at, \
         CAST(e.claude_session_id AS TEXT) AS session, {timeout} AS timeout \
         FROM schedule_executions e{joins}"
    )
}

/// Milliseconds from `started` to `completed`; `None` when `started` is unreadable, in the
/// future, or the value would not fit the platform's 32-bit INTEGER column (a made-up
/// duration overflowing INTEGER was a real bug there: NULL is safer).
pub fn duration_ms(started: &str, completed: Timestamp) -> Option<i64> {
    let started = parse_timestamp(started).ok()?;
    let ms = (completed - started).num_milliseconds();
    (0..=i64::from(i32::MAX)).contains(&ms).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_null_when_unknowable() {
        let done = parse_timestamp("2026-05-01T16:00:00Z").unwrap();
        assert_eq!(duration_ms("2026-05-01T15:30:00", done), Some(1_800_000));
        assert_eq!(duration_ms("2026-05-01 15:30:00.5", done), Some(1_799_500));
        assert_eq!(duration_ms("garbage", done), None);
        assert_eq!(duration_ms("2026-05-02T00:00:00Z", done), None);
        assert_eq!(duration_ms("2000-01-01T00:00:00Z", done), None);
    }
}
