//! The audit trail: one `janitor_audit` row per applied change, with the evidence acted on.
//!
//! Status changes write their row inside the compare-and-set transaction, so a change and
//! its audit row exist together or not at all. A slot removal is recorded by the Lua script
//! that makes it, in an outbox stream in Redis (`crate::slots::changes`); its row is written
//! from the entry, with the batch's row changes or by any replica's drain, keyed by the entry
//! so it is written once whatever happens between.
//!
//! Every row carries a `change_key`, unique in the table with its run (a key names one run's
//! change, migration 6), and inserts are `ON CONFLICT DO NOTHING`: one row per change is the
//! database's promise, not only janitor's.

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
    /// A `started` activity nothing could still finish was closed (rule 8).
    ActivityClosed,
    /// A pull-mode run whose lease expired was re-queued (`--lease-policy requeue`).
    RunRequeued,
}

impl AuditAction {
    /// The action named `name` (as [`Self::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub const ALL: [AuditAction; 6] = [
        Self::SlotReclaimed,
        Self::SlotReleased,
        Self::RunFailed,
        Self::RunCancelled,
        Self::ActivityClosed,
        Self::RunRequeued,
    ];

    /// A short stable name, for the audit table, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlotReclaimed => "slot_reclaimed",
            Self::SlotReleased => "slot_released",
            Self::RunFailed => "run_failed",
            Self::RunCancelled => "run_cancelled",
            Self::ActivityClosed => "activity_closed",
            Self::RunRequeued => "run_requeued",
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
pub struct AuditRow {
    pub action: AuditAction,
    pub execution_id: String,
    pub agent: String,
    pub status_before: Option<String>,
    pub status_after: Option<String>,
    pub evidence: Evidence,
    /// What makes this change unique (the table's `change_key`).
    pub change_key: Option<String>,
    /// When the change was made, when it is known apart from the write (an outbox entry's
    /// Redis time); else the write's time.
    pub at: Option<janitor_core::Timestamp>,
}

/// Inserts many [`AuditRow`]s stamped `$now` in one statement, on any executor.
macro_rules! insert_audit_rows {
    ($executor:expr, $backend:expr, $rows:expr, $now:expr) => {{
        let rows: &[$crate::sql::audit::AuditRow] = $rows;
        let at = janitor_core::format_timestamp($now);
        let mut sql = String::from(
            "INSERT INTO janitor_audit (at, action, job_id, job_kind, execution_id, agent_name, \
             status_before, status_after, slot_score, deadline, worker, detail, change_key) VALUES ",
        );
        sql.reserve(rows.len() * 13 * 7);
        for r in 0..rows.len() {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 1..=13 {
                if c > 1 {
                    sql.push_str(", ");
                }
                let _ = std::fmt::Write::write_fmt(&mut sql, format_args!("${}", r * 13 + c));
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (execution_id, change_key) DO NOTHING");
        let sql = $crate::sql::marks($backend, &sql);
        let mut query = sqlx::query(&sql);
        for row in rows {
            query = query
                .bind(row.at.map_or_else(|| at.clone(), janitor_core::format_timestamp))
                .bind(row.action.as_str())
                .bind(row.evidence.job_id.clone())
                .bind(row.evidence.job_kind.clone())
                .bind(row.execution_id.clone())
                .bind(row.agent.clone())
                .bind(row.status_before.clone())
                .bind(row.status_after.clone())
                .bind(row.evidence.slot_score)
                .bind(row.evidence.deadline.map(janitor_core::format_timestamp))
                .bind(row.evidence.worker.clone())
                .bind(row.evidence.detail.clone())
                .bind(row.change_key.clone());
        }
        if rows.is_empty() {
            Ok(())
        } else {
            query.execute($executor).await.map(|_| ())
        }
    }};
}
pub(crate) use insert_audit_rows;

/// One audit row as read back.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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

/// Writes audit rows on their own (outside a status change's transaction).
pub async fn record(db: &Database, rows: &[AuditRow], now: Timestamp) -> Result<(), StoreError> {
    for chunk in rows.chunks(400) {
        with_pool!(db, pool => insert_audit_rows!(pool, db.backend(), chunk, now))?;
    }
    Ok(())
}

/// Reads audit rows, newest first.
pub async fn query(db: &Database, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
    // Only the filters given appear in the statement: `($1 IS NULL OR col = $1)` would
    // keep a generic plan (janitor's PostgreSQL sessions use them) off the indexes.
    let since = filter.since.map(format_timestamp);
    let given = [
        ("execution_id = ", filter.execution_id.as_deref()),
        ("agent_name = ", filter.agent.as_deref()),
        ("at >= ", since.as_deref()),
    ];
    let mut sql = String::from(
        "SELECT id, at, action, job_id, job_kind, execution_id, agent_name, status_before, \
         status_after, slot_score, deadline, worker, detail FROM janitor_audit",
    );
    let mut values = Vec::new();
    for (condition, value) in given {
        if let Some(value) = value {
            values.push(value);
            let joiner = if values.len() == 1 {
                " WHERE "
            } else {
                " AND "
            };
            sql.push_str(&format!("{joiner}{condition}${}", values.len()));
        }
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", values.len() + 1));
    let limit = i64::from(filter.limit.max(1));
    let records = with_pool!(db, pool => {
        let mut query = sqlx::query(&sql);
        for value in &values {
            query = query.bind(*value);
        }
        let rows = query.bind(limit).fetch_all(pool).await?;
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
