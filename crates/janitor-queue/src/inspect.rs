//! Looking into the queue and re-driving dead jobs, with the library's key layout (it has no
//! working API for either: `list_tasks` is always empty, nothing re-queues a dead task).
//!
//! Every read is bounded: sets are walked with `SSCAN`/`ZRANGE`/`LRANGE` pages, never loaded
//! whole.

use std::collections::BTreeMap;

use janitor_core::{CleanupJob, JobKind};
use redis::AsyncCommands as _;
use serde::Serialize;

use crate::{Queue, QueueError};

/// Ids read per page when walking a set.
const PAGE: usize = 500;

/// Counts per state, plus how long the oldest due job has waited.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    pub scheduled_due: u64,
    pub scheduled_future: u64,
    pub retrying: u64,
    pub active: u64,
    /// Worker name → jobs it holds.
    pub in_flight: BTreeMap<String, u64>,
    pub dead: u64,
    pub done: u64,
    /// Seconds the oldest due job (scheduled or active) has been due; `None` when none is.
    pub oldest_due_age_secs: Option<f64>,
}

/// What a re-drive did to one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
            // SREM decides who moves it: of two concurrent re-drives, one wins.
            let removed: u64 = conn.srem(keys.dead(), id).await?;
            if removed == 0 {
                outcomes.push(RetryOutcome::NotDead);
                continue;
            }
            redis::pipe()
                .atomic()
                .hset_multiple(
                    keys.meta(id),
                    &[("attempts", "0"), ("status", "Pending"), ("result", "")],
                )
                .ignore()
                .zadd(keys.scheduled(), id, due_until)
                .ignore()
                .exec_async(&mut conn)
                .await?;
            outcomes.push(RetryOutcome::Moved);
        }
        Ok(outcomes)
    }
}

/// Redis' clock: whole seconds (the library's scores are whole seconds, and an id is due
/// once its score is at most that) and the precise time.
async fn server_now(conn: &mut apalis_redis::ConnectionManager) -> Result<(i64, f64), QueueError> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    Ok((secs, secs as f64 + micros as f64 / 1e6))
}
