//! The audit trail: one `janitor_audit` row per applied change, with the evidence acted on.
//!
//! Status changes write their row inside the compare-and-set transaction, so a change and
//! its audit row exist together or not at all; Redis changes write theirs right after the
//! Lua compare-and-delete succeeds.

use janitor_core::{format_timestamp, Timestamp};
use serde::Serialize;
use sqlx::Row as _;

use super::{with_pool, Database};
use crate::StoreError;

/// What was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A stale slot was removed (rule 1).
    SlotReclaimed,
    /// A leaked slot was removed (rules 2 and 4).
    SlotReleased,
    /// A run was moved to `failed`.
    RunFailed,
    /// A skipped run was moved to `cancelled`.
    RunCancelled,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlotReclaimed => "slot_reclaimed",
            Self::SlotReleased => "slot_released",
            Self::RunFailed => "run_failed",
            Self::RunCancelled => "run_cancelled",
        }
    }
}

/// Who acted and on what evidence: attached to every change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    pub job_id: Option<String>,
    pub job_kind: Option<String>,
    /// The worker (or CLI invocation) that applied the change.
    pub worker: String,
    pub slot_score: Option<f64>,
    pub deadline: Option<Timestamp>,
    /// Free text or JSON with anything else worth keeping.
    pub detail: Option<String>,
}

/// One audit row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry<'a> {
    pub at: Timestamp,
    pub action: AuditAction,
    pub execution_id: &'a str,
    pub agent: &'a str,
    pub status_before: Option<&'a str>,
    pub status_after: Option<&'a str>,
    pub evidence: &'a Evidence,
}

/// One audit row as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: String,
    pub action: String,
    pub job_id: Option<String>,
    pub job_kind: Option<String>,
    pub execution_id: String,
    pub agent_name: String,
    pub status_before: Option<String>,
    pub status_after: Option<String>,
    pub slot_score: Option<f64>,
    pub deadline: Option<String>,
    pub worker: String,
    pub detail: Option<String>,
}

/// Which audit rows to read; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub execution_id: Option<String>,
    pub agent: Option<String>,
    pub since: Option<Timestamp>,
    pub limit: u32,
}

pub(crate) const INSERT_SQL: &str = "INSERT INTO janitor_audit \
    (at, action, job_id, job_kind, execution_id, agent_name, status_before, status_after, \
     slot_score, deadline, worker, detail) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// Executes [`INSERT_SQL`] for an [`AuditEntry`] on any executor of either driver.
macro_rules! insert_audit {
    ($executor:expr, $entry:expr) => {{
        let entry: &$crate::sql::audit::AuditEntry<'_> = $entry;
        sqlx::query($crate::sql::audit::INSERT_SQL)
            .bind(janitor_core::format_timestamp(entry.at))
            .bind(entry.action.as_str())
            .bind(entry.evidence.job_id.as_deref())
            .bind(entry.evidence.job_kind.as_deref())
            .bind(entry.execution_id)
            .bind(entry.agent)
            .bind(entry.status_before)
            .bind(entry.status_after)
            .bind(entry.evidence.slot_score)
            .bind(entry.evidence.deadline.map(janitor_core::format_timestamp))
            .bind(entry.evidence.worker.as_str())
            .bind(entry.evidence.detail.as_deref())
            .execute($executor)
            .await
            .map(|_| ())
    }};
}
pub(crate) use insert_audit;

/// Writes one audit row on its own (for Redis-side changes).
pub async fn record(db: &Database, entry: &AuditEntry<'_>) -> Result<(), StoreError> {
    with_pool!(db, pool => insert_audit!(pool, entry))?;
    Ok(())
}

/// Reads audit rows, newest first.
pub async fn query(db: &Database, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
    const SQL: &str = "SELECT id, at, action, job_id, job_kind, execution_id, agent_name, \
        status_before, status_after, slot_score, deadline, worker, detail FROM janitor_audit \
        WHERE ($1 IS NULL OR execution_id = $1) AND ($2 IS NULL OR agent_name = $2) \
        AND ($3 IS NULL OR at >= $3) ORDER BY id DESC LIMIT $4";
    let limit = i64::from(filter.limit.max(1));
    let since = filter.since.map(format_timestamp);
    let records = with_pool!(db, pool => {
        let rows = sqlx::query(SQL)
            .bind(filter.execution_id.as_deref())
            .bind(filter.agent.as_deref())
            .bind(since.as_deref())
            .bind(limit)
            .fetch_all(pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    action: row.try_get("action")?,
                    job_id: row.try_get("job_id")?,
                    job_kind: row.try_get("job_kind")?,
                    execution_id: row.try_get("execution_id")?,
                    agent_name: row.try_get("agent_name")?,
                    status_before: row.try_get("status_before")?,
                    status_after: row.try_get("status_after")?,
                    slot_score: row.try_get("slot_score")?,
                    deadline: row.try_get("deadline")?,
                    worker: row.try_get("worker")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?
    });
    Ok(records)
}
