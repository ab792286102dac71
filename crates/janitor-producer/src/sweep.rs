//! One sweep: observe both stores, turn every actionable verdict into a job, enqueue.
//!
//! Jobs are pushed in batches as they are found (memory bounded by the batch), except
//! reclaims: those wait for the end of the pass so the blast-radius breaker can see
//! how many there are before any is pushed. At most as many are held as the queue has
//! room for (the backlog cap), so memory never grows with the number of slots or rows.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use janitor_core::{CleanupJob, JobKind, Policy, Timestamp};
use janitor_queue::{EnqueueReport, Queue, QueueError};
use janitor_store::{ExecutionStore, SlotStore, StoreError};
use serde::Serialize;

use crate::lease::{LeaseOrRedis, SweepLease};
use crate::{observe, Finding, ObserveStats};

/// Jobs pushed per `batch_push` call.
const PUSH_BATCH: usize = 500;

/// Stops a sweep from reclaiming too much at once: a fleet-wide outage looks like every
/// slot going stale, and mass reaping then does harm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Breaker {
    /// Trip when reclaims exceed this fraction of the slots seen…
    pub max_fraction: f64,
    /// …and this absolute number.
    pub min_reclaims: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            max_fraction: 0.5,
            min_reclaims: 100,
        }
    }
}

impl Breaker {
    pub fn trips(&self, reclaims: u64, slots: u64) -> bool {
        reclaims > self.min_reclaims && (reclaims as f64) > self.max_fraction * slots as f64
    }
}

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
}

/// Per job kind: what was found and what became of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
}

/// What one sweep did.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub now: Timestamp,
    pub dry_run: bool,
    /// How long the pass took, in milliseconds.
    pub elapsed_ms: u64,
    /// The sweep lease's fencing token, when the sweep held one.
    pub fence: Option<u64>,
    pub breaker_tripped: bool,
    /// Stats of the observation; `stats.truncated` means the pass stopped early because the
    /// queue was full, so more work may remain than was found.
    pub stats: ObserveStats,
    pub kinds: BTreeMap<&'static str, KindReport>,
    /// With `dry_run`: the jobs that would have been enqueued.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_enqueue: Vec<CleanupJob>,
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

struct Pusher<'a> {
    queue: &'a Queue,
    lease: Option<&'a SweepLease>,
    dry_run: bool,
    /// Jobs the queue can still take in this pass (the backlog cap minus what is queued).
    room: u64,
    kinds: BTreeMap<&'static str, KindReport>,
    would_enqueue: Vec<CleanupJob>,
}

impl Pusher<'_> {
    async fn push(&mut self, jobs: &mut Vec<CleanupJob>) -> Result<(), SweepError> {
        if jobs.is_empty() {
            return Ok(());
        }
        if self.dry_run {
            self.would_enqueue.append(jobs);
            return Ok(());
        }
        if let Some(lease) = self.lease {
            lease.ensure().await?;
        }
        for chunk in jobs.chunks(PUSH_BATCH) {
            // One call per kind keeps the per-kind report exact.
            for kind in JobKind::ALL {
                let of_kind: Vec<CleanupJob> =
                    chunk.iter().filter(|j| j.kind == kind).cloned().collect();
                if of_kind.is_empty() {
                    continue;
                }
                let report = self.queue.enqueue(&of_kind, Duration::ZERO).await?;
                self.room = self.room.saturating_sub(report.enqueued);
                self.kinds
                    .entry(kind.as_str())
                    .or_default()
                    .queue
                    .add(report);
            }
        }
        jobs.clear();
        Ok(())
    }
}

/// Runs one sweep at `slots`' Redis time. With a lease, re-checks it before every push.
///
/// With `force`, the pass stops early once the queue is full — what does not fit is found
/// again by the next one. Without it the pass always completes, so the breaker judges every
/// reclaim. A sweep that is not a dry run is recorded in the metrics.
pub async fn sweep(
    slots: &SlotStore,
    rows: &ExecutionStore,
    queue: &Queue,
    policy: &Policy,
    lease: Option<&SweepLease>,
    options: &SweepOptions,
) -> Result<SweepReport, SweepError> {
    let result = sweep_pass(slots, rows, queue, policy, lease, options).await;
    if !options.dry_run {
        match &result {
            Ok(report) => record(report),
            Err(_) => janitor_metrics::sweep_failed(),
        }
    }
    result
}

fn record(report: &SweepReport) {
    janitor_metrics::sweep_finished(&janitor_metrics::SweepFigures {
        elapsed: Duration::from_millis(report.elapsed_ms),
        slots: report.stats.slots_scanned,
        rows: report.stats.rows_scanned,
        corrupt_slots: report.stats.corrupt_slots,
        corrupt_rows: report.stats.corrupt_rows,
        breaker_tripped: report.breaker_tripped,
        at_unix: janitor_core::to_unix_seconds(report.now),
    });
    for (kind, k) in &report.kinds {
        janitor_metrics::sweep_kind(
            kind,
            &janitor_metrics::KindFigures {
                found: k.found,
                enqueued: k.queue.enqueued,
                already_queued: k.queue.already_queued,
                dead: k.queue.dead,
                deferred: k.queue.deferred,
            },
        );
    }
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
    let mut pusher = Pusher {
        queue,
        lease,
        dry_run: options.dry_run,
        room,
        kinds: BTreeMap::new(),
        would_enqueue: Vec::new(),
    };
    let mut pending: Vec<CleanupJob> = Vec::with_capacity(PUSH_BATCH);
    // Reclaims wait for the end of the pass (the breaker sees them all first); no
    // more are held than the queue has room for.
    let mut reclaims: Vec<CleanupJob> = Vec::new();
    let mut reclaims_found = 0u64;
    let mut slots_seen = 0u64;
    let mut breaker_tripped = false;
    let mut reclaims_pushed = 0u64;
    let stats = observe::<SweepError>(slots, rows, policy, now, options.batch.max(1), async |finding| {
        let pair = match finding {
            Finding::Pair(pair) => pair,
            Finding::End => {
                pusher.push(&mut pending).await?;
                breaker_tripped = options.breaker.trips(reclaims_found, slots_seen);
                if breaker_tripped && !options.force {
                    tracing::error!(
                        alert = "janitor_breaker_tripped",
                        reclaims = reclaims_found,
                        slots = slots_seen,
                        "blast-radius breaker tripped: not enqueueing any reclaim this pass (re-run with --force to override)"
                    );
                } else {
                    reclaims_pushed += reclaims.len() as u64;
                    pusher.push(&mut reclaims).await?;
                }
                return Ok(ControlFlow::Continue(()));
            }
            Finding::CorruptSlot(_) | Finding::CorruptRow(_) => return Ok(ControlFlow::Continue(())),
        };
        if pair.slot.is_some() {
            slots_seen += 1;
        }
        let Some(job) = CleanupJob::for_verdict(&pair.verdict, pair.slot.as_ref(), pair.row.as_ref()) else {
            return Ok(ControlFlow::Continue(()));
        };
        pusher.kinds.entry(job.kind.as_str()).or_default().found += 1;
        if job.kind == JobKind::ReclaimSlot {
            reclaims_found += 1;
            if (reclaims.len() as u64) < pusher.room {
                reclaims.push(job);
            } else if options.force {
                // Full, and the breaker is overridden: nothing more can be used this pass.
                return Ok(ControlFlow::Break(()));
            }
        } else {
            pending.push(job);
            if pending.len() >= PUSH_BATCH || pusher.room <= pending.len() as u64 {
                pusher.push(&mut pending).await?;
                // Only with the breaker overridden may a full queue end the pass early:
                // otherwise it runs to its end so the breaker judges every reclaim.
                if pusher.room == 0 && options.force {
                    return Ok(ControlFlow::Break(()));
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    })
    .await?;
    // Stopped early (force only): the held reclaims still go out.
    if stats.truncated && !reclaims.is_empty() {
        reclaims_pushed += reclaims.len() as u64;
        pusher.push(&mut reclaims).await?;
    }
    pusher.push(&mut pending).await?;
    // Reclaims found but never handed to the queue (no room) are deferred too.
    if (options.force || !breaker_tripped) && reclaims_found > reclaims_pushed {
        pusher
            .kinds
            .entry(JobKind::ReclaimSlot.as_str())
            .or_default()
            .queue
            .deferred += reclaims_found - reclaims_pushed;
    }
    Ok(SweepReport {
        now,
        dry_run: options.dry_run,
        elapsed_ms: started.elapsed().as_millis() as u64,
        fence: lease.map(SweepLease::token),
        breaker_tripped,
        stats,
        kinds: pusher.kinds,
        would_enqueue: pusher.would_enqueue,
    })
}

#[cfg(test)]
mod tests {
    use super::Breaker;

    #[test]
    fn breaker_needs_both_thresholds() {
        let b = Breaker::default();
        assert!(!b.trips(100, 100), "not more than 100");
        assert!(b.trips(101, 150));
        assert!(!b.trips(101, 300), "not more than half");
        assert!(!b.trips(50, 60));
        assert!(b.trips(1_000, 1_000));
    }
}
