//! Enqueueing cleanup jobs and keeping the queue inside the library's safe envelope.

use std::sync::LazyLock;
use std::time::Duration;

use apalis_redis::ConnectionManager;
use janitor_core::CleanupJob;
use redis::Script;
use serde::Serialize;

use crate::{Pacer, QueueKeys};

static PROMOTE_DUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/promote_due.lua")));
static PUSH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/push.lua")));
static CLASSIFY: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/classify.lua")));

/// Where a task id is, by membership in the queue's sets (`classify.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// The queue does not know it.
    New,
    /// Scheduled, active or in flight: its work will be done.
    Queued,
    /// Dead: left for an operator (and for the sweep's re-enqueue after a cool-off).
    Dead,
    /// Finished: its record is recycled if its work is needed again.
    Done,
    /// Stored but in no set (cut off between two steps): recycled like a finished one.
    Stranded,
}

/// The default queue name (the library's default is a Rust type name; never rely on it).
pub const DEFAULT_QUEUE: &str = "janitor:cleanup";
/// Most jobs that may wait in the queue (scheduled + active) before a push is deferred:
/// well under the ~8,000 due ids that wedge the library's `fetch_next`.
pub const DEFAULT_BACKLOG_CAP: u64 = 4_000;
/// How long dead work waits before it is re-driven by default: an outage's dead jobs come
/// back by themselves within this after the store does.
pub const DEFAULT_DEAD_RETRY_AFTER_SECS: u64 = 300;
/// Largest chunk moved by one promotion (and pushed by one `batch_push` call).
const CHUNK: usize = 500;

/// Queue settings shared by producers and workers. Every replica must use the same
/// heartbeat settings, or one would declare another's live jobs orphaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub name: String,
    /// Tasks fetched per poll (kept ≤ worker concurrency).
    pub batch_size: usize,
    /// How often a worker checks the queue for work while jobs flow.
    pub poll_interval: Duration,
    /// How often it checks once a few polls passed without a job (a push by the same
    /// process wakes it at once): see [`crate::Pacer`].
    pub idle_poll_interval: Duration,
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: usize,
    pub backlog_cap: u64,
    /// How long a dead job's work waits before a sweep that still finds it needed enqueues
    /// it again under a new id (the dead copy stays for operators).
    pub dead_retry_after: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            name: DEFAULT_QUEUE.to_owned(),
            batch_size: 16,
            poll_interval: Duration::from_millis(50),
            idle_poll_interval: Duration::from_millis(250),
            heartbeat_interval: Duration::from_secs(2),
            missed_heartbeats: 5,
            backlog_cap: DEFAULT_BACKLOG_CAP,
            dead_retry_after: Duration::from_secs(DEFAULT_DEAD_RETRY_AFTER_SECS),
        }
    }
}

impl QueueSettings {
    /// The library configuration: leases off (their `LREM` is O(backlog) per fetch),
    /// results persisted (the last error is what an operator reads on a dead job).
    pub fn apalis_config(&self) -> apalis_redis::Config {
        apalis_redis::Config::default()
            .queue(&self.name)
            .batch_size(self.batch_size.max(1))
            .lock_tasks(false)
            .heartbeat_interval(self.heartbeat_interval)
            .missed_heartbeats(self.missed_heartbeats)
            .emit_events(false)
    }
}

/// Errors talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Library(#[from] apalis_redis::Error),
    #[error("encoding a job: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What one enqueue call did with its jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EnqueueReport {
    /// Pushed as new tasks.
    pub enqueued: u64,
    /// A task with the same id is still pending, active or retrying: nothing pushed.
    pub already_queued: u64,
    /// A task with the same id had finished, yet its work is needed again: the finished
    /// record was removed and the task pushed anew (counted in `enqueued` too).
    pub recycled: u64,
    /// A task with the same id is dead (and died less than `dead_retry_after` ago): left
    /// for an operator to inspect and re-drive.
    pub dead: u64,
    /// The same work's task was dead for longer than `dead_retry_after`: pushed again under
    /// a new id that links to it (counted in `enqueued` too).
    pub redriven: u64,
    /// Not pushed because the backlog was at its cap; the next sweep finds them again.
    pub deferred: u64,
}

impl EnqueueReport {
    pub fn add(&mut self, other: Self) {
        self.enqueued += other.enqueued;
        self.already_queued += other.already_queued;
        self.recycled += other.recycled;
        self.dead += other.dead;
        self.redriven += other.redriven;
        self.deferred += other.deferred;
    }
}

/// One queue on one Redis.
#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    settings: QueueSettings,
    config: apalis_redis::Config,
    keys: QueueKeys,
    pacer: Pacer,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Queue {
    pub fn new(conn: ConnectionManager, settings: QueueSettings) -> Self {
        let config = settings.apalis_config();
        let keys = QueueKeys::new(settings.name.clone());
        let pacer = Pacer::new(settings.poll_interval, settings.idle_poll_interval);
        Self {
            conn,
            settings,
            config,
            keys,
            pacer,
        }
    }

    /// When this process's worker polls next (shared by the queue's clones).
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub fn config(&self) -> &apalis_redis::Config {
        &self.config
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Jobs that can be fetched now: due in the schedule, plus active. Jobs due later
    /// (skip-time finalizers, retries backing off) do not count: they cannot wedge a fetch
    /// until they come due, and counting them let them fill the cap and defer every sweep
    /// job. `promote_due` keeps what comes due in bounded chunks.
    pub async fn backlog(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let (due, active): (u64, u64) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(self.keys.scheduled())
            .arg("-inf")
            .arg(secs)
            .cmd("LLEN")
            .arg(self.keys.active())
            .query_async(&mut conn)
            .await?;
        Ok(due + active)
    }

    /// Where each id is (one script call).
    pub async fn classify(&self, ids: &[String]) -> Result<Vec<Existing>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = CLASSIFY.prepare_invoke();
        call.key(self.keys.scheduled())
            .key(self.keys.active())
            .key(self.keys.workers())
            .key(self.keys.dead())
            .key(self.keys.done())
            .key(self.keys.data())
            .arg(self.keys.inflight(""));
        for id in ids {
            call.arg(id);
        }
        let codes: Vec<i64> = call.invoke_async(&mut self.conn.clone()).await?;
        Ok(codes
            .into_iter()
            .map(|c| match c {
                1 => Existing::Queued,
                2 => Existing::Dead,
                3 => Existing::Done,
                4 => Existing::Stranded,
                _ => Existing::New,
            })
            .collect())
    }

    /// Pushes jobs, each under its deterministic id, after `delay`. Never pushes past the
    /// backlog cap; never pushes an id that is still queued; recycles a finished id whose
    /// work is needed again; leaves dead ids alone.
    pub async fn enqueue(
        &self,
        jobs: &[CleanupJob],
        delay: Duration,
    ) -> Result<EnqueueReport, QueueError> {
        let mut report = EnqueueReport::default();
        if jobs.is_empty() {
            return Ok(report);
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = jobs.iter().map(CleanupJob::task_id).collect();

        let mut fresh: Vec<(CleanupJob, String)> = Vec::new();
        let mut recycle: Vec<String> = Vec::new();
        let mut dead = Vec::new();
        let states = self.classify(&ids).await?;
        for ((job, id), existing) in jobs.iter().zip(ids).zip(states) {
            match existing {
                Existing::New => fresh.push((job.clone(), id)),
                Existing::Dead => dead.push((job, id)),
                Existing::Done | Existing::Stranded => {
                    recycle.push(id.clone());
                    fresh.push((job.clone(), id));
                }
                Existing::Queued => report.already_queued += 1,
            }
        }
        // Dead work the sweep still finds needed: after the cool-off, again under a new id.
        for step in self.redrives(&dead).await? {
            match step {
                Redrive::Wait => report.dead += 1,
                Redrive::Queued => report.already_queued += 1,
                Redrive::Push {
                    job,
                    id,
                    recycle: again,
                } => {
                    if again {
                        recycle.push(id.clone());
                    }
                    report.redriven += 1;
                    fresh.push((job, id));
                }
            }
        }

        let room = self
            .settings
            .backlog_cap
            .saturating_sub(self.backlog().await?);
        let take = fresh.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        report.deferred = (fresh.len() - take) as u64;
        fresh.truncate(take);
        if fresh.is_empty() {
            return Ok(report);
        }

        let recycled: Vec<&str> = recycle
            .iter()
            .map(String::as_str)
            .filter(|id| fresh.iter().any(|(_, f)| f.as_str() == *id))
            .collect();
        if !recycled.is_empty() {
            let mut pipe = redis::pipe();
            for id in &recycled {
                pipe.cmd("HDEL").arg(self.keys.data()).arg(*id).ignore();
                pipe.cmd("DEL").arg(self.keys.meta(id)).ignore();
                pipe.cmd("SREM").arg(self.keys.done()).arg(*id).ignore();
            }
            pipe.atomic();
            pipe.query_async::<()>(&mut conn).await?;
            report.recycled = recycled.len() as u64;
        }

        // Every push lands in the schedule, due now or later, as the library's own push
        // does (`push.lua`): at the library's clock, unix seconds, never in the past.
        let due = (std::time::SystemTime::now() + delay)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        for chunk in fresh.chunks(CHUNK) {
            let mut call = PUSH.prepare_invoke();
            call.key(self.keys.data())
                .key(self.keys.scheduled())
                .arg(self.keys.meta_prefix())
                .arg(&due);
            for (job, id) in chunk {
                call.arg(id).arg(serde_json::to_vec(job)?);
            }
            let pushed: u32 = call.invoke_async(&mut conn).await?;
            report.enqueued += u64::from(pushed);
            // Lost a race with another pusher of the same id: it is queued either way.
            report.already_queued += (chunk.len() as u64).saturating_sub(u64::from(pushed));
            if delay.is_zero() && pushed > 0 {
                self.pacer.wake();
            }
        }
        let links: Vec<(&str, &str)> = fresh
            .iter()
            .filter_map(|(job, id)| Some((job.redrive_of.as_deref()?, id.as_str())))
            .collect();
        if !links.is_empty() {
            let mut pipe = redis::pipe();
            for (base, id) in links {
                pipe.cmd("HSET")
                    .arg(self.keys.redriven())
                    .arg(base)
                    .arg(id)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(report)
    }

    /// What to do with each dead job's work: the latest re-drive of its id decides (still
    /// queued: nothing; finished: push it again; dead for longer than the cool-off: a new
    /// re-drive; else wait).
    async fn redrives(&self, dead: &[(&CleanupJob, String)]) -> Result<Vec<Redrive>, QueueError> {
        if dead.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for (_, base) in dead {
            pipe.cmd("HGET").arg(self.keys.redriven()).arg(base);
        }
        let latest: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        let current: Vec<String> = dead
            .iter()
            .zip(&latest)
            .map(|((_, base), latest)| latest.clone().unwrap_or_else(|| base.clone()))
            .collect();
        let states = self.classify(&current).await?;
        let mut pipe = redis::pipe();
        for id in &current {
            pipe.cmd("HGET").arg(self.keys.meta(id)).arg("done_at");
        }
        let died: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let cool_off = i64::try_from(self.settings.dead_retry_after.as_secs()).unwrap_or(i64::MAX);
        let mut out = Vec::with_capacity(dead.len());
        for ((((job, base), id), state), died) in dead.iter().zip(current).zip(states).zip(died) {
            let redrive = |id: String, recycle: bool| Redrive::Push {
                job: CleanupJob {
                    redrive_of: Some(base.clone()),
                    ..(*job).clone()
                },
                id,
                recycle,
            };
            out.push(match state {
                Existing::Queued => Redrive::Queued,
                Existing::New => redrive(id, false),
                Existing::Done | Existing::Stranded => redrive(id, true),
                Existing::Dead => {
                    // Unknown death time: old enough (an outage must not strand it).
                    let at = died.and_then(|d| d.parse::<f64>().ok()).unwrap_or(0.0) as i64;
                    if secs.saturating_sub(at) >= cool_off {
                        redrive(next_redrive_id(base, &id), false)
                    } else {
                        Redrive::Wait
                    }
                }
            });
        }
        Ok(out)
    }

    /// What a worker checks every poll: how many jobs wait to be fetched (due in the
    /// schedule, or active), promoting the due ones first ([`Queue::promote_due`]). A check
    /// that finds nothing is one pipeline of two plain commands, where a fetch or a
    /// promotion is a script call (several times the CPU in Redis, and most polls find
    /// nothing); the worker fetches only when this finds work or its idle poll comes.
    pub async fn promote_scheduled(&self) -> Result<u64, QueueError> {
        let (due, active): (u64, u64) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(self.keys.scheduled())
            .arg("-inf")
            .arg(now_secs())
            .cmd("LLEN")
            .arg(self.keys.active())
            .query_async(&mut self.conn.clone())
            .await?;
        if due > 0 {
            self.promote_due().await?;
        }
        Ok(due + active)
    }

    /// Moves every due id to the active list in chunks (the wedge guard). Returns how many
    /// ids were promoted.
    pub async fn promote_due(&self) -> Result<u64, QueueError> {
        let mut total = 0;
        loop {
            let moved: u64 = PROMOTE_DUE
                .key(self.keys.scheduled())
                .key(self.keys.active())
                .key(self.keys.signal())
                .arg(CHUNK)
                .invoke_async(&mut self.conn.clone())
                .await?;
            total += moved;
            if moved < CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Whether nothing is due, nothing waits in the active list and no registered worker
    /// holds anything in flight. A crashed worker's jobs count as in flight until a live
    /// worker's heartbeat re-enqueues them, so a batch run waits for them.
    pub async fn is_idle(&self) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let (due, active, workers): (u64, u64, Vec<String>) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(self.keys.scheduled())
            .arg("-inf")
            .arg(now_secs())
            .cmd("LLEN")
            .arg(self.keys.active())
            .cmd("ZRANGE")
            .arg(self.keys.workers())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        if due > 0 || active > 0 {
            return Ok(false);
        }
        if workers.is_empty() {
            return Ok(true);
        }
        let mut pipe = redis::pipe();
        for worker in &workers {
            pipe.cmd("SCARD").arg(self.keys.inflight(worker));
        }
        let inflight: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(inflight.iter().all(|n| *n == 0))
    }

    /// Removes a stopped worker's registration (the library's own close removes the wrong
    /// member), but only when it holds nothing in flight.
    pub async fn unregister(&self, worker: &str) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let inflight: u64 = redis::cmd("SCARD")
            .arg(self.keys.inflight(worker))
            .query_async(&mut conn)
            .await?;
        if inflight > 0 {
            return Ok(false);
        }
        redis::pipe()
            .cmd("ZREM")
            .arg(self.keys.workers())
            .arg(worker)
            .ignore()
            .cmd("DEL")
            .arg(format!("{}:metadata:{worker}", self.keys.workers()))
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(true)
    }
}

/// One dead job's work, decided by [`Queue::redrives`].
enum Redrive {
    Wait,
    Queued,
    Push {
        job: CleanupJob,
        id: String,
        /// The id exists finished (or stranded): its record goes first.
        recycle: bool,
    },
}

/// `{base}~r{n+1}` after `{base}~r{n}` (or after `base` itself): ids stay deterministic and
/// never numeric.
fn next_redrive_id(base: &str, current: &str) -> String {
    let n = current
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix("~r"))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    format!("{base}~r{}", n + 1)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
