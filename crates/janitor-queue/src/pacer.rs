//! How often a worker looks for work: quickly while jobs flow, slowly while the queue is
//! idle, and at once when work is waiting.
//!
//! A look is the worker's `tend` check: one pipeline of two plain commands (`ZCOUNT` of
//! the due retries, `LLEN` of the active list), every `poll_interval` while jobs flow and
//! every `idle_poll_interval` once [`BUSY_POLLS`] polls' time has passed without a job or a
//! push. The library's `fetch_next` (a script, tens of microseconds of Redis even when it
//! finds nothing, hundreds on a contended hour) runs only when a look finds jobs waiting,
//! when this process pushed some (the producer of `janitor run`, the skip intake wake the
//! worker at once), while jobs flow, and as a fallback every [`FALLBACK_POLLS`] idle
//! intervals. The fetch sees exactly what the look counts (the active list, the due
//! retries), so the fallback only bounds the damage of a look that went wrong.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

/// After this many quick polls' time without a job (or a push), a worker polls at its idle
/// interval. Short on purpose: a due pass pushes once a second and its jobs are fetched
/// at once (the push wakes the worker), so quick polls in between would find nothing.
pub const BUSY_POLLS: u32 = 4;

/// An idle worker fetches without being woken once per this many idle intervals.
pub const FALLBACK_POLLS: u32 = 4;

/// Shared by a queue's clones in one process.
#[derive(Clone)]
pub struct Pacer {
    inner: Arc<Inner>,
}

struct Inner {
    busy: Duration,
    idle: Duration,
    origin: Instant,
    /// Milliseconds after `origin` of the last job or push, plus one (0: never).
    last_busy: AtomicU64,
    pushed: AtomicBool,
    waker: AtomicWaker,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("busy", &self.inner.busy)
            .field("idle", &self.inner.idle)
            .finish_non_exhaustive()
    }
}

impl Pacer {
    pub fn new(busy: Duration, idle: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                busy,
                idle: idle.max(busy),
                origin: Instant::now(),
                last_busy: AtomicU64::new(0),
                pushed: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            }),
        }
    }

    fn mark(&self) {
        let ms = self.inner.origin.elapsed().as_millis() as u64 + 1;
        self.inner.last_busy.fetch_max(ms, Ordering::Relaxed);
    }

    /// A job is being handled: keep polling quickly.
    pub fn busy(&self) {
        self.mark();
    }

    /// Jobs wait (this process pushed them, or a check of the queue found them): wake the
    /// worker now.
    pub fn wake(&self) {
        self.mark();
        self.inner.pushed.store(true, Ordering::Release);
        self.inner.waker.wake();
    }

    /// Takes the wake-up left by [`Self::wake`] (true once per batch of wake-ups),
    /// registering `waker` for the next one first so none is missed in between.
    pub fn take_wake(&self, waker: &Waker) -> bool {
        self.inner.waker.register(waker);
        self.inner.pushed.swap(false, Ordering::AcqRel)
    }

    /// The wait before the next poll: `busy` within [`BUSY_POLLS`] × `busy` of the last job
    /// or push, else `idle`.
    pub fn interval(&self) -> Duration {
        let last = self.inner.last_busy.load(Ordering::Relaxed);
        let now = self.inner.origin.elapsed().as_millis() as u64 + 1;
        let window = (self.inner.busy * BUSY_POLLS).as_millis() as u64;
        if last != 0 && now.saturating_sub(last) <= window {
            self.inner.busy
        } else {
            self.inner.idle
        }
    }

    /// The longest a worker goes without fetching when nothing wakes it.
    pub fn fallback(&self) -> Duration {
        self.inner.idle * FALLBACK_POLLS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_until_a_job_or_a_push_then_busy_for_a_few_polls() {
        let pacer = Pacer::new(Duration::from_millis(50), Duration::from_millis(250));
        assert_eq!(pacer.interval(), Duration::from_millis(250));
        pacer.busy();
        assert_eq!(pacer.interval(), Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(50) * (BUSY_POLLS + 1));
        assert_eq!(pacer.interval(), Duration::from_millis(250), "idle again");
        let pacer = Pacer::new(Duration::from_millis(50), Duration::from_millis(250));
        let waker = futures::task::noop_waker();
        assert!(!pacer.take_wake(&waker));
        pacer.wake();
        assert_eq!(pacer.interval(), Duration::from_millis(50));
        assert!(pacer.take_wake(&waker));
        assert!(!pacer.take_wake(&waker), "one wake-up per push");
        assert_eq!(
            pacer.fallback(),
            Duration::from_millis(250) * FALLBACK_POLLS
        );
    }

    #[test]
    fn idle_is_never_quicker_than_busy() {
        let pacer = Pacer::new(Duration::from_millis(300), Duration::from_millis(100));
        assert_eq!(pacer.interval(), Duration::from_millis(300));
    }
}
