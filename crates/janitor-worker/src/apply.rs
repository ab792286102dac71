//! Applying one cleanup job: re-read fresh state, re-run the verdict, act only if it still
//! holds.
//!
//! The payload is evidence, never an order. Effects go Redis first, SQL second: a crash
//! between them leaves a state whose fresh verdict finishes the job (slot gone, row still
//! `running` past its deadline → fail it as an orphan), and every effect is a
//! compare-and-set, so a duplicate delivery applies nothing twice.

use std::collections::HashMap;

use janitor_core::{
    decide, AgentName, CleanupJob, ExecutionId, JobKind, Policy, RowObservation, SlotObservation,
    Status, Verdict,
};
use janitor_store::{
    AuditAction, AuditRow, CasOutcome, Evidence, ExecutionStore, Reclaim, RowEntry, SlotStore,
    StoreError, Transition,
};
use serde::Serialize;

/// One change a job made: the same four changes the audit log records, under one name
/// table.
pub use janitor_store::AuditAction as Effect;

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
    /// The run's slot cannot be read (its key is not a ZSET): left alone.
    CorruptSlot(String),
}

impl Moot {
    /// A short stable name, for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Renewed => "renewed",
            Self::NotYetDue => "not_yet_due",
            Self::SlotAlreadyGone => "slot_already_gone",
            Self::AlreadyTerminal(_) => "already_terminal",
            Self::StatusChanged(_) => "status_changed",
            Self::Gone => "gone",
            Self::OtherJob(_) => "other_job",
            Self::CorruptRow(_) => "corrupt_row",
            Self::CorruptSlot(_) => "corrupt_slot",
        }
    }
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

impl Outcome {
    /// `applied` or `no_longer_needed`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::NoLongerNeeded { .. } => "no_longer_needed",
        }
    }

    /// The effects applied (`slot_reclaimed+run_failed`) or why none was needed, for logs.
    pub fn detail(&self) -> String {
        match self {
            Self::Applied { effects } => effects
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            Self::NoLongerNeeded { why } => why.as_str().to_owned(),
        }
    }
}

/// Applies cleanup jobs against the two stores.
#[derive(Clone)]
pub struct Applier {
    slots: SlotStore,
    rows: ExecutionStore,
    policy: Policy,
    worker: String,
    /// Fault injection: awaited between the re-check and the row writes (tests, the soak).
    before_write: Option<Hook>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("worker", &self.worker)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// An async callback, for [`Applier::with_before_write`].
pub type Hook = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

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
            before_write: None,
        }
    }

    /// Awaits `hook` after every batch's fresh verdicts (and Redis removals), right before
    /// its row writes: where a platform write racing janitor lands in the worst case.
    pub fn with_before_write(mut self, hook: Hook) -> Self {
        self.before_write = Some(hook);
        self
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Applies `job` (known to the queue as `job_id`). Errors are the stores' errors:
    /// the caller decides whether to retry.
    pub async fn apply(&self, job: &CleanupJob, job_id: &str) -> Result<Outcome, StoreError> {
        let mut outcomes = self
            .apply_batch(&[(job.clone(), job_id.to_owned())])
            .await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Protocol("no outcome for a job".into()))
    }

    /// Applies many jobs with a fixed number of round trips whatever their number: one
    /// Redis pipeline reads the clock and every slot, one query reads every row, one Lua
    /// call removes every slot that is still dead, one transaction moves every row that
    /// still has its expected status (closing activities and writing the audit). Each
    /// job's effects are decided by the fresh verdict alone, exactly as for one job. The
    /// batch must not hold two jobs for the same execution.
    pub async fn apply_batch(
        &self,
        jobs: &[(CleanupJob, String)],
    ) -> Result<Vec<Outcome>, StoreError> {
        let runs: Vec<(AgentName, ExecutionId)> = jobs
            .iter()
            .map(|(j, _)| (j.agent.clone(), j.execution_id.clone()))
            .collect();
        let (now, slots) = self.slots.lookup_at(&runs).await?;
        let ids: Vec<ExecutionId> = runs.iter().map(|(_, e)| e.clone()).collect();
        let mut rows: HashMap<String, RowEntry> = self
            .rows
            .rows_by_ids(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id().to_owned(), r))
            .collect();

        // Decide every job on fresh state.
        let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
        let mut plans: Vec<Option<Plan>> = Vec::with_capacity(jobs.len());
        for (i, ((job, job_id), slot)) in jobs.iter().zip(slots).enumerate() {
            let slot = match slot {
                Ok(slot) => slot,
                Err(c) => {
                    outcomes[i] = Some(moot(Moot::CorruptSlot(c.reason)));
                    plans.push(None);
                    continue;
                }
            };
            let row = match rows.remove(job.execution_id.as_str()) {
                Some(RowEntry::Row(row)) => Some(row),
                Some(RowEntry::Corrupt(c)) => {
                    outcomes[i] = Some(moot(Moot::CorruptRow(c.reason)));
                    plans.push(None);
                    continue;
                }
                None => None,
            };
            if let Some(row) = &row {
                if would_fail(job) && row.status.is_terminal() {
                    janitor_metrics::late_completion();
                }
            }
            if slot.is_none() && row.is_none() {
                outcomes[i] = Some(moot(Moot::Gone));
                plans.push(None);
                continue;
            }
            let verdict = decide(slot.as_ref(), row.as_ref(), now, &self.policy);
            if !covers(job.kind, &verdict) {
                outcomes[i] = Some(moot(match JobKind::for_verdict(&verdict) {
                    None => Moot::Healthy,
                    Some(kind) => Moot::OtherJob(kind.as_str().to_owned()),
                }));
                plans.push(None);
                continue;
            }
            let evidence = Evidence {
                job_id: Some(job_id.clone()),
                job_kind: Some(job.kind.as_str().to_owned()),
                worker: self.worker.clone(),
                slot_score: slot.as_ref().map(|s| s.score),
                deadline: match verdict {
                    Verdict::ReclaimStaleSlot { deadline, .. }
                    | Verdict::FailOrphan { deadline } => Some(deadline),
                    _ => None,
                },
                detail: None,
            };
            plans.push(Some(Plan {
                slot,
                row,
                verdict,
                evidence,
                effects: Vec::new(),
            }));
        }

        // Redis first: every slot that is still dead, in one atomic call. A never-launched
        // run's slot is the exception: only its row's failure proves it leaked, so it goes
        // after the row's compare-and-set (a session written meanwhile keeps both).
        let mut removals = Vec::new();
        let mut removal_of = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            let Some(plan) = plan else { continue };
            if !plan.verdict.removes_slot() || never_launched(&plan.verdict) {
                continue;
            }
            match &plan.slot {
                Some(s) => {
                    let deadline = match plan.verdict {
                        Verdict::ReclaimStaleSlot { deadline, .. } => Some(deadline),
                        _ => None,
                    };
                    removals.push((s.agent.clone(), s.execution_id.clone(), s.score, deadline));
                    removal_of.push(i);
                }
                None => outcomes[i] = Some(moot(Moot::SlotAlreadyGone)),
            }
        }
        let mut slot_audits = Vec::new();
        for (i, result) in removal_of
            .into_iter()
            .zip(self.slots.compare_and_delete_many(&removals).await?)
        {
            let Some(plan) = plans[i].as_mut() else {
                continue;
            };
            let why = match result {
                Reclaim::Reclaimed => {
                    let action = match plan.verdict {
                        Verdict::ReclaimStaleSlot { .. } => AuditAction::SlotReclaimed,
                        _ => AuditAction::SlotReleased,
                    };
                    plan.effects.push(action);
                    if let Some(slot) = &plan.slot {
                        slot_audits.push(AuditRow {
                            action,
                            execution_id: slot.execution_id.to_string(),
                            agent: slot.agent.to_string(),
                            status_before: plan.row.as_ref().map(|r| r.status.to_string()),
                            status_after: None,
                            evidence: plan.evidence.clone(),
                        });
                    }
                    continue;
                }
                Reclaim::Renewed { .. } => Moot::Renewed,
                Reclaim::NotYetDue => Moot::NotYetDue,
                Reclaim::AlreadyGone => Moot::SlotAlreadyGone,
            };
            janitor_metrics::cas_conflict("redis", why.as_str());
            outcomes[i] = Some(moot(why));
            plans[i] = None;
        }

        // Then SQL: every row change in one transaction, compare-and-set on the status just
        // read, with the slot audits of this batch.
        let errors: Vec<Option<String>> = plans
            .iter()
            .map(|p| {
                p.as_ref()
                    .and_then(|p| p.verdict.row_error(p.slot.as_ref()))
            })
            .collect();
        let mut changes = Vec::new();
        let mut change_of = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            let Some(plan) = plan else { continue };
            if let (Some(target), Some(row)) = (plan.verdict.row_target(), plan.row.as_ref()) {
                changes.push((
                    Transition {
                        execution_id: &row.execution_id,
                        expected: &row.status,
                        error: errors[i].as_deref().unwrap_or_default(),
                        now,
                        started_at: row.started_at.as_ref().ok().copied(),
                        started_at_raw: &row.started_at_raw,
                        require_no_session: never_launched(&plan.verdict),
                        evidence: &plan.evidence,
                    },
                    target,
                ));
                change_of.push(i);
            }
        }
        if let Some(hook) = &self.before_write {
            hook().await;
        }
        let cas = if changes.is_empty() && slot_audits.is_empty() {
            Vec::new()
        } else {
            self.rows.transitions(&changes, &slot_audits, now).await?
        };
        let mut row_outcome: HashMap<usize, CasOutcome> = change_of.into_iter().zip(cas).collect();

        // The slots of never-launched runs whose rows were failed just now.
        let mut releases = Vec::new();
        let mut release_of = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            let Some(plan) = plan else { continue };
            if !(plan.verdict.removes_slot() && never_launched(&plan.verdict)) {
                continue;
            }
            if let (Some(CasOutcome::Applied { .. }), Some(s)) = (row_outcome.get(&i), &plan.slot) {
                releases.push((s.agent.clone(), s.execution_id.clone(), s.score, None));
                release_of.push(i);
            }
        }
        let mut late_audits = Vec::new();
        let mut late_effects: HashMap<usize, Effect> = HashMap::new();
        for (i, result) in release_of
            .into_iter()
            .zip(self.slots.compare_and_delete_many(&releases).await?)
        {
            let Some(plan) = plans[i].as_ref() else {
                continue;
            };
            match (result, &plan.slot) {
                (Reclaim::Reclaimed, Some(slot)) => {
                    late_effects.insert(i, Effect::SlotReleased);
                    late_audits.push(AuditRow {
                        action: AuditAction::SlotReleased,
                        execution_id: slot.execution_id.to_string(),
                        agent: slot.agent.to_string(),
                        status_before: plan.row.as_ref().map(|r| r.status.to_string()),
                        status_after: None,
                        evidence: plan.evidence.clone(),
                    });
                }
                (other, _) => {
                    let why = match other {
                        Reclaim::Renewed { .. } => Moot::Renewed,
                        Reclaim::NotYetDue => Moot::NotYetDue,
                        _ => Moot::SlotAlreadyGone,
                    };
                    janitor_metrics::cas_conflict("redis", why.as_str());
                }
            }
        }
        if !late_audits.is_empty() {
            janitor_store::sql::audit::record(self.rows.database(), &late_audits, now).await?;
        }
        for (i, outcome) in &row_outcome {
            let reason = match outcome {
                CasOutcome::Applied { .. } => continue,
                CasOutcome::AlreadyTerminal(_) => {
                    if would_fail(&jobs[*i].0) {
                        janitor_metrics::late_completion();
                    }
                    "already_terminal"
                }
                // Same status, other facts (a session written, the run rewritten).
                CasOutcome::Conflict(s)
                    if Some(s)
                        == plans[*i]
                            .as_ref()
                            .and_then(|p| p.row.as_ref())
                            .map(|r| &r.status) =>
                {
                    "row_changed"
                }
                CasOutcome::Conflict(_) => "status_changed",
                CasOutcome::NotFound => "not_found",
            };
            janitor_metrics::cas_conflict("sql", reason);
        }

        for (i, plan) in plans.into_iter().enumerate() {
            let Some(mut plan) = plan else { continue };
            if let Some(deadline) = plan.evidence.deadline {
                if matches!(row_outcome.get(&i), Some(CasOutcome::Applied { .. }))
                    || !plan.effects.is_empty()
                {
                    let late = (now - deadline).to_std().unwrap_or_default();
                    janitor_metrics::reaped(jobs[i].0.kind.as_str(), late);
                }
            }
            let target = plan.verdict.row_target();
            outcomes[i] = Some(match (row_outcome.remove(&i), target) {
                (Some(CasOutcome::Applied { .. }), Some(target)) => {
                    plan.effects.push(if target == Status::Cancelled {
                        Effect::RunCancelled
                    } else {
                        Effect::RunFailed
                    });
                    plan.effects.extend(late_effects.remove(&i));
                    Outcome::Applied {
                        effects: plan.effects,
                    }
                }
                // The slot part was applied; the row part lost a race it should lose.
                (Some(other), _) if !plan.effects.is_empty() => {
                    tracing::info!(job.id = %jobs[i].1, outcome = ?other, "row changed before janitor could");
                    Outcome::Applied {
                        effects: plan.effects,
                    }
                }
                (Some(CasOutcome::AlreadyTerminal(s)), _) => {
                    moot(Moot::AlreadyTerminal(s.to_string()))
                }
                (Some(CasOutcome::Conflict(s)), _) => moot(Moot::StatusChanged(s.to_string())),
                (Some(CasOutcome::NotFound), _) => moot(Moot::Gone),
                (Some(CasOutcome::Applied { .. }), None) | (None, _) => {
                    if plan.effects.is_empty() {
                        moot(Moot::Healthy)
                    } else {
                        Outcome::Applied {
                            effects: plan.effects,
                        }
                    }
                }
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::NoLongerNeeded { why: Moot::Healthy }))
            .collect())
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

/// What a job will do, decided on fresh state.
struct Plan {
    slot: Option<SlotObservation>,
    row: Option<RowObservation>,
    verdict: Verdict,
    evidence: Evidence,
    effects: Vec<Effect>,
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
