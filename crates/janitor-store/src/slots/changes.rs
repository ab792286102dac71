//! janitor's own removals: many compare-and-deletes in one atomic call, each recorded in the
//! audit outbox by the same script that makes it.
//!
//! The outbox is a Redis STREAM ([`crate::SlotKeys::outbox`]). An entry names the change
//! (action, agent, run, score, deadline, job, worker, Redis time); its audit row is written
//! from it — with the batch's row changes, or later by [`drain_outbox`] on any replica — keyed
//! by the entry id under the table's unique `change_key`, and only then is the entry
//! deleted. So every slot removal gets exactly one audit row, whatever fails in between.

use std::sync::LazyLock;
use std::time::Duration;

use janitor_core::{from_unix_seconds, to_unix_seconds, AgentName, ExecutionId, Timestamp};
use redis::{FromRedisValue, Script, Value};

use super::{Reclaim, SlotStore};
use crate::sql::audit::{record, AuditAction, AuditRow, Evidence};
use crate::{Database, StoreError};

static RECLAIM_MANY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/reclaim_many.lua")));

/// Entries read (and acknowledged) per drain round.
pub const OUTBOX_BATCH: usize = 500;

/// A slot removal janitor wants, with what its audit record says.
#[derive(Debug, Clone)]
pub struct SlotChange<'a> {
    pub agent: &'a AgentName,
    pub execution: &'a ExecutionId,
    /// The score observed: the removal happens only while it is still the slot's.
    pub score: f64,
    /// For a reclaim, the deadline Redis' clock must be past.
    pub deadline: Option<Timestamp>,
    pub action: AuditAction,
    pub status_before: Option<&'a str>,
    pub evidence: &'a Evidence,
}

impl SlotStore {
    /// Compare-and-deletes many slots in one atomic call, recording each removal in the
    /// outbox. Returns, per change, the result and — when removed — its audit row (keyed by
    /// its outbox entry): write it with [`crate::ExecutionStore::transitions`] or
    /// [`crate::sql::audit::record`], then [`SlotStore::ack_outbox`].
    pub async fn remove_recorded(
        &self,
        worker: &str,
        changes: &[SlotChange<'_>],
    ) -> Result<Vec<(Reclaim, Option<AuditRow>)>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = RECLAIM_MANY.prepare_invoke();
        invocation.key(self.keys.outbox()).arg(worker);
        for c in changes {
            invocation
                .key(self.keys.slots(c.agent))
                .key(self.keys.meta(c.agent, c.execution))
                .arg(c.execution.as_str())
                // Shortest round-trip text: Lua's tonumber() reads back the same double.
                .arg(c.score.to_string())
                .arg(
                    c.deadline
                        .map(|d| to_unix_seconds(d).to_string())
                        .unwrap_or_default(),
                )
                .arg(c.action.as_str())
                .arg(c.agent.as_str())
                .arg(c.evidence.job_id.as_deref().unwrap_or_default())
                .arg(c.evidence.job_kind.as_deref().unwrap_or_default())
                .arg(c.status_before.unwrap_or_default());
        }
        let reply: Vec<Value> = invocation.invoke_async(&mut self.conn.clone()).await?;
        let bad = || StoreError::Protocol("malformed removal reply".into());
        if reply.len() != changes.len() * 2 + 1 {
            return Err(bad());
        }
        let mut reply = reply.into_iter();
        let mut out = Vec::with_capacity(changes.len());
        let mut pending = Vec::new();
        for c in changes {
            let (Some(code), Some(entry)) = (reply.next(), reply.next()) else {
                return Err(bad());
            };
            let code = i64::from_redis_value(code).map_err(|_| bad())?;
            let entry = String::from_redis_value(entry).map_err(|_| bad())?;
            let result = match code {
                1 => Reclaim::Reclaimed,
                0 => Reclaim::AlreadyGone,
                // The new score is not needed by batch callers.
                2 => Reclaim::Renewed { score: f64::NAN },
                _ => Reclaim::NotYetDue,
            };
            let row = (result == Reclaim::Reclaimed).then(|| AuditRow {
                action: c.action,
                execution_id: c.execution.to_string(),
                agent: c.agent.to_string(),
                status_before: c.status_before.map(str::to_owned),
                status_after: None,
                evidence: Evidence {
                    slot_score: Some(c.score),
                    ..c.evidence.clone()
                },
                change_key: Some(change_key(&entry)),
                at: None,
            });
            if row.is_some() {
                pending.push(out.len());
            }
            out.push((result, row));
        }
        let at = reply
            .next()
            .and_then(|v| String::from_redis_value(v).ok())
            .and_then(|t| t.parse::<f64>().ok())
            .and_then(from_unix_seconds);
        for i in pending {
            if let Some(row) = out[i].1.as_mut() {
                row.at = at;
            }
        }
        Ok(out)
    }

    /// Deletes the outbox entries of audit rows that are now written.
    pub async fn ack_outbox(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        let ids: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.change_key.as_deref()?.strip_prefix(OUTBOX_KEY_PREFIX))
            .collect();
        for chunk in ids.chunks(OUTBOX_BATCH) {
            redis::cmd("XDEL")
                .arg(self.keys.outbox())
                .arg(chunk)
                .exec_async(&mut self.conn.clone())
                .await?;
        }
        Ok(())
    }

    /// Outbox entries written at least `older_than` ago (by the entry's Redis time), as
    /// audit rows, oldest first. An entry that cannot be read becomes a row that says so
    /// (action from the entry when known), so it is never lost nor retried forever.
    async fn outbox_entries(&self, older_than: Duration) -> Result<Vec<AuditRow>, StoreError> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let cutoff_ms = (secs * 1000 + micros / 1000) - older_than.as_millis() as i64;
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(self.keys.outbox())
            .arg("-")
            .arg(format!("{}", cutoff_ms.max(0)))
            .arg("COUNT")
            .arg(OUTBOX_BATCH)
            .query_async(&mut conn)
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, fields)| entry_row(&id, &fields))
            .collect())
    }
}

/// Marks an audit row's change key as an outbox entry's.
const OUTBOX_KEY_PREFIX: &str = "outbox:";

fn change_key(entry: &str) -> String {
    format!("{OUTBOX_KEY_PREFIX}{entry}")
}

/// An outbox entry's audit row.
fn entry_row(id: &str, fields: &[String]) -> AuditRow {
    let get = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| kv.first().map(String::as_str) == Some(name))
            .and_then(|kv| kv.get(1))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let num = |name: &str| get(name).and_then(|v| v.parse::<f64>().ok());
    let action = get("action").as_deref().and_then(AuditAction::parse);
    AuditRow {
        action: action.unwrap_or(AuditAction::SlotReleased),
        execution_id: get("execution").unwrap_or_default(),
        agent: get("agent").unwrap_or_default(),
        status_before: get("status_before"),
        status_after: None,
        evidence: Evidence {
            job_id: get("job_id"),
            job_kind: get("job_kind"),
            worker: get("worker").unwrap_or_else(|| "unknown".to_owned()),
            slot_score: num("score"),
            deadline: num("deadline").and_then(from_unix_seconds),
            detail: action
                .is_none()
                .then(|| format!("outbox entry {id} with an unreadable action: {fields:?}")),
        },
        change_key: Some(change_key(id)),
        at: num("at").and_then(from_unix_seconds),
    }
}

/// Writes the audit rows of outbox entries left behind (their batch's write failed, or its
/// worker died between the removal and the write) and deletes the entries: idempotent, so
/// any number of replicas may run it at once. `older_than` leaves the entries a live batch
/// is about to write to that batch. Returns how many entries were drained.
pub async fn drain_outbox(
    slots: &SlotStore,
    db: &Database,
    older_than: Duration,
) -> Result<u64, StoreError> {
    let mut drained = 0;
    loop {
        let rows = slots.outbox_entries(older_than).await?;
        if rows.is_empty() {
            return Ok(drained);
        }
        let now = slots.server_time().await?;
        record(db, &rows, now).await?;
        slots.ack_outbox(&rows).await?;
        drained += rows.len() as u64;
        if rows.len() < OUTBOX_BATCH {
            return Ok(drained);
        }
    }
}
