//! The phases of a batch: decide, remove slots, write rows, and the outcomes. Each phase
//! reads and moves the batch's per-job [`Step`]s on; a job whose step is [`Step::Done`]
//! takes no further part.

use std::collections::HashMap;

use janitor_core::{
    decide, AgentName, CleanupJob, ExecutionId, JobKind, Liveness, RowObservation, SlotObservation,
    Status, Timestamp, Verdict,
};
use janitor_store::{
    AuditAction, AuditRow, CasOutcome, Evidence, Reclaim, RowEntry, SlotChange, StoreError,
    Transition,
};

use super::{Applier, Effect, Moot, Outcome};

/// Where one job of a batch is. (A batch holds at most a few dozen; boxing the plan would
/// buy nothing.)
#[allow(clippy::large_enum_variant)]
enum Step {
    Done(Outcome),
    Planned(Plan),
}

/// A batch between its phases.
pub(super) struct Batch {
    /// Redis' clock when the batch read its state: the batch's one "now".
    pub(super) now: Timestamp,
    kinds: Vec<JobKind>,
    job_ids: Vec<String>,
    steps: Vec<Step>,
}

/// Which slot removals a [`Applier::remove_slots`] call makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Every removal but a never-launched run's: before the rows.
    BeforeRows,
    /// A never-launched run's slot, once its row was failed.
    AfterRows,
}

impl Applier {
    /// Phase 1: Redis' clock and every slot in one pipeline, every row in one query, and
    /// the fresh verdict of each job.
    pub(super) async fn decide(&self, jobs: &[(CleanupJob, String)]) -> Result<Batch, StoreError> {
        let runs: Vec<(AgentName, ExecutionId)> = jobs
            .iter()
            .map(|(j, _)| (j.agent.clone(), j.execution_id.clone()))
            .collect();
        let ids: Vec<ExecutionId> = runs.iter().map(|(_, e)| e.clone()).collect();
        let ((now, slots), mut live) =
            tokio::try_join!(self.slots.lookup_at(&runs), self.slots.liveness(&ids))?;
        let mut rows: HashMap<String, RowEntry> = self
            .rows
            .rows_by_ids(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id().to_owned(), r))
            .collect();
        if self.slots.probe().is_some() {
            // Ask the agents of the jobs that would fail a run or remove a slot on evidence
            // a wrong view could fake (one request per agent), before deciding for good.
            let guarded: Vec<bool> = jobs
                .iter()
                .zip(&slots)
                .zip(&live)
                .map(|(((job, _), slot), live)| {
                    let slot = slot.as_ref().ok().and_then(Option::as_ref);
                    let row = match rows.get(job.execution_id.as_str()) {
                        Some(RowEntry::Row(row)) => Some(row),
                        _ => None,
                    };
                    decide(slot, row, live, now, &self.policy).is_guarded()
                })
                .collect();
            self.slots
                .ask_agents(&runs, &mut live, |i| guarded[i])
                .await;
        }
        let steps = jobs
            .iter()
            .zip(slots)
            .zip(live)
            .map(|(((job, job_id), slot), live)| {
                let row = rows.remove(job.execution_id.as_str());
                self.plan(job, job_id, slot, row, &live, now)
            })
            .collect();
        Ok(Batch {
            now,
            kinds: jobs.iter().map(|(j, _)| j.kind).collect(),
            job_ids: jobs.iter().map(|(_, id)| id.clone()).collect(),
            steps,
        })
    }

    fn plan(
        &self,
        job: &CleanupJob,
        job_id: &str,
        slot: janitor_store::SlotRead,
        row: Option<RowEntry>,
        live: &Liveness,
        now: Timestamp,
    ) -> Step {
        let slot = match slot {
            Ok(slot) => slot,
            Err(c) => return Step::Done(moot(Moot::CorruptSlot(c.reason))),
        };
        let row = match row {
            Some(RowEntry::Row(row)) => Some(row),
            Some(RowEntry::Corrupt(c)) => return Step::Done(moot(Moot::CorruptRow(c.reason))),
            None => None,
        };
        if let Some(row) = &row {
            if would_fail(job) && row.status.is_terminal() {
                janitor_metrics::late_completion();
            }
        }
        if slot.is_none() && row.is_none() {
            return Step::Done(moot(Moot::Gone));
        }
        let verdict = decide(slot.as_ref(), row.as_ref(), live, now, &self.policy);
        if !covers(job.kind, &verdict) {
            return Step::Done(moot(match JobKind::for_verdict(&verdict) {
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
            // What the agent said, when it was asked: kept with the change.
            detail: live
                .agent
                .map(|says| format!("{{\"agent_probe\":\"{}\"}}", says.as_str())),
        };
        Step::Planned(Plan {
            slot,
            row,
            verdict,
            evidence,
            effects: Vec::new(),
            row_write: None,
        })
    }

    /// Phases 2 and 4: the slot removals of `stage`, compare-and-delete in one Lua call
    /// that records each removal in the outbox. Returns the removals' audit rows, for the
    /// caller to write and then acknowledge.
    pub(super) async fn remove_slots(
        &self,
        batch: &mut Batch,
        stage: Stage,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let mut changes = Vec::new();
        let mut change_of = Vec::new();
        for (i, step) in batch.steps.iter().enumerate() {
            let Step::Planned(plan) = step else { continue };
            if !plan.verdict.removes_slot() {
                continue;
            }
            let due = match stage {
                Stage::BeforeRows => !never_launched(&plan.verdict),
                Stage::AfterRows => {
                    never_launched(&plan.verdict)
                        && matches!(plan.row_write, Some(CasOutcome::Applied { .. }))
                }
            };
            if !due {
                continue;
            }
            let Some(slot) = &plan.slot else {
                // Decided on a slot that was there: unreachable, but never a reason to act.
                continue;
            };
            changes.push(SlotChange {
                agent: &slot.agent,
                execution: &slot.execution_id,
                score: slot.score,
                deadline: match plan.verdict {
                    Verdict::ReclaimStaleSlot { deadline, .. } => Some(deadline),
                    _ => None,
                },
                action: match plan.verdict {
                    Verdict::ReclaimStaleSlot { .. } => AuditAction::SlotReclaimed,
                    _ => AuditAction::SlotReleased,
                },
                status_before: plan.row.as_ref().map(|r| r.status.as_str()),
                evidence: &plan.evidence,
            });
            change_of.push(i);
        }
        let results = self.slots.remove_recorded(&self.worker, &changes).await?;
        drop(changes);
        let mut audits = Vec::new();
        for (i, (result, audit)) in change_of.into_iter().zip(results) {
            let Step::Planned(plan) = &mut batch.steps[i] else {
                continue;
            };
            if let Some(audit) = audit {
                plan.effects.push(audit.action);
                audits.push(audit);
                continue;
            }
            let why = match result {
                Reclaim::Renewed { .. } => Moot::Renewed,
                Reclaim::NotYetDue => Moot::NotYetDue,
                _ => Moot::SlotAlreadyGone,
            };
            janitor_metrics::cas_conflict("redis", why.as_str());
            // Before the rows, a slot that is no longer dead ends the job; after them, the
            // row's change stands (the run was failed) and only the release is skipped.
            if stage == Stage::BeforeRows {
                batch.steps[i] = Step::Done(moot(why));
            }
        }
        Ok(audits)
    }

    /// Phase 3: every row change in one transaction, compare-and-set on every fact its
    /// verdict used, with the activities, the row audits and `slot_audits`.
    pub(super) async fn write_rows(
        &self,
        batch: &mut Batch,
        slot_audits: &[AuditRow],
    ) -> Result<(), StoreError> {
        let errors: Vec<Option<String>> = batch
            .steps
            .iter()
            .map(|s| match s {
                Step::Planned(p) => p.verdict.row_error(p.slot.as_ref(), &self.policy),
                Step::Done(_) => None,
            })
            .collect();
        let mut changes = Vec::new();
        let mut change_of = Vec::new();
        let mut requeues = Vec::new();
        let mut requeue_of = Vec::new();
        for (i, step) in batch.steps.iter().enumerate() {
            let Step::Planned(plan) = step else { continue };
            if let (Verdict::RequeueLease { .. }, Some(row)) = (&plan.verdict, plan.row.as_ref()) {
                if let Some(lease_raw) = row.lease_raw.as_deref() {
                    requeues.push(janitor_store::Requeue {
                        execution_id: &row.execution_id,
                        lease_raw,
                        redelivery_count: row.redelivery_count,
                        evidence: &plan.evidence,
                    });
                    requeue_of.push(i);
                }
                continue;
            }
            if let (Some(target), Some(row)) = (plan.verdict.row_target(), plan.row.as_ref()) {
                changes.push((
                    Transition {
                        execution_id: &row.execution_id,
                        expected: &row.status,
                        error: errors[i].as_deref().unwrap_or_default(),
                        now: batch.now,
                        started_at: row.started_at.as_ref().ok().copied(),
                        started_at_raw: &row.started_at_raw,
                        require_no_session: never_launched(&plan.verdict),
                        expected_lease: match plan.verdict {
                            Verdict::FailLease { .. } => row.lease_raw.as_deref(),
                            _ => None,
                        },
                        platform_skipped: matches!(
                            plan.verdict,
                            Verdict::FinalizeSkipped {
                                as_failed: true,
                                ..
                            }
                        ),
                        evidence: &plan.evidence,
                    },
                    target,
                ));
                change_of.push(i);
            }
        }
        let requeued = self.rows.requeue_leased(&requeues, batch.now).await?;
        drop(requeues);
        let written = if changes.is_empty() && slot_audits.is_empty() {
            Vec::new()
        } else {
            self.rows
                .transitions(&changes, slot_audits, batch.now)
                .await?
        };
        drop(changes);
        let done = change_of
            .into_iter()
            .zip(written)
            .chain(requeue_of.into_iter().zip(requeued));
        for (i, outcome) in done {
            let Step::Planned(plan) = &mut batch.steps[i] else {
                continue;
            };
            let reason = match &outcome {
                CasOutcome::Applied { .. } => None,
                CasOutcome::AlreadyTerminal(_) => Some("already_terminal"),
                // Same status, another fact (a session written, the run rewritten).
                CasOutcome::Conflict(s) if Some(s) == plan.row.as_ref().map(|r| &r.status) => {
                    Some("row_changed")
                }
                CasOutcome::Conflict(_) => Some("status_changed"),
                CasOutcome::NotFound => Some("not_found"),
            };
            if let Some(reason) = reason {
                janitor_metrics::cas_conflict("sql", reason);
            }
            if matches!(outcome, CasOutcome::AlreadyTerminal(_))
                && matches!(batch.kinds[i], JobKind::ReclaimSlot | JobKind::FailRun)
            {
                janitor_metrics::late_completion();
            }
            plan.row_write = Some(outcome);
        }
        Ok(())
    }
}

impl Batch {
    /// Phase 5: each job's outcome (and its reap latency, for the metrics).
    pub(super) fn finish(self) -> Vec<Outcome> {
        let now = self.now;
        self.steps
            .into_iter()
            .zip(self.kinds)
            .zip(self.job_ids)
            .map(|((step, kind), job_id)| match step {
                Step::Done(outcome) => outcome,
                Step::Planned(plan) => plan.outcome(kind, &job_id, now),
            })
            .collect()
    }
}

impl Plan {
    fn outcome(self, kind: JobKind, job_id: &str, now: Timestamp) -> Outcome {
        let Plan {
            verdict,
            evidence,
            mut effects,
            row_write,
            ..
        } = self;
        let row_applied = matches!(row_write, Some(CasOutcome::Applied { .. }));
        if let Some(deadline) = evidence.deadline {
            if row_applied || !effects.is_empty() {
                let late = (now - deadline).to_std().unwrap_or_default();
                janitor_metrics::reaped(kind.as_str(), late);
            }
        }
        if row_applied {
            if let Some(target) = verdict.row_target() {
                let run = match target {
                    Status::Cancelled => Effect::RunCancelled,
                    Status::Queued => Effect::RunRequeued,
                    _ => Effect::RunFailed,
                };
                // The run's change first: a never-launched slot went after it.
                let at = if never_launched(&verdict) {
                    0
                } else {
                    effects.len()
                };
                effects.insert(at, run);
            }
        }
        match row_write {
            Some(CasOutcome::Applied { .. }) | None if !effects.is_empty() => {
                Outcome::Applied { effects }
            }
            // The slot part was applied; the row part lost a race it should lose.
            Some(other) if !effects.is_empty() => {
                tracing::info!(job.id = %job_id, outcome = ?other, "row changed before janitor could");
                Outcome::Applied { effects }
            }
            Some(CasOutcome::AlreadyTerminal(s)) => moot(Moot::AlreadyTerminal(s.to_string())),
            Some(CasOutcome::Conflict(s)) => moot(Moot::StatusChanged(s.to_string())),
            Some(CasOutcome::NotFound) => moot(Moot::Gone),
            _ => moot(Moot::Healthy),
        }
    }
}

/// Rule 4's verdict: its slot is removed only once its row's failure is applied.
fn never_launched(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::FailNeverLaunched { .. })
}

/// Whether `job` fails its run when it applies (so a terminal row beat it).
fn would_fail(job: &CleanupJob) -> bool {
    matches!(job.kind, JobKind::ReclaimSlot | JobKind::FailRun)
        && job
            .observed_status
            .as_ref()
            .is_some_and(|s| !s.is_terminal())
}

/// What a job will do, decided on fresh state, and what it has done so far.
struct Plan {
    slot: Option<SlotObservation>,
    row: Option<RowObservation>,
    verdict: Verdict,
    evidence: Evidence,
    effects: Vec<Effect>,
    /// The row's compare-and-set, once made.
    row_write: Option<CasOutcome>,
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
        let skipped = Verdict::FinalizeSkipped {
            since: t(),
            as_failed: false,
        };
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
