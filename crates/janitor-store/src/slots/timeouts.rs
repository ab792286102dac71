//! What a long-running producer remembers of the slots' declared timeouts between sweeps.
//!
//! A full sweep pairs every open run with its slot: a `ZMSCORE` per agent and an `HGET` of
//! each run's `timeout_seconds`. At 100,000 runs and a sweep a minute those `HGET`s were
//! the largest single share of the steady state's Redis CPU (`docs/performance-log.md`),
//! for a field that does not change: the platform writes it once, when it acquires the slot,
//! and a renewal moves the slot's score (`ZADD XX`) without touching it.
//!
//! So a producer that sweeps again and again (`janitor run`) keeps, per run, the timeout it
//! read and the slot's score at that moment, and reuses the timeout while the score is the
//! same, for a few minutes (5–15, by the run, so that the re-reads spread out). A
//! different score, an unreadable field, no field at all: read again, as before. Only a
//! sweep's pairing reads it: the due pass and the worker read every slot afresh before they
//! judge it, and every removal and every failed run goes through them, so a stale entry can
//! never reap anything; at worst it moves a pair's place in the deadline index, which the due
//! pass corrects when it re-reads the pair.
//!
//! Each entry is 24 bytes of key and value (the run's key hashed to 64 bits), about 32 with
//! the table's overhead: 3 MiB at 100,000 open runs. Entries past their time are dropped
//! once a minute, and the table stops growing at [`MAX_ENTRIES`].

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::time::{Duration, Instant};

use janitor_core::{AgentName, ExecutionId};

/// The shortest and longest time a timeout is reused before it is read again.
const REUSE_MIN: Duration = Duration::from_secs(300);
const REUSE_MAX: Duration = Duration::from_secs(900);
/// How often entries past their time are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The table takes no new entries beyond this (about 64 MiB).
pub const MAX_ENTRIES: usize = 2_000_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f64,
    /// The declared timeout in seconds (a `u32` keeps the entry at 16 bytes).
    timeout: u32,
    /// Seconds after the cache's origin when the entry stops being used.
    until: u32,
}

/// Declared timeouts by run, each with the slot score it was read at.
#[derive(Debug)]
pub(crate) struct TimeoutCache {
    hasher: std::collections::hash_map::RandomState,
    entries: HashMap<u64, Entry>,
    origin: Instant,
    pruned: Instant,
}

impl Default for TimeoutCache {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            hasher: Default::default(),
            entries: HashMap::new(),
            origin: now,
            pruned: now,
        }
    }
}

impl TimeoutCache {
    /// The key of a run.
    pub(crate) fn key(&self, agent: &AgentName, execution: &ExecutionId) -> u64 {
        self.hasher.hash_one((agent.as_str(), execution.as_str()))
    }

    fn secs(&self, at: Instant) -> u32 {
        u32::try_from(at.saturating_duration_since(self.origin).as_secs()).unwrap_or(u32::MAX)
    }

    /// The timeout read for `key` and the score it was read at, unless it is past its time.
    pub(crate) fn get(&self, key: u64, now: Instant) -> Option<(f64, i64)> {
        let entry = self.entries.get(&key)?;
        (self.secs(now) < entry.until).then_some((entry.score, i64::from(entry.timeout)))
    }

    /// Remembers `timeout`, read for `key` while its slot's score was `score`.
    pub(crate) fn put(&mut self, key: u64, score: f64, timeout: i64, now: Instant) {
        let Ok(timeout) = u32::try_from(timeout) else {
            self.entries.remove(&key);
            return;
        };
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&key) {
            return;
        }
        // Spread by the key's own (random per process) bits.
        let span = (REUSE_MAX - REUSE_MIN).as_secs() + 1;
        let reuse = REUSE_MIN + Duration::from_secs((key >> 32) % span);
        let until = self.secs(now + reuse);
        self.entries.insert(
            key,
            Entry {
                score,
                timeout,
                until,
            },
        );
    }

    /// Forgets `key` (its slot's score moved, or its field is no longer a timeout).
    pub(crate) fn forget(&mut self, key: u64) {
        self.entries.remove(&key);
    }

    /// Drops the entries past their time, at most once per [`PRUNE_EVERY`].
    pub(crate) fn prune(&mut self, now: Instant) {
        if now.saturating_duration_since(self.pruned) < PRUNE_EVERY {
            return;
        }
        self.pruned = now;
        let at = self.secs(now);
        self.entries.retain(|_, e| e.until > at);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(agent: &str, id: &str) -> (AgentName, ExecutionId) {
        (
            AgentName::parse(agent).unwrap(),
            ExecutionId::parse(id).unwrap(),
        )
    }

    #[test]
    fn an_entry_and_its_key_take_24_bytes() {
        assert_eq!(std::mem::size_of::<(u64, Entry)>(), 24);
        // A timeout that does not fit is not kept.
        let mut cache = TimeoutCache::default();
        cache.put(1, 1.0, i64::from(u32::MAX) + 1, Instant::now());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_timeout_is_reused_for_a_few_minutes_then_read_again() {
        let mut cache = TimeoutCache::default();
        let (a, e) = run("alpha", "run-1");
        let key = cache.key(&a, &e);
        let now = Instant::now();
        assert_eq!(cache.get(key, now), None);
        cache.put(key, 1_700_000_000.5, 3_600, now);
        assert_eq!(cache.get(key, now), Some((1_700_000_000.5, 3_600)));
        assert_eq!(
            cache.get(key, now + REUSE_MIN - Duration::from_secs(1)),
            Some((1_700_000_000.5, 3_600))
        );
        assert_eq!(
            cache.get(key, now + REUSE_MAX + Duration::from_secs(1)),
            None
        );
        cache.forget(key);
        assert_eq!(cache.get(key, now), None);
    }

    #[test]
    fn runs_have_their_own_entries_and_old_ones_are_pruned() {
        let mut cache = TimeoutCache::default();
        let now = Instant::now();
        let keys: Vec<u64> = [("a", "1"), ("a", "2"), ("b", "1"), ("a b", "1")]
            .iter()
            .map(|(a, e)| {
                let (a, e) = run(a, e);
                cache.key(&a, &e)
            })
            .collect();
        let mut distinct = keys.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), keys.len());
        for (i, &key) in keys.iter().enumerate() {
            cache.put(key, i as f64, i as i64 + 60, now);
        }
        assert_eq!(cache.get(keys[2], now), Some((2.0, 62)));
        // Within a minute of the last prune, and nothing past its time: all kept.
        cache.prune(now + Duration::from_secs(30));
        assert_eq!(cache.len(), 4);
        cache.prune(now + REUSE_MAX + Duration::from_secs(1));
        assert_eq!(cache.len(), 0);
    }
}
