//! One sweep: observe both stores, turn every actionable verdict into a job, enqueue.
//!
//! Jobs are held until the end of the pass, so the blast-radius breaker ([`crate::breaker`])
//! sees every guarded effect before any goes out. No more are held than the queue has room
//! for (the backlog cap), so memory never grows with the number of slots or rows.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use janitor_core::{to_unix_seconds, CleanupJob, JobKind, Policy, Timestamp};
use janitor_queue::{EnqueueReport, Existing, Queue, QueueError};
use janitor_store::{CensusWalk, ExecutionStore, RowCursor, SlotStore, StoreError};
use serde::Serialize;

use crate::breaker::{self, Breaker, BreakerState, Decision, PassFigures};
use crate::due::{self, DueIndex};
use crate::lease::{LeaseOrRedis, SweepLease};
use crate::observe::Scope;
use crate::{observe, Finding, ObserveStats};

/// Jobs pushed per `batch_push` call.
const PUSH_BATCH: usize = 500;
/// The smallest push a forced pass makes while streaming (see `sweep_pass`).
const STREAM_MIN_PUSH: u64 = 64;

/// How to sweep.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// Find and report, enqueue nothing.
    pub dry_run: bool,
    /// Enqueue reclaims even when the breaker trips.
    pub force: bool,
    pub breaker: Breaker,
    /// Slots / rows read per batch.
    pub batch: usize,
    /// The database as the operator named it (password redacted), for the breaker's
    /// wrong-database message.
    pub database: String,
    /// Leave the deadline index alone (no due passes read it: they are off).
    pub no_index: bool,
    /// Index only the pairs due within this long of the sweep (`None`: every pair). Each
    /// later full sweep indexes the pairs that have come within it, so a horizon longer
    /// than the time between two sweeps loses none, and the index holds what is nearly
    /// due rather than the whole fleet.
    pub index_horizon: Option<Duration>,
    /// With `force`: start the row pass where the last forced pass stopped
    /// ([`SweepReport::resume`]), so a catch-up's passes read each open row about once
    /// instead of reading again every row the last ones queued. Such a pass sees part of
    /// the fleet: it merges into the deadline index and leaves the breaker's fleet alone.
    /// Ignored without `force` (an unforced pass always sees everything).
    pub resume: Option<RowCursor>,
    /// How much of the keyspace the census of slot ZSETs walks this pass
    /// ([`census_share`] for a sweep on an interval).
    pub census: CensusWalk,
}

/// How long a walk of the whole keyspace by the census of slot ZSETs takes by default, spread
/// over the sweeps of that time (the platform's own cleanup runs every 300 s).
pub const DEFAULT_CENSUS_INTERVAL: Duration = Duration::from_secs(300);

/// The census walk of a sweep that runs every `sweep_interval` when a walk of the whole
/// keyspace should take `census_interval`: that share of the keyspace a pass, and the whole
/// keyspace at once when no walk completed within two census intervals (the first sweep, or
/// walks that stalled).
pub fn census_share(sweep_interval: Duration, census_interval: Duration) -> CensusWalk {
    CensusWalk::Share {
        fraction: sweep_interval.as_secs_f64() / census_interval.as_secs_f64().max(1e-3),
        max_age: census_interval * 2,
    }
}

/// Per job kind: what was found and what became of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KindReport {
    pub found: u64,
    #[serde(flatten)]
    pub queue: EnqueueReport,
}

impl SweepReport {
    /// Whether work was left for a later pass (deferred at the cap, or not even scanned).
    pub fn has_more(&self) -> bool {
        self.stats.truncated || self.kinds.values().any(|k| k.queue.deferred > 0)
    }

    /// Where the next forced pass may start ([`SweepOptions::resume`]): set when this one
    /// stopped in its row pass at the backlog cap with everything it found before the stop
    /// queued (none deferred by a push).
    pub fn resume(&self) -> Option<RowCursor> {
        self.stats.resume.clone()
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SweepReport {
    pub now: Timestamp,
    pub dry_run: bool,
    /// How long the pass took, in milliseconds.
    pub elapsed_ms: u64,
    /// The sweep lease's fencing token, when the sweep held one.
    pub fence: Option<u64>,
    /// Whether the breaker held guarded work back this pass (holding, draining or refused).
    pub breaker_tripped: bool,
    /// What the breaker decided, and on what.
    pub breaker: BreakerReport,
    /// Stats of the observation; `stats.truncated` means the pass stopped early because the
    /// queue was full, so more work may remain than was found.
    pub stats: ObserveStats,
    /// Pairs written to the deadline index for due passes (`None` for a dry run).
    pub due_index: Option<u64>,
    pub kinds: BTreeMap<&'static str, KindReport>,
    /// Runs janitor failed in the last 24 hours that the platform has since completed
    /// (a late `success` wins over a cleanup-written `failed`; janitor never writes them
    /// again). Counted at most once a minute per process; `None` when not counted this
    /// sweep (or a dry run) or when the count could not be read.
    pub completed_after_failed: Option<u64>,
    /// With `dry_run`: the jobs that would have been enqueued.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_enqueue: Vec<CleanupJob>,
}

/// The breaker's side of one pass.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BreakerReport {
    /// `closed`, `holding`, `draining`, or `refused` (the wrong-database signature).
    pub state: &'static str,
    #[serde(flatten)]
    pub decision: Decision,
    /// Guarded effects found, and those that became due since the previous pass.
    pub guarded: u64,
    pub guarded_new: u64,
    /// Slots seen, and those whose run has no row at all.
    pub slots: u64,
    pub rowless_slots: u64,
    /// Guarded jobs pushed this pass, and held back for a later one.
    pub pushed: u64,
    pub held: u64,
    /// Why the sweep refused to act, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Lease(#[from] LeaseOrRedis),
}

pub(crate) struct Pusher<'a> {
    queue: &'a Queue,
    lease: Option<&'a SweepLease>,
    dry_run: bool,
    /// Jobs the queue can still take in this pass (the backlog cap minus what is queued).
    room: u64,
    kinds: BTreeMap<&'static str, KindReport>,
    would_enqueue: Vec<CleanupJob>,
}

impl<'a> Pusher<'a> {
    pub(crate) fn new(
        queue: &'a Queue,
        lease: Option<&'a SweepLease>,
        dry_run: bool,
        room: u64,
    ) -> Self {
        Self {
            queue,
            lease,
            dry_run,
            room,
            kinds: BTreeMap::new(),
            would_enqueue: Vec::new(),
        }
    }

    /// Jobs the queue can still take in this pass.
    pub(crate) fn room(&self) -> u64 {
        self.room
    }

    pub(crate) fn into_kinds(self) -> BTreeMap<&'static str, KindReport> {
        self.kinds
    }

    /// Pushes `jobs` (emptying it); returns how many were enqueued.
    pub(crate) async fn push(&mut self, jobs: &mut Vec<CleanupJob>) -> Result<u64, SweepError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        if self.dry_run {
            let n = jobs.len() as u64;
            self.would_enqueue.append(jobs);
            return Ok(n);
        }
        if let Some(lease) = self.lease {
            lease.ensure().await?;
        }
        let mut enqueued = 0;
        for chunk in jobs.chunks(PUSH_BATCH) {
            // One call per kind keeps the per-kind report exact.
            for kind in JobKind::ALL {
                let of_kind: Vec<CleanupJob> =
                    chunk.iter().filter(|j| j.kind == kind).cloned().collect();
                if of_kind.is_empty() {
                    continue;
                }
                let report = self.queue.enqueue(&of_kind, Duration::ZERO).await?;
                self.room = if report.deferred > 0 {
                    0 // the queue reached its cap (other pushers, slow workers)
                } else {
                    self.room.saturating_sub(report.enqueued)
                };
                enqueued += report.enqueued;
                self.kinds
                    .entry(kind.as_str())
                    .or_default()
                    .queue
                    .add(report);
            }
        }
        jobs.clear();
        Ok(enqueued)
    }

    /// Counts `n` jobs of `kind` as deferred (found, not handed to the queue this pass).
    pub(crate) fn defer(&mut self, kind: JobKind, n: u64) {
        if n > 0 {
            self.kinds.entry(kind.as_str()).or_default().queue.deferred += n;
        }
    }
}

/// Runs one sweep at `slots`' Redis time. With a lease, re-checks it before every push.
///
/// With `force`, the pass stops early once the queue is full — what does not fit is found
/// again by the next one — and the breaker is overridden. Without it the pass always
/// completes, so the breaker judges every guarded effect. A sweep that is not a dry run is
/// recorded in the metrics.
pub async fn sweep(
    slots: &SlotStore,
    rows: &ExecutionStore,
    queue: &Queue,
    policy: &Policy,
    lease: Option<&SweepLease>,
    options: &SweepOptions,
) -> Result<SweepReport, SweepError> {
    let _renewal = lease.map(SweepLease::keep_alive);
    let result = sweep_pass(slots, rows, queue, policy, lease, options).await;
    if !options.dry_run {
        match &result {
            Ok(report) => record(report),
            Err(_) => janitor_metrics::sweep_failed(),
        }
    }
    result
}

/// How often rule 8's activities are read, across every producer of a queue. Its
/// thresholds are in hours and a finished run's leftover activity is rare, while the read
/// visits every `started` activity — one per open run: at a million runs it cost a full
/// sweep a second of database CPU, every sweep.
pub const ACTIVITY_PASS_INTERVAL_SECS: u64 = 300;

/// Whether this sweep reads the activities rule 8 can close: the first sweep of a queue
/// in each [`ACTIVITY_PASS_INTERVAL_SECS`] claims the turn (`SET NX EX`, so replicas and
/// one-shot commands share it). A dry run always reads them and claims nothing.
async fn activity_turn(queue: &Queue, dry_run: bool) -> Result<bool, redis::RedisError> {
    if dry_run {
        return Ok(true);
    }
    let claimed: Option<String> = redis::cmd("SET")
        .arg(format!("{}:janitor:activity-pass", queue.keys().name()))
        .arg(std::process::id())
        .arg("NX")
        .arg("EX")
        .arg(ACTIVITY_PASS_INTERVAL_SECS)
        .query_async(&mut queue.connection())
        .await?;
    Ok(claimed.is_some())
}

/// How often one process counts the runs completed after janitor failed them: the count
/// reads a day of janitor's fails, too much for every sweep of a catch-up.
const COMPLETED_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Whether this process's count is due (the first sweep of a process always counts).
fn completed_check_due() -> bool {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let due = last.is_none_or(|at| at.elapsed() >= COMPLETED_CHECK_INTERVAL);
    if due {
        *last = Some(std::time::Instant::now());
    }
    due
}

fn record(report: &SweepReport) {
    if let Some(n) = report.due_index {
        janitor_metrics::due_index_size(n);
    }
    if let Some(n) = report.completed_after_failed {
        janitor_metrics::completed_after_failed(n);
    }
    janitor_metrics::sweep_finished(&janitor_metrics::SweepFigures {
        elapsed: Duration::from_millis(report.elapsed_ms),
        slots: report.stats.slots_scanned,
        rows: report.stats.rows_scanned,
        corrupt_slots: report.stats.corrupt_slots,
        corrupt_rows: report.stats.corrupt_rows,
        breaker_tripped: report.breaker_tripped,
        breaker_state: report.breaker.state,
        breaker_trip: matches!(
            report.breaker.decision,
            Decision::Hold { tripped: true, .. }
        ),
        at_unix: janitor_core::to_unix_seconds(report.now),
    });
    record_kinds(&report.kinds);
}

/// A pass's findings and pushes per job kind, in the metrics (sweeps and due passes alike).
pub(crate) fn record_kinds(kinds: &BTreeMap<&'static str, KindReport>) {
    for (kind, k) in kinds {
        janitor_metrics::sweep_kind(
            kind,
            &janitor_metrics::KindFigures {
                found: k.found,
                enqueued: k.queue.enqueued,
                already_queued: k.queue.already_queued,
                dead: k.queue.dead,
                redriven: k.queue.redriven,
                deferred: k.queue.deferred,
            },
        );
    }
}

/// Counts `pair`'s actionable verdict in `figures` when the breaker guards it (and as new
/// when it became due after `previous`). Returns whether it is guarded and when it became
/// due (unix seconds; `-inf` when unknown).
pub(crate) fn count_guarded(
    figures: &mut PassFigures,
    pair: &crate::Pair,
    policy: &Policy,
    previous: f64,
) -> (bool, f64) {
    let guarded = pair.verdict.is_guarded();
    let due = pair
        .verdict
        .due_since(pair.slot.as_ref(), policy)
        .map_or(f64::NEG_INFINITY, to_unix_seconds);
    if guarded {
        figures.guarded += 1;
        if due > previous {
            figures.guarded_new += 1;
        }
    }
    (guarded, due)
}

/// A job held until the end of the pass.
struct Held {
    job: CleanupJob,
    /// Guarded by the breaker, and the instant it became due (unix seconds).
    guarded: bool,
    due: f64,
}

/// Streaming (a forced pass): pushes every held job now, counting the guarded ones handed
/// to the queue in `streamed_guarded`.
async fn hand_on(
    held: &mut Vec<Held>,
    pusher: &mut Pusher<'_>,
    streamed_guarded: &mut u64,
) -> Result<(), SweepError> {
    *streamed_guarded += held.iter().filter(|h| h.guarded).count() as u64;
    let mut out: Vec<CleanupJob> = held.drain(..).map(|h| h.job).collect();
    pusher.push(&mut out).await?;
    Ok(())
}

async fn sweep_pass(
    slots: &SlotStore,
    rows: &ExecutionStore,
    queue: &Queue,
    policy: &Policy,
    lease: Option<&SweepLease>,
    options: &SweepOptions,
) -> Result<SweepReport, SweepError> {
    let started = std::time::Instant::now();
    let now = slots.server_time().await?;
    let room = if options.dry_run {
        u64::MAX
    } else {
        queue
            .settings()
            .backlog_cap
            .saturating_sub(queue.backlog().await?)
    };
    let previous = breaker::load(&queue.connection(), queue.keys().name())
        .await
        .map_err(QueueError::from)?
        .previous_pass
        .unwrap_or(f64::NEG_INFINITY);
    // The deadline index is rebuilt by every pass that acts (see `crate::due`).
    let index = DueIndex::new(queue.connection(), queue.keys().name());
    let mut build = (!options.dry_run && !options.no_index).then(|| index.build());
    let index_until = options
        .index_horizon
        .and_then(|h| chrono::TimeDelta::from_std(h).ok())
        .and_then(|h| now.checked_add_signed(h));
    let mut pusher = Pusher {
        queue,
        lease,
        dry_run: options.dry_run,
        room,
        kinds: BTreeMap::new(),
        would_enqueue: Vec::new(),
    };
    // Every job waits for the end of the pass (the breaker sees them all first); no more
    // are held than the queue has room for. With `force` there is no breaker to wait for:
    // jobs go out a batch at a time as they are found, so the workers start at once; only
    // the jobs the queue did not already hold use up its room (a catch-up's passes find
    // again the jobs still queued from the last one), and the push defers what does not
    // fit.
    let mut held: Vec<Held> = Vec::new();
    let stream = options.force && !options.dry_run;
    // Guarded jobs handed to the queue while streaming (pushed or found already queued).
    let mut streamed_guarded = 0u64;
    let mut overflow: BTreeMap<JobKind, u64> = BTreeMap::new();
    let mut figures = PassFigures {
        now: to_unix_seconds(now),
        ..PassFigures::default()
    };
    let activities = activity_turn(queue, options.dry_run)
        .await
        .map_err(QueueError::from)?;
    // Only a forced pass may see part of the fleet (see `SweepOptions::resume`).
    let after = options.resume.clone().filter(|_| options.force);
    let partial = after.is_some();
    let scope = Scope {
        batch: options.batch.max(1),
        activities,
        after,
        may_stop_early: options.force,
        census: options.census,
    };
    let mut stats = observe::<SweepError>(slots, rows, policy, now, &scope, async |finding| {
        let pair = match finding {
            Finding::Pair(pair) => pair,
            // The row pass is over: what it found goes out now, not after the slot pass's
            // census (the last pass of a catch-up held its last jobs back for the whole
            // walk of the keyspace, while the workers had nothing left to do).
            Finding::RowsDone if stream => {
                hand_on(&mut held, &mut pusher, &mut streamed_guarded).await?;
                return Ok(ControlFlow::Continue(()));
            }
            // Closing an activity no run can still finish changes no run and no slot:
            // unguarded, like finalizing a skipped run.
            Finding::Activity(found) => {
                let Some(job) = CleanupJob::for_activity(&found.verdict, &found.activity) else {
                    return Ok(ControlFlow::Continue(()));
                };
                pusher.kinds.entry(job.kind.as_str()).or_default().found += 1;
                if (held.len() as u64) < pusher.room {
                    held.push(Held {
                        job,
                        guarded: false,
                        due: f64::NEG_INFINITY,
                    });
                } else {
                    *overflow.entry(job.kind).or_default() += 1;
                    if options.force {
                        return Ok(ControlFlow::Break(()));
                    }
                }
                return Ok(ControlFlow::Continue(()));
            }
            _ => return Ok(ControlFlow::Continue(())),
        };
        figures.judged += 1;
        if pair.slot.is_some() {
            figures.slots += 1;
            if pair.row.is_none() {
                figures.rowless_slots += 1;
            }
        }
        let Some(job) =
            CleanupJob::for_verdict(&pair.verdict, pair.slot.as_ref(), pair.row.as_ref())
        else {
            if let (Some(build), Some(at)) = (build.as_mut(), due::recheck_at(&pair, now)) {
                if index_until.is_none_or(|until| at <= until) {
                    if let Some(member) = due::member_of(&pair) {
                        build.add(member, at).await.map_err(StoreError::from)?;
                    }
                }
            }
            return Ok(ControlFlow::Continue(()));
        };
        pusher.kinds.entry(job.kind.as_str()).or_default().found += 1;
        let (guarded, due) = count_guarded(&mut figures, &pair, policy, previous);
        // Streaming, a job is held while the queue has any room: the push tells which
        // of them it already held (those make room) and defers what does not fit.
        let admit = if stream {
            pusher.room > 0
        } else {
            (held.len() as u64) < pusher.room
        };
        if admit {
            held.push(Held { job, guarded, due });
            // Pushed when a batch is ready, or once the held jobs would fill the room
            // (never in pushes of fewer than STREAM_MIN_PUSH: a small room behind many
            // queued jobs must not cost a push per job).
            if stream
                && (held.len() >= PUSH_BATCH
                    || held.len() as u64 >= pusher.room.max(STREAM_MIN_PUSH))
            {
                hand_on(&mut held, &mut pusher, &mut streamed_guarded).await?;
            }
        } else if options.force {
            // Full, and the breaker is overridden: nothing more can be used this pass.
            *overflow.entry(job.kind).or_default() += 1;
            return Ok(ControlFlow::Break(()));
        } else {
            *overflow.entry(job.kind).or_default() += 1;
        }
        Ok(ControlFlow::Continue(()))
    })
    .await?;

    // Read again under the lock: this process's due passes write it during the sweep.
    let breaker_lock = breaker::LOCK.lock().await;
    let mut state: BreakerState = breaker::load(&queue.connection(), queue.keys().name())
        .await
        .map_err(QueueError::from)?;
    let decision = options.breaker.judge(&mut state, &figures, options.force);
    let index_size = match build {
        None => None,
        Some(build) if matches!(decision, Decision::Refuse { .. }) => {
            // A wrong view of the world must not drive due passes either.
            build.discard().await.map_err(StoreError::from)?;
            index.clear().await.map_err(StoreError::from)?;
            Some(0)
        }
        Some(build) => {
            // Only a pass that saw every pair replaces the index and measures the fleet.
            let complete = !stats.truncated && !partial;
            if complete {
                state.fleet = figures.judged;
            }
            Some(build.publish(complete).await.map_err(StoreError::from)?)
        }
    };
    let refused = match decision {
        Decision::Refuse { rowless, slots } => Some(format!(
            "{rowless} of {slots} slots have no row in {}: is DATABASE_URL the platform's database?",
            options.database
        )),
        _ => None,
    };
    match (&decision, &refused) {
        (_, Some(reason)) => tracing::error!(
            alert = "janitor_wrong_database",
            rowless = figures.rowless_slots,
            slots = figures.slots,
            "sweep refused to act: {reason} (fix the setting, or re-run with --force)"
        ),
        (Decision::Hold { until, tripped: true }, _) => tracing::error!(
            alert = "janitor_breaker_tripped",
            newly_due = figures.guarded_new,
            judged = figures.judged,
            hold_until = until,
            "blast-radius breaker tripped: holding every reclaim, release and fail back for the cool-off, then draining at the configured rate (--force overrides)"
        ),
        _ => {}
    }

    // Unguarded jobs go out unless the sweep refused; guarded ones within the allowance,
    // oldest deadline first.
    let mut allowance = decision.allowance();
    let (mut guarded, unguarded): (Vec<Held>, Vec<Held>) =
        held.into_iter().partition(|h| h.guarded);
    let mut out: Vec<CleanupJob> = Vec::new();
    let mut kept_back: BTreeMap<JobKind, u64> = BTreeMap::new();
    for h in unguarded {
        if refused.is_some() {
            *kept_back.entry(h.job.kind).or_default() += 1;
        } else {
            out.push(h.job);
        }
    }
    pusher.push(&mut out).await?;
    guarded.sort_by(|a, b| a.due.total_cmp(&b.due));
    let mut already_queued = 0u64;
    let mut batch: Vec<CleanupJob> = Vec::new();
    if matches!(decision, Decision::Drain { .. }) && !options.dry_run {
        // Jobs already queued cost no allowance: pushing them is a no-op the report counts;
        // the allowance goes to work not yet queued (dead work may be re-driven: it counts).
        let ids: Vec<String> = guarded.iter().map(|h| h.job.task_id()).collect();
        let existing = queue.classify(&ids).await?;
        let (mut known, mut rest) = (Vec::new(), Vec::new());
        for (h, e) in guarded.into_iter().zip(existing) {
            match e {
                Existing::Queued => known.push(h.job),
                _ => rest.push(h),
            }
        }
        already_queued = known.len() as u64;
        pusher.push(&mut known).await?;
        guarded = rest;
    }
    for h in guarded {
        if allowance == 0 {
            *kept_back.entry(h.job.kind).or_default() += 1;
            continue;
        }
        allowance -= 1;
        batch.push(h.job);
    }
    let guarded_pushed = pusher.push(&mut batch).await?;
    Breaker::spent(&mut state, guarded_pushed);
    // The next pass may resume where this one stopped only if everything this pass found
    // before the stop is queued: a push that deferred jobs (the cap reached under a push
    // bigger than the room, or another pusher taking the room) left some behind the
    // resume point, and only a pass from the start finds them again.
    if pusher.kinds.values().any(|k| k.queue.deferred > 0) {
        stats.resume = None;
    }
    // Found but never handed to the queue (no room, or the breaker) are deferred.
    for (kind, n) in overflow.into_iter().chain(kept_back) {
        pusher.defer(kind, n);
    }
    if !options.dry_run {
        breaker::store(&queue.connection(), queue.keys().name(), &state)
            .await
            .map_err(QueueError::from)?;
    }
    drop(breaker_lock);
    let state_name = if refused.is_some() {
        "refused"
    } else {
        state.mode.as_str()
    };
    let completed_after_failed = if options.dry_run || !completed_check_due() {
        None
    } else {
        let day_ago = now - chrono::TimeDelta::hours(24);
        match rows.completed_after_failed(day_ago).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "could not count runs completed after janitor failed them");
                None
            }
        }
    };
    Ok(SweepReport {
        completed_after_failed,
        now,
        dry_run: options.dry_run,
        elapsed_ms: started.elapsed().as_millis() as u64,
        fence: lease.map(SweepLease::token),
        breaker_tripped: decision.holds_back(),
        breaker: BreakerReport {
            state: state_name,
            decision,
            guarded: figures.guarded,
            guarded_new: figures.guarded_new,
            slots: figures.slots,
            rowless_slots: figures.rowless_slots,
            pushed: guarded_pushed,
            // Neither pushed nor already in the queue: for a later pass.
            held: figures
                .guarded
                .saturating_sub(guarded_pushed + already_queued + streamed_guarded),
            refused,
        },
        stats,
        due_index: index_size,
        kinds: pusher.kinds,
        would_enqueue: pusher.would_enqueue,
    })
}
