//! Applying one cleanup job: re-read fresh state, re-run the verdict, act only if it still
//! holds.
//!
//! The payload is evidence, never an order. Effects go Redis first, SQL second (except a
//! never-launched run's slot, which only its row's failure proves leaked): a crash between
//! them leaves a state whose fresh verdict finishes the job (slot gone, row still `running`
//! past its deadline → fail it as an orphan), and every effect is a compare-and-set, so a
//! duplicate delivery applies nothing twice. Every slot removal is recorded in the audit
//! outbox by the script that makes it, so its audit row survives a failed row write.

mod phases;

use janitor_core::{decide_activity, ActivityVerdict, CleanupJob, JobKind, Policy};
use janitor_store::{ActivityClose, ActivityEntry, ExecutionStore, SlotStore, StoreError};
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

    /// Applies many jobs with a fixed number of round trips whatever their number, in four
    /// phases ([`phases`]): read both stores once and decide every job on fresh state;
    /// remove the slots that are still dead in one Lua call (each removal recorded in the
    /// audit outbox by that call); move every row that still has every fact its verdict
    /// used, in one transaction with its activities, its audit rows and the outbox entries'
    /// rows; then remove the slots of never-launched runs whose rows were failed. Each
    /// job's effects are decided by the fresh verdict alone, exactly as for one job. The
    /// batch must not hold two jobs for the same execution.
    pub async fn apply_batch(
        &self,
        jobs: &[(CleanupJob, String)],
    ) -> Result<Vec<Outcome>, StoreError> {
        self.apply_batch_in_turn(jobs, &tokio::sync::Mutex::new(()), || {})
            .await
    }

    /// [`Self::apply_batch`] for a worker that overlaps its batches: `decided` is called once
    /// the batch has read both stores and made its fresh verdicts, and every write waits for
    /// `turn`. So one batch reads while the one before it writes, and the writes of a
    /// process stay one batch at a time. Overlapping is as safe as two workers: a batch
    /// that decided on state the batch before it changed meets a compare-and-set that
    /// fails.
    pub async fn apply_batch_in_turn(
        &self,
        jobs: &[(CleanupJob, String)],
        turn: &tokio::sync::Mutex<()>,
        decided: impl FnOnce(),
    ) -> Result<Vec<Outcome>, StoreError> {
        // Activity closes touch neither a run nor a slot: their own small path.
        if jobs.iter().any(|(j, _)| j.kind == JobKind::CloseActivity) {
            decided();
            let _turn = turn.lock().await;
            let (activities, runs): (Vec<usize>, Vec<usize>) =
                (0..jobs.len()).partition(|&i| jobs[i].0.kind == JobKind::CloseActivity);
            let pick = |idx: &[usize]| idx.iter().map(|&i| jobs[i].clone()).collect::<Vec<_>>();
            let closed = self.close_activities(&pick(&activities)).await?;
            let applied = Box::pin(self.apply_batch(&pick(&runs))).await?;
            let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
            for (i, o) in activities.into_iter().zip(closed) {
                outcomes[i] = Some(o);
            }
            for (i, o) in runs.into_iter().zip(applied) {
                outcomes[i] = Some(o);
            }
            return Ok(outcomes
                .into_iter()
                .map(|o| o.unwrap_or(Outcome::NoLongerNeeded { why: Moot::Gone }))
                .collect());
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = self.decide(jobs).await?;
        decided();
        let _turn = turn.lock().await;
        let slot_audits = self
            .remove_slots(&mut batch, phases::Stage::BeforeRows)
            .await?;
        if let Some(hook) = &self.before_write {
            hook().await;
        }
        self.write_rows(&mut batch, &slot_audits).await?;
        self.slots.ack_outbox(&slot_audits).await?;
        let late_audits = self
            .remove_slots(&mut batch, phases::Stage::AfterRows)
            .await?;
        if !late_audits.is_empty() {
            janitor_store::sql::audit::record(self.rows.database(), &late_audits, batch.now)
                .await?;
            self.slots.ack_outbox(&late_audits).await?;
        }
        Ok(batch.finish())
    }

    /// Closes the activities of `jobs` whose fresh verdict still says so (rule 8): one read,
    /// one transaction of compare-and-set closes with their audit rows.
    async fn close_activities(
        &self,
        jobs: &[(CleanupJob, String)],
    ) -> Result<Vec<Outcome>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<_> = jobs.iter().map(|(j, _)| j.execution_id.clone()).collect();
        let (now, found) =
            tokio::try_join!(self.slots.server_time(), self.rows.activities_by_ids(&ids))?;
        let mut by_id: std::collections::HashMap<String, ActivityEntry> = found
            .into_iter()
            .map(|e| match &e {
                ActivityEntry::Activity(a) => (a.id.to_string(), e),
                ActivityEntry::Corrupt(c) => (c.id.clone(), e),
            })
            .collect();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
        let mut planned = Vec::new();
        for (i, (job, job_id)) in jobs.iter().enumerate() {
            match by_id.remove(job.execution_id.as_str()) {
                None => outcomes[i] = Some(Outcome::NoLongerNeeded { why: Moot::Gone }),
                Some(ActivityEntry::Corrupt(c)) => {
                    outcomes[i] = Some(Outcome::NoLongerNeeded {
                        why: Moot::CorruptRow(c.reason),
                    })
                }
                Some(ActivityEntry::Activity(activity)) => {
                    let verdict = decide_activity(&activity, now, &self.policy);
                    match verdict {
                        ActivityVerdict::Close { state, .. } => {
                            let evidence = janitor_store::Evidence {
                                job_id: Some(job_id.clone()),
                                job_kind: Some(job.kind.as_str().to_owned()),
                                worker: self.worker.clone(),
                                ..Default::default()
                            };
                            let error = verdict.error(&self.policy);
                            planned.push((i, activity, state, error, evidence));
                        }
                        _ => outcomes[i] = Some(Outcome::NoLongerNeeded { why: Moot::Healthy }),
                    }
                }
            }
        }
        let changes: Vec<ActivityClose<'_>> = planned
            .iter()
            .map(|(_, activity, state, error, evidence)| ActivityClose {
                activity,
                state,
                error: error.as_deref(),
                now,
                evidence,
            })
            .collect();
        let applied = self.rows.close_activities(&changes, now).await?;
        for ((i, ..), applied) in planned.iter().zip(applied) {
            outcomes[*i] = Some(if applied {
                Outcome::Applied {
                    effects: vec![Effect::ActivityClosed],
                }
            } else {
                janitor_metrics::cas_conflict("sql", "row_changed");
                Outcome::NoLongerNeeded {
                    why: Moot::StatusChanged("started".into()),
                }
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::NoLongerNeeded { why: Moot::Gone }))
            .collect())
    }

    /// Writes the audit rows of removals whose batch could not (an outage, a crash) and
    /// deletes their outbox entries. Any replica may run it; entries younger than `grace`
    /// are left to the batch writing them.
    pub async fn drain_outbox(&self, grace: std::time::Duration) -> Result<u64, StoreError> {
        janitor_store::drain_outbox(&self.slots, self.rows.database(), grace).await
    }
}
