//! Applying one cleanup job: re-read fresh state, re-run the verdict, act only if it still
//! holds.
//!
//! The payload is evidence, never an order. Effects go Redis first, SQL second: a crash
//! between them leaves a state whose fresh verdict finishes the job (slot gone, row still
//! `running` past its deadline → fail it as an orphan), and every effect is a
//! compare-and-set, so a duplicate delivery applies nothing twice.

use janitor_core::{
    decide, CleanupJob, JobKind, Policy, RowObservation, SlotObservation, Status, Verdict,
};
use janitor_store::{
    sql::audit, AuditAction, AuditEntry, CasOutcome, Evidence, ExecutionStore, Reclaim, RowEntry,
    SlotStore, StoreError, Transition,
};
use serde::Serialize;

/// One change a job made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    SlotReclaimed,
    SlotReleased,
    RunFailed,
    RunCancelled,
}

/// Why a job found nothing left to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum Moot {
    /// The fresh verdict says nothing needs changing (e.g. the run finished meanwhile).
    Healthy,
    /// The slot was renewed since it was observed: the run is alive.
    Renewed,
    /// Redis says the deadline has not passed yet.
    NotYetDue,
    /// Someone else removed the slot first.
    SlotAlreadyGone,
    /// The row reached a terminal status first (a late `success` wins).
    AlreadyTerminal(String),
    /// The row moved to another status; the next sweep judges it afresh.
    StatusChanged(String),
    /// Neither slot nor row exists any more.
    Gone,
    /// The fresh verdict calls for a different job; the next sweep enqueues it.
    OtherJob(String),
    /// The row cannot be read safely (corrupt id or agent): left alone.
    CorruptRow(String),
}

/// The result of applying a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// At least one effect was applied (and audited).
    Applied { effects: Vec<Effect> },
    /// Nothing to do any more.
    NoLongerNeeded { why: Moot },
}

/// Applies cleanup jobs against the two stores.
#[derive(Debug, Clone)]
pub struct Applier {
    slots: SlotStore,
    rows: ExecutionStore,
    policy: Policy,
    worker: String,
}

impl Applier {
    pub fn new(
        slots: SlotStore,
        rows: ExecutionStore,
        policy: Policy,
        worker: impl Into<String>,
    ) -> Self {
        Self {
            slots,
            rows,
            policy,
            worker: worker.into(),
        }
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Applies `job` (known to the queue as `job_id`). Errors are the stores' errors:
    /// the caller decides whether to retry.
    pub async fn apply(&self, job: &CleanupJob, job_id: &str) -> Result<Outcome, StoreError> {
        let now = self.slots.server_time().await?;
        let slot = self
            .slots
            .lookup(&[(job.agent.clone(), job.execution_id.clone())])
            .await?
            .pop()
            .flatten();
        let row = match self
            .rows
            .rows_by_ids(std::slice::from_ref(&job.execution_id))
            .await?
            .pop()
        {
            Some(RowEntry::Row(row)) => Some(row),
            Some(RowEntry::Corrupt(c)) => {
                return Ok(moot(Moot::CorruptRow(c.reason)));
            }
            None => None,
        };
        if slot.is_none() && row.is_none() {
            return Ok(moot(Moot::Gone));
        }
        let verdict = decide(slot.as_ref(), row.as_ref(), now, &self.policy);
        if !covers(job.kind, &verdict) {
            return Ok(moot(match JobKind::for_verdict(&verdict) {
                None => Moot::Healthy,
                Some(kind) => Moot::OtherJob(kind.as_str().to_owned()),
            }));
        }
        let evidence = Evidence {
            job_id: Some(job_id.to_owned()),
            job_kind: Some(job.kind.as_str().to_owned()),
            worker: self.worker.clone(),
            slot_score: slot.as_ref().map(|s| s.score),
            deadline: match verdict {
                Verdict::ReclaimStaleSlot { deadline, .. } | Verdict::FailOrphan { deadline } => {
                    Some(deadline)
                }
                _ => None,
            },
            detail: None,
        };
        let mut effects = Vec::new();

        // Redis first: removing a dead slot is safe on its own; the row change that may
        // follow is recomputed from fresh state on a retry.
        if verdict.removes_slot() {
            let Some(slot) = slot.as_ref() else {
                return Ok(moot(Moot::SlotAlreadyGone));
            };
            let (outcome, action) = match verdict {
                Verdict::ReclaimStaleSlot { deadline, .. } => (
                    self.slots
                        .reclaim_if_expired(&slot.agent, &slot.execution_id, slot.score, deadline)
                        .await?,
                    AuditAction::SlotReclaimed,
                ),
                _ => (
                    self.slots
                        .release_if_unchanged(&slot.agent, &slot.execution_id, slot.score)
                        .await?,
                    AuditAction::SlotReleased,
                ),
            };
            match outcome {
                Reclaim::Reclaimed => {
                    self.audit_slot(slot, row.as_ref(), action, now, &evidence)
                        .await?;
                    effects.push(match action {
                        AuditAction::SlotReclaimed => Effect::SlotReclaimed,
                        _ => Effect::SlotReleased,
                    });
                }
                Reclaim::Renewed { .. } => return Ok(moot(Moot::Renewed)),
                Reclaim::NotYetDue => return Ok(moot(Moot::NotYetDue)),
                Reclaim::AlreadyGone => return Ok(moot(Moot::SlotAlreadyGone)),
            }
        }

        // Then SQL, compare-and-set on the status just read.
        if let (Some(target), Some(row)) = (verdict.row_target(), row.as_ref()) {
            let error = verdict.row_error(slot.as_ref()).unwrap_or_default();
            let change = Transition {
                execution_id: &row.execution_id,
                expected: &row.status,
                error: &error,
                now,
                evidence: &evidence,
            };
            let outcome = if target == Status::Cancelled {
                self.rows.cancel_skipped(&change).await?
            } else {
                self.rows.fail_run(&change).await?
            };
            match outcome {
                CasOutcome::Applied { .. } => effects.push(if target == Status::Cancelled {
                    Effect::RunCancelled
                } else {
                    Effect::RunFailed
                }),
                // The slot part (if any) was applied; the row part lost a race it should lose.
                other if !effects.is_empty() => {
                    tracing::info!(execution.id = %row.execution_id, outcome = ?other, "row changed before janitor could");
                }
                CasOutcome::AlreadyTerminal(s) => {
                    return Ok(moot(Moot::AlreadyTerminal(s.to_string())))
                }
                CasOutcome::Conflict(s) => return Ok(moot(Moot::StatusChanged(s.to_string()))),
                CasOutcome::NotFound => return Ok(moot(Moot::Gone)),
            }
        }
        Ok(if effects.is_empty() {
            moot(Moot::Healthy)
        } else {
            Outcome::Applied { effects }
        })
    }

    async fn audit_slot(
        &self,
        slot: &SlotObservation,
        row: Option<&RowObservation>,
        action: AuditAction,
        now: janitor_core::Timestamp,
        evidence: &Evidence,
    ) -> Result<(), StoreError> {
        audit::record(
            self.rows.database(),
            &AuditEntry {
                at: now,
                action,
                execution_id: slot.execution_id.as_str(),
                agent: slot.agent.as_str(),
                status_before: row.map(|r| r.status.as_str()),
                status_after: None,
                evidence,
            },
        )
        .await
    }
}

fn moot(why: Moot) -> Outcome {
    Outcome::NoLongerNeeded { why }
}

/// Whether a job of `kind` may apply the fresh `verdict`. Besides its own verdict, a
/// reclaim job may finish the row half of an earlier attempt (slot already gone, run past
/// its deadline), which the fresh state shows as an orphan.
fn covers(kind: JobKind, verdict: &Verdict) -> bool {
    match JobKind::for_verdict(verdict) {
        Some(fresh) if fresh == kind => true,
        Some(JobKind::FailRun) => {
            kind == JobKind::ReclaimSlot && matches!(verdict, Verdict::FailOrphan { .. })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use janitor_core::Timestamp;

    fn t() -> Timestamp {
        janitor_core::parse_timestamp("2026-05-01T15:30:00Z").unwrap()
    }

    #[test]
    fn jobs_cover_their_own_verdict_and_a_reclaims_unfinished_row_half() {
        let orphan = Verdict::FailOrphan { deadline: t() };
        assert!(covers(JobKind::FailRun, &orphan));
        assert!(covers(JobKind::ReclaimSlot, &orphan));
        assert!(!covers(JobKind::ReleaseSlot, &orphan));
        let skipped = Verdict::FinalizeSkipped { since: t() };
        assert!(covers(JobKind::FinalizeSkipped, &skipped));
        assert!(!covers(JobKind::FailRun, &skipped));
        let never = Verdict::FailNeverLaunched {
            since: t(),
            release_slot: false,
        };
        assert!(!covers(JobKind::ReclaimSlot, &never));
        assert!(!covers(
            JobKind::ReclaimSlot,
            &Verdict::Healthy { recheck_at: None }
        ));
    }
}
