//! Running apalis workers over the cleanup queue, supervised.
//!
//! apalis-redis 1.0.0 ends a worker's stream on any Redis error and refuses to
//! re-register a name for up to the heartbeat threshold, so each start gets a fresh,
//! unique name and a supervisor loop restarts the worker after a short, jittered backoff.
//! Every replica shares the queue's heartbeat settings, so a killed replica's jobs are
//! re-enqueued by the others within `heartbeat_interval × missed_heartbeats`.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use futures::FutureExt as _;
use janitor_core::{CleanupJob, JobKind};
use janitor_metrics::ActionOutcome;
use janitor_queue::{Queue, RawJson};
use rand::Rng as _;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::{gate::Gated, Applier, Effect, Outcome};

/// The default cap of the in-delivery backoff: with 8 tries a delivery rides out about half
/// a minute of outage before the queue redelivers it (and transient failures never count).
pub const DEFAULT_RETRY_MAX_DELAY_SECS: u64 = 30;

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs handled at once by this process.
    pub concurrency: usize,
    /// Deliveries of one job that failed on a permanent error before it is dead (the
    /// library's own cap is ignored; transient errors never count).
    pub max_attempts: usize,
    /// Tries within one delivery for a transient store error, with exponential backoff.
    pub tries_per_attempt: u32,
    /// The longest wait between two of those tries (the backoff doubles from 200 ms, with
    /// jitter, up to this).
    pub retry_max_delay: Duration,
    /// Stop once nothing is due and nothing is in flight.
    pub exit_when_idle: bool,
    /// Worker names are `{prefix}-{random}`.
    pub name_prefix: String,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: 5,
            tries_per_attempt: 8,
            retry_max_delay: Duration::from_secs(DEFAULT_RETRY_MAX_DELAY_SECS),
            exit_when_idle: false,
            name_prefix: "janitor-worker".to_owned(),
        }
    }
}

/// What the jobs of one kind did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindTally {
    pub applied: u64,
    pub no_longer_needed: u64,
    pub errors: u64,
    pub dead: u64,
    pub slots_reclaimed: u64,
    pub slots_released: u64,
    pub runs_failed: u64,
    pub runs_cancelled: u64,
    pub activities_closed: u64,
    pub runs_requeued: u64,
}

/// Outcomes per job kind, plus payloads that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub kinds: BTreeMap<&'static str, KindTally>,
    pub malformed: u64,
    pub restarts: u64,
}

impl Tally {
    fn kind(&mut self, kind: JobKind) -> &mut KindTally {
        self.kinds.entry(kind.as_str()).or_default()
    }

    /// Counts a delivery's outcome and effects, here and in the metrics.
    fn record(&mut self, kind: JobKind, outcome: &Outcome) {
        let t = self.kind(kind);
        match outcome {
            Outcome::Applied { effects } => {
                t.applied += 1;
                janitor_metrics::action(kind.as_str(), ActionOutcome::Applied);
                for effect in effects {
                    janitor_metrics::effect(effect.as_str());
                    match effect {
                        Effect::SlotReclaimed => t.slots_reclaimed += 1,
                        Effect::SlotReleased => t.slots_released += 1,
                        Effect::RunFailed => t.runs_failed += 1,
                        Effect::RunCancelled => t.runs_cancelled += 1,
                        Effect::ActivityClosed => t.activities_closed += 1,
                        Effect::RunRequeued => t.runs_requeued += 1,
                    }
                }
            }
            Outcome::NoLongerNeeded { .. } => {
                t.no_longer_needed += 1;
                janitor_metrics::action(kind.as_str(), ActionOutcome::NoLongerNeeded);
            }
        }
    }

    /// Counts a failed delivery (and, when it was the last, a dead job), here and in the
    /// metrics.
    fn failed(&mut self, kind: JobKind, dead: bool) {
        let t = self.kind(kind);
        t.errors += 1;
        janitor_metrics::action(kind.as_str(), ActionOutcome::Error);
        if dead {
            t.dead += 1;
            janitor_metrics::dead(kind.as_str(), "gave_up");
        }
    }
}

#[derive(Debug)]
struct Handler {
    batches: mpsc::Sender<Request>,
    pacer: janitor_queue::Pacer,
    options: WorkerOptions,
    tally: Mutex<Tally>,
}

/// One job handed to the batcher, and where its outcome goes.
#[derive(Debug)]
struct Request {
    job: CleanupJob,
    id: String,
    reply: oneshot::Sender<Result<Outcome, Failure>>,
}

/// A batch's error, as each of its jobs sees it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
struct Failure {
    transient: bool,
    message: String,
}

/// Most jobs applied together. A batch that spans more runs shares more index leaves per
/// commit and pays each statement's round trip for more jobs; SQLite gains most (its commit
/// writes a page per leaf it touched, under its one write lock). Measured in the catch-up
/// (`janitor-bench --only catch-up-*`, alternated, 2026-12-07): 512-job batches with 1,024
/// in flight reconcile 7,948 / 7,652 / 6,556 pairs/s on SQLite against 6,359 / 6,260 /
/// 5,415 for 128 of 384, and 8,796 / 10,856 / 9,003 on PostgreSQL against 8,913 / 9,999 /
/// 8,175. A batch's transaction holds SQLite's write lock for about 70 ms at that rate
/// (the platform's writes wait that long at most during a catch-up; batches are this big
/// only when that many jobs wait). Batches bigger than 128 need every batch write to find
/// its rows by key (see the store's `lookup_side`): before it, a SQLite batch of 256 did
/// not finish in 150 s.
pub const MAX_BATCH: usize = 512;

/// Jobs in flight per worker process by default: two full batches, so one batch writes
/// while the next reads (the largest `--concurrency` allows).
pub const DEFAULT_CONCURRENCY: usize = OVERLAP * MAX_BATCH;

/// Batches of one process applied at once: one reads both stores while the one before it
/// writes (the writes wait for their turn). Measured in the catch-up (`janitor-bench --only
/// catch-up-postgres`, alternated, 2026-12-07, on a slow hour, batches of 128): 5,374 /
/// 5,057 / 5,221 / 5,767 / 5,008 pairs/s against 4,498 / 4,727 / 4,721 / 5,065 / 5,349 one
/// batch at a time; three at once, no better than two. SQLite, whose one write lock the two
/// processes share, showed no difference either way.
const OVERLAP: usize = 2;

/// Applies jobs in batches: whatever has arrived while the previous batch was read goes
/// into the next one, so a busy worker makes a few round trips per batch instead of per
/// job, and an idle one adds no latency. Two jobs for one execution never share a batch
/// (the second waits for the next). A batch starts reading as soon as the one before it has
/// decided; the writes of the process go one batch at a time.
async fn batch_loop(applier: Applier, mut requests: mpsc::Receiver<Request>) {
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    let running = Arc::new(tokio::sync::Semaphore::new(OVERLAP));
    let mut carry: VecDeque<Request> = VecDeque::new();
    loop {
        let first = match carry.pop_front() {
            Some(r) => r,
            None => match requests.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        let mut seen = HashSet::from([first.job.execution_id.clone()]);
        let mut batch = vec![first];
        let mut later = Vec::new();
        while batch.len() < MAX_BATCH {
            let next = match carry.pop_front() {
                Some(r) => r,
                None => match requests.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            if seen.insert(next.job.execution_id.clone()) {
                batch.push(next);
            } else {
                later.push(next);
            }
        }
        for r in later.into_iter().rev() {
            carry.push_front(r);
        }
        let Ok(permit) = running.clone().acquire_owned().await else {
            return;
        };
        let (decided, read) = oneshot::channel();
        let (applier, turn) = (applier.clone(), turn.clone());
        tokio::spawn(async move {
            apply_requests(&applier, &turn, batch, decided).await;
            drop(permit);
        });
        // A failed or panicked read drops `decided`: the next batch goes on alike.
        let _ = read.await;
    }
    // Every batch started is finished before the loop ends.
    let _ = running.acquire_many(OVERLAP as u32).await;
}

/// Applies one batch and replies to each of its jobs.
async fn apply_requests(
    applier: &Applier,
    turn: &tokio::sync::Mutex<()>,
    batch: Vec<Request>,
    decided: oneshot::Sender<()>,
) {
    let jobs: Vec<(CleanupJob, String)> = batch
        .iter()
        .map(|r| (r.job.clone(), r.id.clone()))
        .collect();
    match guarded(applier, &jobs, turn, move || {
        let _ = decided.send(());
    })
    .await
    {
        Ok(outcomes) => {
            for (request, outcome) in batch.into_iter().zip(outcomes) {
                let _ = request.reply.send(Ok(outcome));
            }
        }
        // One job's failure must not fail its neighbours: split the batch and apply
        // each job on its own before any delivery counts as failed. (A transient error
        // is the store's, not a job's: every job fails alike and none counts.)
        Err(failure) if !failure.transient && batch.len() > 1 => {
            for (request, job) in batch.into_iter().zip(jobs) {
                let result = guarded(applier, std::slice::from_ref(&job), turn, || {}).await;
                let _ = request.reply.send(result.and_then(|mut o| {
                    o.pop().ok_or_else(|| Failure {
                        transient: true,
                        message: "no outcome for a job".into(),
                    })
                }));
            }
        }
        Err(failure) => {
            for request in batch {
                let _ = request.reply.send(Err(failure.clone()));
            }
        }
    }
}

/// Applies a batch, turning a store error into each job's [`Failure`] and a panic into a
/// failure of this batch only: the batch loop lives on (a dead loop would fail every job
/// the worker fetched from then on).
async fn guarded(
    applier: &Applier,
    jobs: &[(CleanupJob, String)],
    turn: &tokio::sync::Mutex<()>,
    decided: impl FnOnce(),
) -> Result<Vec<Outcome>, Failure> {
    match std::panic::AssertUnwindSafe(applier.apply_batch_in_turn(jobs, turn, decided))
        .catch_unwind()
        .await
    {
        Ok(Ok(outcomes)) => Ok(outcomes),
        Ok(Err(err)) => Err(Failure {
            transient: err.is_transient(),
            message: err.to_string(),
        }),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            tracing::error!(error = %message, jobs = jobs.len(), "applying a batch panicked; its jobs will be retried");
            Err(Failure {
                transient: false,
                message: format!("applying the batch panicked: {message}"),
            })
        }
    }
}

impl Handler {
    async fn apply(&self, job: &CleanupJob, id: &str) -> Result<Outcome, Failure> {
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            job: job.clone(),
            id: id.to_owned(),
            reply,
        };
        let lost = || Failure {
            transient: true,
            message: "the batcher stopped".into(),
        };
        self.batches.send(request).await.map_err(|_| lost())?;
        outcome.await.map_err(|_| lost())?
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a job is dead.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("malformed job payload, kept as is: {0}")]
    Malformed(String),
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: usize, last: String },
    #[error("{0}")]
    Store(String),
}

async fn handle(
    payload: Vec<u8>,
    attempt: Attempt,
    id: TaskId,
    handler: Data<Arc<Handler>>,
) -> Result<(), BoxDynError> {
    let job = match CleanupJob::decode(&payload) {
        Ok(job) => job,
        Err(err) => {
            handler.tally().malformed += 1;
            janitor_metrics::dead("unknown", "malformed");
            tracing::error!(job.id = %id, error = %err, payload.bytes = payload.len(), "malformed job payload: dead at once");
            return Err(AbortError::new(JobError::Malformed(err.to_string())).into());
        }
    };
    handler.pacer.busy();
    // The library counts this delivery already (1 on the first).
    let delivery = attempt.current().max(1);
    let mut tries = 0;
    let error = loop {
        tries += 1;
        match handler.apply(&job, &id.to_string()).await {
            Ok(outcome) => {
                tracing::info!(
                    job.id = %id, job.kind = job.kind.as_str(), execution.id = %job.execution_id,
                    agent.name = %job.agent, outcome = outcome.name(), detail = %outcome.detail(),
                    attempt = delivery, "job done"
                );
                handler.tally().record(job.kind, &outcome);
                return Ok(());
            }
            Err(err) if err.transient && tries < handler.options.tries_per_attempt => {
                let wait = backoff(
                    tries,
                    Duration::from_millis(200),
                    handler.options.retry_max_delay,
                );
                tracing::warn!(job.id = %id, job.kind = job.kind.as_str(), error = %err, retry_in_ms = wait.as_millis() as u64, "store unavailable, retrying");
                tokio::time::sleep(wait).await;
            }
            Err(err) => break err,
        }
    };
    // The dead set is for poison, not for outages: a transient error (a store down, busy,
    // read-only or restarting) never counts toward `max_attempts`; the delivery is retried
    // by the queue (after `attempt` seconds, up to the library's own cap of 25).
    let dead = !error.transient && delivery >= handler.options.max_attempts;
    handler.tally().failed(job.kind, dead);
    if dead {
        tracing::error!(job.id = %id, job.kind = job.kind.as_str(), execution.id = %job.execution_id, agent.name = %job.agent, attempt = delivery, error = %error, "job is dead");
        return Err(AbortError::new(JobError::GaveUp {
            attempts: delivery,
            last: error.to_string(),
        })
        .into());
    }
    tracing::warn!(job.id = %id, job.kind = job.kind.as_str(), attempt = delivery, error = %error, "job failed, will be retried");
    Err(JobError::Store(error.to_string()).into())
}

/// Full-jitter exponential backoff: a random wait up to `base × 2^(n-1)`, capped.
pub fn backoff(n: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(cap);
    let millis = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

/// Runs workers until `shutdown` resolves (or, with `exit_when_idle`, until the queue is
/// idle), restarting a worker whose stream ends with an error. Returns what the jobs did.
pub async fn run(
    applier: Applier,
    queue: Queue,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Tally {
    let (batches, requests) = mpsc::channel(MAX_BATCH * 4);
    // Audit rows of removals whose batch could not write them (an outage, a crash of any
    // replica): written from the outbox while the workers run, and once more at the end.
    let drainer = tokio::spawn(drain_outbox(applier.clone()));
    let finisher = applier.clone();
    let batcher = tokio::spawn(batch_loop(applier, requests));
    let handler = Arc::new(Handler {
        batches,
        pacer: queue.pacer().clone(),
        options: options.clone(),
        tally: Mutex::new(Tally::default()),
    });
    let shutdown = shutdown.boxed().shared();
    let mut failures = 0u32;
    loop {
        let name = format!(
            "{}-{}",
            options.name_prefix,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        // Before the library's first fetch: never let it see an unbounded number of due ids.
        if let Err(err) = queue.promote_due().await {
            tracing::warn!(error = %err, "promoting due jobs failed");
        }
        let storage =
            RedisStorage::<Vec<u8>>::new(queue.connection()).with_config(queue.config().clone());
        let backend = Gated::new(storage.with_codec(RawJson), queue.pacer().clone());
        let worker = WorkerBuilder::new(name.as_str())
            .backend(backend)
            .data(handler.clone())
            .concurrency(options.concurrency.max(1))
            .build(handle);
        let watcher = {
            let (queue, shutdown) = (queue.clone(), shutdown.clone());
            let exit_when_idle = options.exit_when_idle;
            move |ctx: WorkerContext| {
                let (queue, shutdown) = (queue.clone(), shutdown.clone());
                async move {
                    tokio::select! {
                        () = shutdown => {}
                        () = tend(&queue, exit_when_idle) => {}
                    }
                    ctx.stop()
                }
            }
        };
        tracing::info!(worker.name = %name, "worker starting");
        match worker.run_with_ctx(watcher).await {
            Ok(()) => {
                if let Err(err) = queue.unregister(&name).await {
                    tracing::warn!(worker.name = %name, error = %err, "could not unregister the worker");
                }
                break;
            }
            Err(err) => {
                if shutdown.clone().now_or_never().is_some() {
                    break;
                }
                failures += 1;
                handler.tally().restarts += 1;
                janitor_metrics::worker_restarted();
                let wait = backoff(
                    failures.min(6),
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                );
                tracing::warn!(worker.name = %name, error = %err, restart_in_ms = wait.as_millis() as u64, "worker stopped on an error; restarting under a new name");
                tokio::select! {
                    () = shutdown.clone() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    let tally = handler.tally().clone();
    drop(handler);
    let _ = batcher.await;
    drainer.abort();
    if let Err(err) = finisher.drain_outbox(Duration::ZERO).await {
        tracing::warn!(error = %err, "writing the audit outbox's leftovers failed; the next worker will");
    }
    tally
}

/// How often a worker writes the audit outbox's leftovers, and how old an entry must be
/// (younger ones belong to a batch still writing them).
const OUTBOX_EVERY: Duration = Duration::from_secs(5);
const OUTBOX_GRACE: Duration = Duration::from_secs(10);

async fn drain_outbox(applier: Applier) {
    let mut ticker = tokio::time::interval(OUTBOX_EVERY);
    loop {
        ticker.tick().await;
        match applier.drain_outbox(OUTBOX_GRACE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "audit rows written from the outbox"),
            Err(err) => {
                tracing::warn!(error = %err, "writing audit rows from the outbox failed; retrying")
            }
        }
    }
}

/// Keeps the queue inside the library's safe envelope (promoting due ids in bounded
/// chunks), wakes the worker when jobs wait (whoever pushed them) and, with
/// `exit_when_idle`, returns once the queue has stayed idle for this queue over two
/// consecutive checks. Checks at the pacer's pace: every `poll_interval` while jobs flow,
/// every `idle_poll_interval` once idle.
async fn tend(queue: &Queue, exit_when_idle: bool) {
    let mut idle_checks = 0;
    loop {
        tokio::time::sleep(queue.pacer().interval()).await;
        match queue.promote_scheduled().await {
            // Work is waiting (pushed by any process): fetch now, and quickly until it is
            // done.
            Ok(waiting) if waiting > 0 => queue.pacer().wake(),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "promoting due jobs failed");
                idle_checks = 0;
                continue;
            }
        }
        if exit_when_idle {
            match queue.is_idle().await {
                Ok(true) => idle_checks += 1,
                Ok(false) | Err(_) => idle_checks = 0,
            }
            if idle_checks >= 2 {
                return;
            }
        }
    }
}
