//! Looking into the queue and re-driving dead jobs, with the library's key layout (it has no
//! working API for either: `list_tasks` is always empty, nothing re-queues a dead task).
//!
//! Every read is bounded: sets are walked with `SSCAN`/`ZRANGE`/`LRANGE` pages, never loaded
//! whole.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use janitor_core::{CleanupJob, JobKind};
use redis::{AsyncCommands as _, Script};
use serde::Serialize;

use crate::{Queue, QueueError};

static PURGE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/purge.lua")));
static RETRY_DEAD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/retry_dead.lua")));

/// Ids read per page when walking a set.
const PAGE: usize = 500;

/// Counts per state, plus how long the oldest due job has waited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    pub scheduled_due: u64,
    pub scheduled_future: u64,
    pub retrying: u64,
    pub active: u64,
    /// Worker name → jobs it holds.
    pub in_flight: BTreeMap<String, u64>,
    pub dead: u64,
    pub done: u64,
    /// Workers whose last heartbeat is within the heartbeat threshold
    /// (`heartbeat_interval × missed_heartbeats`): the replicas fetching from this queue now.
    pub workers_alive: u64,
    /// Seconds the oldest due job (scheduled or active) has been due; `None` when none is.
    pub oldest_due_age_secs: Option<f64>,
}

/// The states a job can be listed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in `Q:scheduled` for its first delivery (due now or later).
    Scheduled,
    /// Back in `Q:scheduled` after a failed delivery.
    Retrying,
    /// Promoted to `Q:active`, waiting for a worker.
    Active,
    /// Held by a worker.
    InFlight,
    Dead,
    Done,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        Self::Scheduled,
        Self::Retrying,
        Self::Active,
        Self::InFlight,
        Self::Dead,
        Self::Done,
    ];

    /// The name in listings, the CLI and the API (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Retrying => "retrying",
            Self::Active => "active",
            Self::InFlight => "in_flight",
            Self::Dead => "dead",
            Self::Done => "done",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One job as an operator reads it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobInfo {
    pub id: String,
    pub state: JobState,
    /// The payload, decoded; `None` when it is gone or not a payload janitor reads.
    pub job: Option<CleanupJob>,
    /// The stored payload as text, when it could not be decoded (kept for the operator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_payload: Option<String>,
    /// Deliveries that failed so far.
    pub attempts: u64,
    /// The last error recorded for it (empty results are `None`).
    pub last_error: Option<String>,
    /// When a scheduled or retrying job is (or was) due, unix seconds.
    pub next_run: Option<f64>,
    /// The worker holding it, when in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// An id as a listing reads it: with its due time (scheduled) or its worker (in flight).
type Listed = (String, Option<f64>, Option<String>);

/// One page of a listing; `next` is the cursor of the following page (`None` at the end).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobInfo>,
    pub next: Option<u64>,
}

/// What a purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PurgeReport {
    pub purged: u64,
    /// Finished within the retention period.
    pub kept_recent: u64,
    /// Scheduled again (recycled or re-driven): never purged.
    pub kept_scheduled: u64,
    /// No finish time recorded: age unknown, kept.
    pub kept_undated: u64,
}

/// What a re-drive did to one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryOutcome {
    /// Out of the dead set, attempts reset, due now.
    Moved,
    /// Not in the dead set (already re-driven, or never dead): nothing changed.
    NotDead,
}

impl Queue {
    /// Counts per state. Walks the scheduled set (bounded by the backlog cap) to tell first
    /// deliveries from retries.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut conn = self.connection();
        let keys = self.keys();
        let (due_until, now) = server_now(&mut conn).await?;
        let mut stats = QueueStats {
            scheduled_due: conn.zcount(keys.scheduled(), "-inf", due_until).await?,
            scheduled_future: conn
                .zcount(keys.scheduled(), format!("({due_until}"), "+inf")
                .await?,
            active: conn.llen(keys.active()).await?,
            dead: conn.scard(keys.dead()).await?,
            done: conn.scard(keys.done()).await?,
            ..QueueStats::default()
        };
        let mut start = 0isize;
        loop {
            let page: Vec<String> = conn
                .zrange(keys.scheduled(), start, start + PAGE as isize - 1)
                .await?;
            let attempts = self.attempts(&page).await?;
            stats.retrying += attempts.iter().filter(|a| **a > 0).count() as u64;
            if page.len() < PAGE {
                break;
            }
            start += PAGE as isize;
        }
        // Heartbeats are the library's client clock in whole seconds; one second of slack.
        let threshold = self.settings().heartbeat_interval.as_secs_f64()
            * self.settings().missed_heartbeats as f64;
        stats.workers_alive = conn
            .zcount(keys.workers(), now - threshold - 1.0, "+inf")
            .await?;
        let workers: Vec<String> = conn.zrange(keys.workers(), 0, -1).await?;
        for worker in workers {
            let held: u64 = conn.scard(keys.inflight(&worker)).await?;
            if held > 0 {
                stats.in_flight.insert(worker, held);
            }
        }
        let oldest: Vec<(String, f64)> = conn
            .zrangebyscore_limit_withscores(keys.scheduled(), "-inf", due_until, 0, 1)
            .await?;
        stats.oldest_due_age_secs = oldest.first().map(|(_, due)| (now - due).max(0.0));
        Ok(stats)
    }

    /// Failed deliveries so far of each id (0 when unknown).
    async fn attempts(&self, ids: &[String]) -> Result<Vec<u64>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.keys().meta(id), "attempts");
        }
        let raw: Vec<Option<String>> = pipe.query_async(&mut self.connection()).await?;
        Ok(raw
            .into_iter()
            .map(|a| a.and_then(|a| a.parse().ok()).unwrap_or(0))
            .collect())
    }

    /// One page of the jobs in `state` (of `kind`, if given), starting at `cursor` (0 for
    /// the first page). At most `limit` ids are read per page, so a page may hold fewer jobs
    /// than `limit` when a filter leaves some out; follow `next` to the end.
    pub async fn list(
        &self,
        state: JobState,
        kind: Option<JobKind>,
        cursor: u64,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        let mut conn = self.connection();
        let keys = self.keys();
        let limit = limit.clamp(1, PAGE);
        let (ids, next): (Vec<Listed>, Option<u64>) = match state {
            JobState::Dead | JobState::Done => {
                let set = if state == JobState::Dead {
                    keys.dead()
                } else {
                    keys.done()
                };
                let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                    .arg(set)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut conn)
                    .await?;
                (
                    ids.into_iter().map(|id| (id, None, None)).collect(),
                    (next != 0).then_some(next),
                )
            }
            JobState::Scheduled | JobState::Retrying => {
                let (start, stop) = index_range(cursor, limit);
                let page: Vec<(String, f64)> = conn
                    .zrange_withscores(keys.scheduled(), start, stop)
                    .await?;
                let next = (page.len() == limit).then(|| cursor.saturating_add(limit as u64));
                (
                    page.into_iter()
                        .map(|(id, at)| (id, Some(at), None))
                        .collect(),
                    next,
                )
            }
            JobState::Active => {
                let (start, stop) = index_range(cursor, limit);
                let page: Vec<String> = conn.lrange(keys.active(), start, stop).await?;
                let next = (page.len() == limit).then(|| cursor.saturating_add(limit as u64));
                (page.into_iter().map(|id| (id, None, None)).collect(), next)
            }
            JobState::InFlight => {
                // Workers are few; each holds at most its concurrency.
                let workers: Vec<String> = conn.zrange(keys.workers(), 0, -1).await?;
                let mut held = Vec::new();
                for worker in workers {
                    let ids: Vec<String> = conn.smembers(keys.inflight(&worker)).await?;
                    held.extend(ids.into_iter().map(|id| (id, None, Some(worker.clone()))));
                }
                (held, None)
            }
        };
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, next_run, worker) in ids {
            let info = self.info(&id, state, next_run, worker).await?;
            let wanted_state = match state {
                JobState::Scheduled => info.attempts == 0,
                JobState::Retrying => info.attempts > 0,
                _ => true,
            };
            let wanted_kind = kind.is_none_or(|k| info.job.as_ref().is_some_and(|j| j.kind == k));
            if wanted_state && wanted_kind {
                jobs.push(info);
            }
        }
        Ok(JobPage { jobs, next })
    }

    /// Everything about one job, wherever it is; `None` when the queue does not know it.
    pub async fn show(&self, id: &str) -> Result<Option<JobInfo>, QueueError> {
        let mut conn = self.connection();
        let keys = self.keys();
        let known: bool = conn.hexists(keys.data(), id).await?;
        let (in_dead, in_done): (bool, bool) = redis::pipe()
            .sismember(keys.dead(), id)
            .sismember(keys.done(), id)
            .query_async(&mut conn)
            .await?;
        let scheduled: Option<f64> = conn.zscore(keys.scheduled(), id).await?;
        let active: Option<i64> = redis::cmd("LPOS")
            .arg(keys.active())
            .arg(id)
            .query_async(&mut conn)
            .await?;
        let mut holder = None;
        let workers: Vec<String> = conn.zrange(keys.workers(), 0, -1).await?;
        for worker in workers {
            if conn.sismember(keys.inflight(&worker), id).await? {
                holder = Some(worker);
                break;
            }
        }
        let state = if in_dead {
            JobState::Dead
        } else if holder.is_some() {
            JobState::InFlight
        } else if active.is_some() {
            JobState::Active
        } else if scheduled.is_some() {
            JobState::Scheduled
        } else if in_done {
            JobState::Done
        } else if known {
            // Stored but in no set: between two of the library's steps.
            JobState::Active
        } else {
            return Ok(None);
        };
        let mut info = self.info(id, state, scheduled, holder).await?;
        if info.state == JobState::Scheduled && info.attempts > 0 {
            info.state = JobState::Retrying;
        }
        Ok(Some(info))
    }

    /// A job's payload and meta.
    async fn info(
        &self,
        id: &str,
        state: JobState,
        next_run: Option<f64>,
        worker: Option<String>,
    ) -> Result<JobInfo, QueueError> {
        let keys = self.keys();
        let (raw, attempts, result): (Option<Vec<u8>>, Option<String>, Option<String>) =
            redis::pipe()
                .hget(keys.data(), id)
                .hget(keys.meta(id), "attempts")
                .hget(keys.meta(id), "result")
                .query_async(&mut self.connection())
                .await?;
        let job = raw.as_deref().and_then(|raw| CleanupJob::decode(raw).ok());
        let raw_payload = match (&job, raw) {
            (None, Some(raw)) => Some(String::from_utf8_lossy(&raw).into_owned()),
            _ => None,
        };
        Ok(JobInfo {
            id: id.to_owned(),
            state,
            job,
            raw_payload,
            attempts: attempts.and_then(|a| a.parse().ok()).unwrap_or(0),
            last_error: result.as_deref().and_then(last_error),
            next_run,
            worker,
        })
    }

    /// Retention: deletes the jobs of the done (or dead) set that finished at least
    /// `older_than` ago (whole seconds) — set member, payload and meta — a page at a time. A job scheduled
    /// again is never touched.
    pub async fn purge(
        &self,
        dead: bool,
        older_than: std::time::Duration,
    ) -> Result<PurgeReport, QueueError> {
        let mut conn = self.connection();
        let keys = self.keys();
        let set = if dead { keys.dead() } else { keys.done() };
        let (now, _) = server_now(&mut conn).await?;
        let cutoff = now - i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
        let meta_prefix = keys.meta("");
        let mut report = PurgeReport::default();
        let mut cursor = 0u64;
        loop {
            let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&set)
                .arg(cursor)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await?;
            if !ids.is_empty() {
                let mut call = PURGE.prepare_invoke();
                call.key(&set)
                    .key(keys.data())
                    .key(keys.scheduled())
                    .arg(cutoff)
                    .arg(&meta_prefix);
                for id in &ids {
                    call.arg(id);
                }
                let [purged, recent, scheduled, undated]: [u64; 4] =
                    call.invoke_async(&mut conn).await?;
                report.purged += purged;
                report.kept_recent += recent;
                report.kept_scheduled += scheduled;
                report.kept_undated += undated;
            }
            if next == 0 {
                return Ok(report);
            }
            cursor = next;
        }
    }

    /// One page of dead job ids (`SSCAN`): pass the returned cursor back until it is 0.
    pub async fn dead_page(&self, cursor: u64) -> Result<(u64, Vec<String>), QueueError> {
        let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(self.keys().dead())
            .arg(cursor)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut self.connection())
            .await?;
        Ok((next, ids))
    }

    /// The decoded payload of a job, `None` when it is gone or not a payload janitor reads.
    pub async fn payload(&self, id: &str) -> Result<Option<CleanupJob>, QueueError> {
        let raw: Option<Vec<u8>> = self.connection().hget(self.keys().data(), id).await?;
        Ok(raw.and_then(|raw| CleanupJob::decode(&raw).ok()))
    }

    /// Re-drives every dead job (of `kind`, if given; a payload janitor cannot read has no
    /// kind and is re-driven only without one), paging through the dead set.
    pub async fn retry_all_dead(
        &self,
        kind: Option<JobKind>,
    ) -> Result<Vec<(String, RetryOutcome)>, QueueError> {
        let mut done = Vec::new();
        let mut cursor = 0;
        loop {
            // Ids moved out of the set do not disturb SSCAN's cursor.
            let (next, ids) = self.dead_page(cursor).await?;
            let mut wanted = Vec::with_capacity(ids.len());
            for id in ids {
                let keep = match kind {
                    None => true,
                    Some(kind) => self.payload(&id).await?.is_some_and(|job| job.kind == kind),
                };
                if keep {
                    wanted.push(id);
                }
            }
            let outcomes = self.retry_dead(&wanted).await?;
            done.extend(wanted.into_iter().zip(outcomes));
            if next == 0 {
                return Ok(done);
            }
            cursor = next;
        }
    }

    /// Moves dead jobs back to due: out of the dead set, attempts and last error reset,
    /// scheduled now. Idempotent: an id no longer dead is left alone.
    pub async fn retry_dead(&self, ids: &[String]) -> Result<Vec<RetryOutcome>, QueueError> {
        let mut conn = self.connection();
        let keys = self.keys();
        let (due_until, _) = server_now(&mut conn).await?;
        let mut outcomes = Vec::with_capacity(ids.len());
        for id in ids {
            // One script: the SREM decides who moves it (of two concurrent re-drives, one
            // wins) and the rest cannot be cut off from it.
            let moved: i64 = RETRY_DEAD
                .key(keys.dead())
                .key(keys.meta(id))
                .key(keys.scheduled())
                .arg(id)
                .arg(due_until)
                .invoke_async(&mut conn)
                .await?;
            outcomes.push(if moved == 1 {
                RetryOutcome::Moved
            } else {
                RetryOutcome::NotDead
            });
        }
        Ok(outcomes)
    }
}

/// The error in the library's stored `result` (`{"Err":"…"}` for a failed delivery,
/// `{"Ok":…}` for a successful one); other text is shown as stored, an empty or `null`
/// result is no error.
fn last_error(result: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(result) {
        Ok(serde_json::Value::Null) => None,
        Ok(serde_json::Value::Object(map)) => match map.get("Err") {
            Some(serde_json::Value::String(e)) => Some(e.clone()),
            Some(other) => Some(other.to_string()),
            // `{"Ok":…}`: the last delivery succeeded.
            None if map.contains_key("Ok") => None,
            None => Some(result.to_owned()),
        },
        _ if result.trim().is_empty() => None,
        _ => Some(result.to_owned()),
    }
}

/// The `ZRANGE`/`LRANGE` indexes of a page: a cursor is any u64 a client sends, so it is
/// capped far past any real list (an empty page) instead of overflowing or turning into a
/// negative index, which Redis reads from the list's end.
fn index_range(cursor: u64, limit: usize) -> (isize, isize) {
    let last_start = isize::MAX - PAGE as isize;
    let start = isize::try_from(cursor).map_or(last_start, |c| c.min(last_start));
    (start, start + limit as isize - 1)
}

/// Redis' clock: whole seconds (the library's scores are whole seconds, and an id is due
/// once its score is at most that) and the precise time.
async fn server_now(conn: &mut apalis_redis::ConnectionManager) -> Result<(i64, f64), QueueError> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    Ok((secs, secs as f64 + micros as f64 / 1e6))
}

#[cfg(test)]
mod tests {
    use super::last_error;

    #[test]
    fn reads_the_error_out_of_the_stored_result() {
        assert_eq!(
            last_error(r#"{"Err":"AbortError: gave up after 2 attempts: x"}"#).as_deref(),
            Some("AbortError: gave up after 2 attempts: x")
        );
        assert_eq!(last_error(r#"{"Ok":null}"#), None);
        assert_eq!(last_error("null"), None);
        assert_eq!(last_error(""), None);
        assert_eq!(last_error("plain text").as_deref(), Some("plain text"));
        assert_eq!(
            last_error(r#"{"Err":{"code":1}}"#).as_deref(),
            Some(r#"{"code":1}"#)
        );
    }
}
