//! The deadline index and the due pass: reaping within a second of a deadline without
//! sweeping everything every second.
//!
//! Every pair a full sweep judges healthy (or alive on a lease, a sentinel's bound, an
//! in-flight marker) comes with the instant its verdict can next change by itself. The
//! sweep writes those instants into a Redis ZSET (`{queue}:janitor:due`, one member per
//! pair, scored by the instant) that it rebuilds from scratch on every complete pass, so
//! the index is bounded by the fleet and never keeps a pair the stores no longer hold.
//!
//! A due pass, every second, reads the members whose instant has come, re-observes exactly
//! those pairs (slot score and hash, then row, then evidence of life, in batches), judges
//! them with the same [`janitor_core::decide`] and enqueues jobs as a sweep does: the same
//! ids, the same lease and fencing, the same blast-radius breaker (judged against the
//! fleet, see [`Breaker::judge_due`]). A pair that is still healthy goes back into the
//! index at its new instant (a renewed slot simply moves out), one that got a job is
//! looked at again [`JOB_RECHECK_SECS`] later, and one that is gone or only reportable
//! leaves the index (the next full sweep reports it).
//!
//! What a due pass never does: discover pairs (new slots and rows are the full sweep's),
//! or act on a pair whose row vanished since the sweep saw it — a row that disappears is
//! what a wrong database looks like, and only a full sweep sees enough of the fleet to tell
//! (the pair is handed back to it).

use std::collections::{BTreeMap, HashMap};

use janitor_core::{
    to_unix_seconds, AgentName, CleanupJob, ExecutionId, JobKind, Policy, Timestamp, Verdict,
};
use janitor_queue::{Queue, QueueError};
use janitor_store::{ExecutionStore, RowEntry, SlotStore, StoreError};
use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::breaker::{self, Decision, PassFigures};
use crate::observe::{judge_all, Pair};
use crate::sweep::{count_guarded, record_kinds, KindReport, Pusher, SweepError, SweepOptions};
use crate::SweepLease;

/// A pair that got a job is judged again this much later: by then its job has run (the
/// pair is gone) or failed (it is found again, under the same id).
pub const JOB_RECHECK_SECS: f64 = 30.0;
/// A pair alive on evidence with no end of its own (an in-flight marker, the agent's
/// answer) is judged again this much later (the marker lives 60 s, refreshed every 15 s).
pub const ALIVE_RECHECK_SECS: f64 = 15.0;
/// Members written per command while a sweep builds the index.
const BUILD_BATCH: usize = 1_000;
/// A build key left by a producer that died mid-sweep expires after this.
const BUILD_TTL_SECS: u64 = 3_600;
/// Batches one due pass reads at most (each `options.batch` pairs): what is left is due
/// again at the next pass, so one pass never runs for long.
const MAX_BATCHES: usize = 50;

/// The instant `pair` should next be judged, if it should be: when its verdict can change
/// by itself. Actionable pairs get a job and are not indexed by a sweep; reportable ones
/// and finished runs never change by themselves.
pub fn recheck_at(pair: &Pair, now: Timestamp) -> Option<Timestamp> {
    match &pair.verdict {
        Verdict::Healthy { recheck_at } => *recheck_at,
        Verdict::Alive {
            recheck_at: Some(at),
            ..
        } => Some(*at),
        Verdict::Alive {
            recheck_at: None, ..
        } => Some(now + chrono::TimeDelta::milliseconds((ALIVE_RECHECK_SECS * 1e3) as i64)),
        _ => None,
    }
}

/// A pair's member in the index: `r` or `n` (whether the sweep saw its row), the agent,
/// `\x1f`, the execution id. Neither name can hold a control character, so it is
/// unambiguous.
pub fn member(row_seen: bool, agent: &AgentName, execution: &ExecutionId) -> String {
    format!(
        "{}{}\x1f{}",
        if row_seen { 'r' } else { 'n' },
        agent.as_str(),
        execution.as_str()
    )
}

/// The member of a judged pair (`None` without a run).
pub fn member_of(pair: &Pair) -> Option<String> {
    let (agent, execution) = pair.run()?;
    Some(member(pair.row.is_some(), &agent, &execution))
}

/// Reads a member back: (row seen, agent, execution id).
pub fn parse_member(text: &str) -> Option<(bool, AgentName, ExecutionId)> {
    let row_seen = match text.as_bytes().first()? {
        b'r' => true,
        b'n' => false,
        _ => return None,
    };
    let (agent, execution) = text[1..].rsplit_once('\x1f')?;
    Some((
        row_seen,
        AgentName::parse(agent).ok()?,
        ExecutionId::parse(execution).ok()?,
    ))
}

/// The deadline index of one queue.
#[derive(Clone)]
pub struct DueIndex {
    conn: ConnectionManager,
    key: String,
}

impl std::fmt::Debug for DueIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueIndex").field("key", &self.key).finish()
    }
}

impl std::fmt::Debug for DueBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueBuild")
            .field("key", &self.key)
            .field("len", &self.len())
            .finish()
    }
}

impl DueIndex {
    pub fn new(conn: ConnectionManager, queue: &str) -> Self {
        Self {
            conn,
            key: format!("{queue}:janitor:due"),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Pairs in the index.
    pub async fn size(&self) -> Result<u64, redis::RedisError> {
        redis::cmd("ZCARD")
            .arg(&self.key)
            .query_async(&mut self.conn.clone())
            .await
    }

    /// The pairs due at `now` (unix seconds), earliest first, at most `limit`.
    pub async fn due(
        &self,
        now: f64,
        limit: usize,
    ) -> Result<Vec<(String, f64)>, redis::RedisError> {
        redis::cmd("ZRANGE")
            .arg(&self.key)
            .arg("-inf")
            .arg(now)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await
    }

    /// Moves members to new instants (adding them if missing) and removes others, in one
    /// round trip.
    pub async fn update(
        &self,
        set: &[(String, f64)],
        remove: &[String],
    ) -> Result<(), redis::RedisError> {
        if set.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for chunk in set.chunks(BUILD_BATCH) {
            let cmd = pipe.cmd("ZADD").arg(&self.key);
            for (member, at) in chunk {
                cmd.arg(*at).arg(member);
            }
            cmd.ignore();
        }
        for chunk in remove.chunks(BUILD_BATCH) {
            pipe.cmd("ZREM").arg(&self.key).arg(chunk).ignore();
        }
        pipe.exec_async(&mut self.conn.clone()).await
    }

    /// Deletes the index (a sweep that refused to act: a wrong view of the world must not
    /// drive due passes either).
    pub async fn clear(&self) -> Result<(), redis::RedisError> {
        redis::cmd("UNLINK")
            .arg(&self.key)
            .exec_async(&mut self.conn.clone())
            .await
    }

    /// Starts a rebuild: members go to a build key until [`DueBuild::publish`].
    pub fn build(&self) -> DueBuild {
        DueBuild {
            index: self.clone(),
            key: format!("{}:build:{}", self.key, uuid::Uuid::new_v4().simple()),
            pending: Vec::new(),
            added: 0,
            writer: None,
        }
    }
}

/// An index being rebuilt by one sweep. Members are written by a task of their own, a
/// batch at a time, so the sweep never waits on them (unless that task falls behind).
pub struct DueBuild {
    index: DueIndex,
    key: String,
    pending: Vec<(f64, String)>,
    added: u64,
    writer: Option<Writer>,
}

struct Writer {
    tx: tokio::sync::mpsc::Sender<Vec<(f64, String)>>,
    task: tokio::task::JoinHandle<Result<(), redis::RedisError>>,
}

impl Drop for DueBuild {
    fn drop(&mut self) {
        // Dropped without `publish` (the sweep failed): stop writing; the key expires.
        if let Some(writer) = self.writer.take() {
            writer.task.abort();
        }
    }
}

impl DueBuild {
    /// Adds a pair at its instant.
    pub async fn add(&mut self, member: String, at: Timestamp) -> Result<(), redis::RedisError> {
        self.pending.push((to_unix_seconds(at), member));
        self.added += 1;
        if self.pending.len() >= BUILD_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Pairs added so far.
    pub fn len(&self) -> u64 {
        self.added
    }

    pub fn is_empty(&self) -> bool {
        self.added == 0
    }

    /// Hands the pending members to the writer task (started on the first batch).
    async fn flush(&mut self) -> Result<(), redis::RedisError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let writer = self.writer.get_or_insert_with(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(f64, String)>>(4);
            let (mut conn, key) = (self.index.conn.clone(), self.key.clone());
            let task = tokio::spawn(async move {
                while let Some(batch) = rx.recv().await {
                    let mut pipe = redis::pipe();
                    let cmd = pipe.cmd("ZADD").arg(&key);
                    for (at, member) in &batch {
                        cmd.arg(*at).arg(member);
                    }
                    cmd.ignore();
                    pipe.cmd("EXPIRE").arg(&key).arg(BUILD_TTL_SECS).ignore();
                    pipe.exec_async(&mut conn).await?;
                }
                Ok(())
            });
            Writer { tx, task }
        });
        if writer.tx.send(batch).await.is_err() {
            // The writer stopped on an error: it is the answer.
            return self.finish_writing().await.map(|_| ());
        }
        Ok(())
    }

    /// Waits for every member to be written.
    async fn finish_writing(&mut self) -> Result<(), redis::RedisError> {
        let Some(Writer { tx, task }) = self.writer.take() else {
            return Ok(());
        };
        drop(tx);
        match task.await {
            Ok(result) => result,
            Err(e) => Err(redis::RedisError::from(std::io::Error::other(format!(
                "the deadline index's writer stopped: {e}"
            )))),
        }
    }

    /// Makes the build the index. A `complete` pass saw every pair and replaces the index;
    /// a pass that stopped early merges into it (the earlier instant wins), so no pair it
    /// did not reach is lost.
    pub async fn publish(mut self, complete: bool) -> Result<u64, redis::RedisError> {
        self.flush().await?;
        self.finish_writing().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if self.added == 0 {
            if complete {
                pipe.cmd("UNLINK").arg(&self.index.key).ignore();
            }
        } else if complete {
            pipe.cmd("RENAME")
                .arg(&self.key)
                .arg(&self.index.key)
                .ignore();
            pipe.cmd("PERSIST").arg(&self.index.key).ignore();
        } else {
            pipe.cmd("ZUNIONSTORE")
                .arg(&self.index.key)
                .arg(2)
                .arg(&self.index.key)
                .arg(&self.key)
                .arg("AGGREGATE")
                .arg("MIN")
                .ignore();
            pipe.cmd("UNLINK").arg(&self.key).ignore();
        }
        pipe.exec_async(&mut self.index.conn.clone()).await?;
        Ok(self.added)
    }

    /// Drops the build.
    pub async fn discard(mut self) -> Result<(), redis::RedisError> {
        if let Some(writer) = self.writer.take() {
            writer.task.abort();
            let _ = writer.task.await;
        }
        redis::cmd("UNLINK")
            .arg(&self.key)
            .exec_async(&mut self.index.conn.clone())
            .await
    }
}

/// What one due pass did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct DueReport {
    pub now: Option<Timestamp>,
    /// How long the pass took, in milliseconds.
    pub elapsed_ms: u64,
    /// Index members that were due.
    pub due: u64,
    /// Pairs re-observed and judged.
    pub judged: u64,
    /// Pairs still waiting for their next instant, put back at it.
    pub rescheduled: u64,
    /// Members dropped: the pair is gone, only reportable, unreadable, or malformed.
    pub dropped: u64,
    /// Pairs whose row vanished since the full sweep saw it, left to the next full sweep.
    pub handed_back: u64,
    /// What the breaker decided.
    pub decision: Option<Decision>,
    pub kinds: BTreeMap<&'static str, KindReport>,
}

/// One due pass at `slots`' Redis time: every pair due in the index is re-observed, judged
/// and, when actionable, enqueued (with a lease, re-checked before every push).
pub async fn due_pass(
    slots: &SlotStore,
    rows: &ExecutionStore,
    queue: &Queue,
    policy: &Policy,
    lease: Option<&SweepLease>,
    options: &SweepOptions,
) -> Result<DueReport, SweepError> {
    let started = std::time::Instant::now();
    let result = due_pass_inner(slots, rows, queue, policy, lease, options).await;
    match &result {
        Ok(report) => {
            janitor_metrics::due_pass_finished(&janitor_metrics::DueFigures {
                elapsed: started.elapsed(),
                due: report.due,
                rescheduled: report.rescheduled,
                dropped: report.dropped,
                handed_back: report.handed_back,
            });
            record_kinds(&report.kinds);
        }
        Err(_) => janitor_metrics::due_pass_failed(),
    }
    result
}

async fn due_pass_inner(
    slots: &SlotStore,
    rows: &ExecutionStore,
    queue: &Queue,
    policy: &Policy,
    lease: Option<&SweepLease>,
    options: &SweepOptions,
) -> Result<DueReport, SweepError> {
    let started = std::time::Instant::now();
    let index = DueIndex::new(queue.connection(), queue.keys().name());
    let start = slots.server_time().await?;
    let start_unix = to_unix_seconds(start);
    let mut report = DueReport {
        now: Some(start),
        ..DueReport::default()
    };
    let batch = options.batch.max(1);
    // Jobs, with whether the breaker guards them and when they became due.
    let mut held: Vec<(CleanupJob, bool, f64)> = Vec::new();
    let mut figures = PassFigures {
        now: start_unix,
        ..PassFigures::default()
    };
    let previous = breaker::load(&queue.connection(), queue.keys().name())
        .await
        .map_err(QueueError::from)?
        .due_previous
        .unwrap_or(f64::NEG_INFINITY);
    for _ in 0..MAX_BATCHES {
        let members = index
            .due(start_unix, batch)
            .await
            .map_err(StoreError::from)?;
        let full = members.len() == batch;
        report.due += members.len() as u64;
        let mut set: Vec<(String, f64)> = Vec::new();
        let mut remove: Vec<String> = Vec::new();
        // (member, row seen, agent, id)
        let mut runs: Vec<(String, bool, AgentName, ExecutionId)> = Vec::new();
        for (text, _) in members {
            match parse_member(&text) {
                Some((row_seen, agent, execution)) => runs.push((text, row_seen, agent, execution)),
                None => {
                    tracing::warn!(member = %text.escape_debug(), "malformed member in the deadline index; dropped");
                    remove.push(text);
                }
            }
        }
        let pairs: Vec<(AgentName, ExecutionId)> = runs
            .iter()
            .map(|(_, _, a, e)| (a.clone(), e.clone()))
            .collect();
        let ids: Vec<ExecutionId> = pairs.iter().map(|(_, e)| e.clone()).collect();
        // The slot first, then the row (as the sweep's slot pass): a run that finishes in
        // between is seen finished with its slot, never slotless while running.
        let (now, found) = slots.lookup_at(&pairs).await?;
        let mut by_id: HashMap<String, RowEntry> = rows
            .rows_by_ids(&ids)
            .await?
            .into_iter()
            .map(|entry| (entry.id().to_owned(), entry))
            .collect();
        let mut judged_members = Vec::new();
        let mut items = Vec::new();
        for ((text, row_seen, _, execution), slot) in runs.into_iter().zip(found) {
            let row = match by_id.remove(execution.as_str()) {
                Some(RowEntry::Row(row)) => Some(row),
                Some(RowEntry::Corrupt(_)) => {
                    remove.push(text);
                    continue;
                }
                None => None,
            };
            let slot = match slot {
                Ok(slot) => slot,
                Err(_) => {
                    remove.push(text);
                    continue;
                }
            };
            if row_seen && row.is_none() {
                report.handed_back += 1;
                remove.push(text);
                continue;
            }
            if slot.is_none() && row.is_none() {
                remove.push(text);
                continue;
            }
            judged_members.push(text);
            items.push((slot, row));
        }
        let judged = judge_all(slots, items, now, policy).await?;
        report.judged += judged.len() as u64;
        figures.judged += judged.len() as u64;
        let job_recheck = to_unix_seconds(now) + JOB_RECHECK_SECS;
        for (text, pair) in judged_members.into_iter().zip(judged) {
            if let Some(job) =
                CleanupJob::for_verdict(&pair.verdict, pair.slot.as_ref(), pair.row.as_ref())
            {
                report.kinds.entry(job.kind.as_str()).or_default().found += 1;
                let (guarded, due) = count_guarded(&mut figures, &pair, policy, previous);
                if pair.slot.is_some() {
                    figures.slots += 1;
                }
                held.push((job, guarded, due));
                set.push((text, job_recheck));
                continue;
            }
            match recheck_at(&pair, now) {
                // Never back into this pass: a verdict due at the very instant it was read
                // is looked at again by the next pass.
                Some(at) => {
                    report.rescheduled += 1;
                    set.push((text, to_unix_seconds(at).max(start_unix + 1e-3)));
                }
                None => remove.push(text),
            }
        }
        if !options.dry_run {
            index
                .update(&set, &remove)
                .await
                .map_err(StoreError::from)?;
        }
        if !full {
            break;
        }
    }
    // Counted once, not per batch.
    report.dropped = report
        .due
        .saturating_sub(report.judged + report.handed_back);

    if held.is_empty() {
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    let room = queue
        .settings()
        .backlog_cap
        .saturating_sub(queue.backlog().await?);
    let mut pusher = Pusher::new(queue, lease, options.dry_run, room);
    let _lock = breaker::LOCK.lock().await;
    let mut state = breaker::load(&queue.connection(), queue.keys().name())
        .await
        .map_err(QueueError::from)?;
    let decision = options
        .breaker
        .judge_due(&mut state, &figures, options.force);
    if let Decision::Hold {
        until,
        tripped: true,
    } = decision
    {
        tracing::error!(
            alert = "janitor_breaker_tripped",
            newly_due = figures.guarded_new,
            recent = state.recent,
            fleet = state.fleet,
            hold_until = until,
            "blast-radius breaker tripped in a due pass: holding every reclaim, release and fail back for the cool-off, then draining at the configured rate (--force overrides)"
        );
        janitor_metrics::breaker_tripped();
    }
    let allow = decision.allowance();
    let mut out = Vec::new();
    let mut kept_back: BTreeMap<JobKind, u64> = BTreeMap::new();
    held.sort_by(|a, b| a.2.total_cmp(&b.2));
    let mut pushed_guarded = 0u64;
    for (job, guarded, _) in held {
        if guarded {
            if pushed_guarded >= allow {
                *kept_back.entry(job.kind).or_default() += 1;
                continue;
            }
            pushed_guarded += 1;
        }
        if (out.len() as u64) < pusher.room() {
            out.push(job);
        } else {
            *kept_back.entry(job.kind).or_default() += 1;
        }
    }
    pusher.push(&mut out).await?;
    for (kind, n) in kept_back {
        pusher.defer(kind, n);
    }
    if !options.dry_run {
        breaker::store(&queue.connection(), queue.keys().name(), &state)
            .await
            .map_err(QueueError::from)?;
    }
    drop(_lock);
    for (kind, k) in pusher.into_kinds() {
        let entry = report.kinds.entry(kind).or_default();
        entry.queue = k.queue;
    }
    report.decision = Some(decision);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_read_back_whatever_the_agent_is_called() {
        for name in [
            "alpha",
            "ops/night:shift",
            "日本-エージェント",
            "O'Brien",
            "a\u{1e}b",
        ] {
            let agent = AgentName::parse(name);
            let Ok(agent) = agent else { continue };
            let id = ExecutionId::parse("run-1").unwrap();
            for row_seen in [true, false] {
                let text = member(row_seen, &agent, &id);
                assert_eq!(
                    parse_member(&text),
                    Some((row_seen, agent.clone(), id.clone()))
                );
            }
        }
    }

    #[test]
    fn malformed_members_are_refused() {
        for text in [
            "",
            "x",
            "ragent",
            "xagent\x1frun",
            "r\x1frun",
            "ragent\x1f",
            "ragent\x1fa:b",
        ] {
            assert_eq!(parse_member(text), None, "{text:?}");
        }
    }
}
