//! One sweep: observe both stores, turn every actionable verdict into a job, enqueue.
//!
//! Jobs are pushed in batches as they are found (memory bounded by the batch), except
//! reclaims: those wait for the end of the slot pass so the blast-radius breaker can see
//! how many there are before any is pushed. Their buffer grows with the number of stale
//! slots only, never with the number of slots or rows.

use std::collections::BTreeMap;
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
    /// Keys / rows read per batch.
    pub batch: usize,
}

/// Per job kind: what was found and what became of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindReport {
    pub found: u64,
    #[serde(flatten)]
    pub queue: EnqueueReport,
}

/// What one sweep did.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub now: Timestamp,
    pub dry_run: bool,
    /// The sweep lease's fencing token, when the sweep held one.
    pub fence: Option<u64>,
    pub breaker_tripped: bool,
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
pub async fn sweep(
    slots: &SlotStore,
    rows: &ExecutionStore,
    queue: &Queue,
    policy: &Policy,
    lease: Option<&SweepLease>,
    options: &SweepOptions,
) -> Result<SweepReport, SweepError> {
    let now = slots.server_time().await?;
    let mut pusher = Pusher {
        queue,
        lease,
        dry_run: options.dry_run,
        kinds: BTreeMap::new(),
        would_enqueue: Vec::new(),
    };
    let mut pending: Vec<CleanupJob> = Vec::with_capacity(PUSH_BATCH);
    let mut reclaims: Vec<CleanupJob> = Vec::new();
    let stats = observe::<SweepError>(
        slots,
        rows,
        policy,
        now,
        options.batch.max(1),
        async |finding| {
            let Finding::Pair(pair) = finding else {
                return Ok(());
            };
            let Some(job) =
                CleanupJob::for_verdict(&pair.verdict, pair.slot.as_ref(), pair.row.as_ref())
            else {
                return Ok(());
            };
            pusher.kinds.entry(job.kind.as_str()).or_default().found += 1;
            if job.kind == JobKind::ReclaimSlot {
                reclaims.push(job);
            } else {
                pending.push(job);
                if pending.len() >= PUSH_BATCH {
                    pusher.push(&mut pending).await?;
                }
            }
            Ok(())
        },
    )
    .await?;
    pusher.push(&mut pending).await?;

    let breaker_tripped = options
        .breaker
        .trips(reclaims.len() as u64, stats.slots_scanned);
    if breaker_tripped && !options.force {
        tracing::error!(
            alert = "janitor_breaker_tripped",
            reclaims = reclaims.len(),
            slots = stats.slots_scanned,
            "blast-radius breaker tripped: not enqueueing any reclaim this pass (re-run with --force to override)"
        );
    } else {
        pusher.push(&mut reclaims).await?;
    }
    Ok(SweepReport {
        now,
        dry_run: options.dry_run,
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
