//! The reads a sweep and a worker make: every slot by `SCAN`, the slots of pages of open
//! runs (counting what was paired, so the slot pass can skip it inside Redis), and the slots
//! of specific runs. Every pipelined read takes its errors per command: one key of the
//! wrong type is one unreadable item, never a failed batch.

use std::collections::{HashMap, VecDeque};
use std::sync::LazyLock;

use futures::Stream;
use janitor_core::{
    from_unix_seconds, to_unix_seconds, AgentName, ExecutionId, Liveness, SlotObservation,
    SlotTimeout, Timestamp,
};
use redis::{FromRedisValue, Script, Value};

use super::{CensusReport, CensusWalk, CorruptSlot, PairedSet, ScannedSlot, SlotEntry, SlotStore};
use crate::sql::executions::escape_bytes;
use crate::{SlotKeys, StoreError};

static UNPAIRED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/unpaired.lua")));

/// How long a sweep's set of paired ids outlives its last write if the sweep dies before
/// deleting it.
const PAIRED_TTL_SECS: u64 = 600;

/// How long the census and its walk's state outlive their last write: a day without a sweep
/// and the next one walks the whole keyspace again.
const CENSUS_TTL_SECS: u64 = 86_400;

/// A slot member: (agent, execution, score).
type Member = (AgentName, ExecutionId, f64);

/// Where a [`SlotStore::scan`] is.
struct ScanState {
    store: SlotStore,
    batch: usize,
    /// `None` once SCAN has come back to 0.
    cursor: Option<u64>,
    pending: VecDeque<Member>,
    corrupt: Vec<SlotEntry>,
    /// Skip the members in this SET (see [`SlotStore::scan_unpaired`]).
    paired: Option<String>,
}

/// A ZSET's members with their scores, as read.
type Members = Vec<(Vec<u8>, f64)>;

/// A ZSET key and its members with their scores, as read.
type KeyMembers = (Vec<u8>, Members);

/// A hash field as read: absent, or raw bytes.
type RawField = Option<Vec<u8>>;

/// Adds the read of a run's declared timeout (its slot hash's `timeout_seconds`) to `pipe`.
fn read_timeout(
    pipe: &mut redis::Pipeline,
    keys: &SlotKeys,
    agent: &AgentName,
    execution: &ExecutionId,
) {
    pipe.cmd("HGET")
        .arg(keys.meta(agent, execution))
        .arg("timeout_seconds");
}

/// A run's declared timeout in a sweep's pairing: reused from an earlier sweep (with the
/// slot score it was read at), or as read now.
enum Timeout {
    Cached(f64, i64),
    Read(Value),
}

/// A run's slot as looked up: none, one, or unreadable (its ZSET is not a ZSET): a run whose
/// slot cannot be read is reported, never judged as slotless.
pub type SlotRead = Result<Option<SlotObservation>, CorruptSlot>;

/// The reason text when Redis refused one command of a pipeline for its key (e.g.
/// `WRONGTYPE`), `None` for a reply.
fn refused(reply: &Value) -> Option<String> {
    match reply {
        Value::ServerError(e) => Some(format!(
            "unreadable: {}",
            redis::RedisError::from(e.clone())
        )),
        _ => None,
    }
}

/// A run whose slot cannot be read.
fn unreadable_slot(
    keys: &SlotKeys,
    agent: &AgentName,
    execution: &ExecutionId,
    reason: String,
) -> CorruptSlot {
    CorruptSlot {
        key: keys.slots(agent),
        member: execution.to_string(),
        reason,
    }
}

/// Keys examined per `SCAN` call: large enough to keep round trips few, small enough that
/// one call never blocks Redis for long.
const SCAN_COUNT: usize = 1_000;

impl SlotStore {
    /// Streams every slot of every agent in batches of at most `batch` slots: `SCAN` for
    /// the ZSET keys, a pipeline of `ZRANGE … WITHSCORES` for the keys of each `SCAN` call,
    /// then one pipeline of `HMGET` (the hash fields the rules read) per batch. Memory is
    /// bounded by the batch and one `SCAN` call's members, never by the number of keys,
    /// and a consumer that stops early has read only what it used.
    pub fn scan(
        &self,
        batch: usize,
    ) -> impl Stream<Item = Result<Vec<SlotEntry>, StoreError>> + Send + 'static {
        self.scan_filtered(batch, None)
    }

    /// [`Self::scan`] over the ZSETs in the census ([`Self::census_walk`]), leaving out
    /// those whose every slot [`Self::pair_open`] paired with an open run (counted in
    /// `paired`): the filter runs inside Redis, so slots already judged with their rows
    /// cost neither a transfer nor a lookup. The members of the other ZSETs all come back,
    /// paired or not. Census keys that are no longer slot ZSETs leave the census here.
    pub fn scan_unpaired(
        &self,
        batch: usize,
        paired: &PairedSet,
    ) -> impl Stream<Item = Result<Vec<SlotEntry>, StoreError>> + Send + 'static {
        self.scan_filtered(batch, Some(paired.key.clone()))
    }

    fn scan_filtered(
        &self,
        batch: usize,
        paired: Option<String>,
    ) -> impl Stream<Item = Result<Vec<SlotEntry>, StoreError>> + Send + 'static {
        let state = ScanState {
            store: self.clone(),
            batch: batch.max(1),
            cursor: Some(0),
            pending: VecDeque::new(),
            corrupt: Vec::new(),
            paired,
        };
        futures::stream::try_unfold(state, |mut state| async move {
            loop {
                let full = state.pending.len() >= state.batch;
                let last = state.cursor.is_none();
                if full || (last && (!state.pending.is_empty() || !state.corrupt.is_empty())) {
                    let take = state.pending.len().min(state.batch);
                    let slots: Vec<_> = state.pending.drain(..take).collect();
                    let mut entries = std::mem::take(&mut state.corrupt);
                    entries.extend(state.store.read_meta(slots).await?);
                    return Ok(Some((entries, state)));
                }
                let Some(cursor) = state.cursor else {
                    return Ok(None);
                };
                let (next, keys): (u64, Vec<Vec<u8>>) = match &state.paired {
                    // The slot pass reads the ZSETs in the census (see `census_walk`).
                    Some(_) => {
                        redis::cmd("SSCAN")
                            .arg(state.store.keys.census())
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(SCAN_COUNT)
                            .query_async(&mut state.store.conn.clone())
                            .await?
                    }
                    None => state.store.scan_keys(cursor).await?,
                };
                state.cursor = (next != 0).then_some(next);
                if !keys.is_empty() {
                    let members = match &state.paired {
                        None => state.store.zranges(keys).await?,
                        Some(paired) => state.store.unpaired(paired, keys).await?,
                    };
                    let (slots, corrupt) = state.store.parse_members(members);
                    state.pending.extend(slots);
                    state.corrupt.extend(corrupt);
                }
            }
        })
    }

    /// One `SCAN` call for slot ZSET keys.
    async fn scan_keys(&self, cursor: u64) -> Result<(u64, Vec<Vec<u8>>), StoreError> {
        Ok(redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(self.keys.scan_pattern())
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .arg("TYPE")
            .arg("zset")
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Advances the census of slot ZSET keys (the SET [`SlotKeys::census`], kept across
    /// sweeps) by walking the keyspace with `SCAN … TYPE zset` from where the last walk
    /// stopped, as far as `walk` allows; a walk that comes back to cursor 0 is complete.
    /// [`CensusWalk::Whole`] — or a census with no complete walk within its `max_age` —
    /// walks the whole keyspace now, from the start.
    ///
    /// The census only ever gains keys here (the slot pass drops those that are no longer
    /// slot ZSETs, [`Self::scan_unpaired`], and the row pass adds every ZSET it pairs a slot
    /// in, [`Self::pair_open`]), so a key that exists through a whole walk is in it when the
    /// walk completes, and one created since is in it once a row pass pairs one of its
    /// slots or the next walk passes it. Walking the keyspace is what a census costs —
    /// about 2 µs of Redis per key of any kind on Redis 7.0 — so `janitor run` spreads a
    /// walk over several sweeps.
    pub async fn census_walk(
        &self,
        walk: CensusWalk,
        now: Timestamp,
    ) -> Result<CensusReport, StoreError> {
        let (census, state) = (self.keys.census(), self.keys.census_walk());
        let (cursor, completed): (Option<u64>, Option<f64>) = redis::cmd("HMGET")
            .arg(state)
            .arg("cursor")
            .arg("completed")
            .query_async(&mut self.conn.clone())
            .await?;
        let now_secs = to_unix_seconds(now);
        let budget = match walk {
            CensusWalk::Share { fraction, max_age } => {
                let fresh = completed.is_some_and(|at| now_secs - at <= max_age.as_secs_f64());
                if fresh {
                    let keys: u64 = redis::cmd("DBSIZE")
                        .query_async(&mut self.conn.clone())
                        .await?;
                    let calls = (keys as f64 * fraction.clamp(0.0, 1.0) / SCAN_COUNT as f64).ceil();
                    Some((calls as u64).max(1))
                } else {
                    None
                }
            }
            CensusWalk::Whole => None,
        };
        let mut report = CensusReport {
            whole: budget.is_none(),
            ..CensusReport::default()
        };
        // A whole walk starts over: one that goes on from a cursor would miss the keys
        // created behind it since the walk began.
        let mut cursor = if report.whole { 0 } else { cursor.unwrap_or(0) };
        loop {
            let (next, keys) = self.scan_keys(cursor).await?;
            report.calls += 1;
            report.keys += keys.len() as u64;
            let mut pipe = redis::pipe();
            if !keys.is_empty() {
                pipe.cmd("SADD").arg(census).arg(&keys).ignore();
                pipe.cmd("EXPIRE").arg(census).arg(CENSUS_TTL_SECS).ignore();
            }
            if next == 0 {
                pipe.cmd("HDEL").arg(state).arg("cursor").ignore();
                pipe.cmd("HSET")
                    .arg(state)
                    .arg("completed")
                    .arg(now_secs)
                    .ignore();
            } else {
                pipe.cmd("HSET").arg(state).arg("cursor").arg(next).ignore();
            }
            pipe.cmd("EXPIRE").arg(state).arg(CENSUS_TTL_SECS).ignore();
            pipe.exec_async(&mut self.conn.clone()).await?;
            if next == 0 {
                report.completed = true;
                return Ok(report);
            }
            cursor = next;
            if budget.is_some_and(|b| report.calls >= b) {
                return Ok(report);
            }
        }
    }

    /// Every member of these slot ZSETs with its score (one pipeline).
    async fn zranges(&self, keys: Vec<Vec<u8>>) -> Result<Vec<KeyMembers>, StoreError> {
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES");
        }
        // A key that changed type since SCAN saw it reads as empty: its members are not
        // slots any more.
        let members: Vec<redis::RedisResult<Members>> = pipe
            .ignore_errors()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(keys
            .into_iter()
            .zip(members)
            .map(|(k, m)| (k, m.unwrap_or_default()))
            .collect())
    }

    /// The members of those of these slot ZSETs that hold slots not counted in `paired`
    /// (one script call).
    async fn unpaired(
        &self,
        paired: &str,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<KeyMembers>, StoreError> {
        let mut invocation = UNPAIRED.prepare_invoke();
        invocation.key(paired);
        invocation.key(self.keys.census());
        for key in &keys {
            invocation.key(key.as_slice());
        }
        let flat: Vec<Value> = invocation.invoke_async(&mut self.conn.clone()).await?;
        let mut out: Vec<KeyMembers> = keys.into_iter().map(|k| (k, Vec::new())).collect();
        let bad = || StoreError::Protocol("malformed unpaired-members reply".into());
        let mut flat = flat.into_iter();
        while let Some(index) = flat.next() {
            let (Some(member), Some(score)) = (flat.next(), flat.next()) else {
                return Err(bad());
            };
            let index = usize::from_redis_value(index).map_err(|_| bad())?;
            let member = Vec::<u8>::from_redis_value(member).map_err(|_| bad())?;
            let score = f64::from_redis_value(score).map_err(|_| bad())?;
            // KEYS[1] is the hash, KEYS[2] the census; the ZSETs start at KEYS[3].
            let (_, members) = index
                .checked_sub(3)
                .and_then(|i| out.get_mut(i))
                .ok_or_else(bad)?;
            members.push((member, score));
        }
        Ok(out)
    }

    /// Parses members read from their ZSETs; unusable ones as corrupt.
    fn parse_members(&self, members: Vec<KeyMembers>) -> (Vec<Member>, Vec<SlotEntry>) {
        let mut corrupt = Vec::new();
        let mut pending = Vec::new();
        for (key, members) in members {
            let key_text = String::from_utf8(key.clone()).ok();
            let key = key_text.clone().unwrap_or_else(|| escape_bytes(&key));
            let agent = match &key_text {
                None => Err("key is not UTF-8".to_owned()),
                Some(text) => self
                    .keys
                    .agent_of(text)
                    .map(AgentName::parse)
                    .transpose()
                    .map_err(|e| e.to_string()),
            };
            for (member, score) in members {
                let (member, utf8) = match String::from_utf8(member) {
                    Ok(text) => (text, true),
                    Err(e) => (escape_bytes(e.as_bytes()), false),
                };
                let parsed = match (&agent, ExecutionId::parse(member.clone())) {
                    _ if !utf8 => Err("member is not UTF-8".to_owned()),
                    (Ok(Some(agent)), Ok(execution)) => Ok((agent.clone(), execution)),
                    (Ok(None), _) => Err("key does not start with the slot prefix".to_owned()),
                    (Err(e), _) => Err(format!("bad agent name in key: {e}")),
                    (_, Err(e)) => Err(e.to_string()),
                };
                match parsed {
                    Ok((agent, execution)) => pending.push((agent, execution, score)),
                    Err(reason) => corrupt.push(SlotEntry::Corrupt(CorruptSlot {
                        key: key.clone(),
                        member,
                        reason,
                    })),
                }
            }
        }
        (pending, corrupt)
    }

    /// The metadata of these slots (one pipeline of `HMGET`).
    async fn read_meta(&self, pending: Vec<Member>) -> Result<Vec<SlotEntry>, StoreError> {
        let mut entries = Vec::with_capacity(pending.len());
        if pending.is_empty() {
            return Ok(entries);
        }
        let mut conn = self.conn.clone();
        // Only the fields the rules and the report read; the hash may be gone (it expires).
        let mut pipe = redis::pipe();
        for (agent, execution, _) in &pending {
            pipe.cmd("HMGET")
                .arg(self.keys.meta(agent, execution))
                .arg("timeout_seconds")
                .arg("started_at");
        }
        // Errors per command: one hash of the wrong type must not fail the batch.
        let fields: Vec<redis::RedisResult<(RawField, RawField)>> =
            pipe.ignore_errors().query_async(&mut conn).await?;
        let text = |v: Option<Vec<u8>>| v.map(|raw| String::from_utf8_lossy(&raw).into_owned());
        for ((agent, execution_id, score), read) in pending.into_iter().zip(fields) {
            let (timeout, has_meta, started) = match read {
                Ok((timeout, started)) => (
                    SlotTimeout::parse(text(timeout.clone()).as_deref()),
                    timeout.is_some() || started.is_some(),
                    text(started),
                ),
                // Unreadable metadata: the deadline takes the longest candidate.
                Err(e) => (SlotTimeout::Corrupt(format!("unreadable: {e}")), true, None),
            };
            entries.push(SlotEntry::Slot(ScannedSlot {
                has_meta,
                meta_started_at: started,
                observation: SlotObservation {
                    timeout,
                    sentinel: self.keys.is_sentinel(&execution_id),
                    agent,
                    execution_id,
                    score,
                },
            }));
        }
        Ok(entries)
    }

    /// Redis' clock and the slots of specific runs, in one round trip.
    pub async fn lookup_at(
        &self,
        runs: &[(AgentName, ExecutionId)],
    ) -> Result<(Timestamp, Vec<SlotRead>), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for (agent, execution) in runs {
            pipe.cmd("ZSCORE")
                .arg(self.keys.slots(agent))
                .arg(execution.as_str());
            read_timeout(&mut pipe, &self.keys, agent, execution);
        }
        let values: Vec<Value> = pipe
            .ignore_errors()
            .query_async(&mut self.conn.clone())
            .await?;
        let mut values = values.into_iter();
        let (secs, micros) = values
            .next()
            .map(<(i64, i64)>::from_redis_value)
            .transpose()
            .map_err(|e| StoreError::Protocol(e.to_string()))?
            .ok_or_else(|| StoreError::Protocol("no TIME reply".into()))?;
        let now = from_unix_seconds(secs as f64 + micros as f64 / 1e6)
            .ok_or_else(|| StoreError::Protocol(format!("TIME returned {secs}.{micros}")))?;
        let found = decode_lookup(&self.keys, runs, values)?;
        Ok((now, found))
    }

    /// Whether each run holds a slot (one pipeline of `ZSCORE`s).
    pub async fn holds(&self, runs: &[(AgentName, ExecutionId)]) -> Result<Vec<bool>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (agent, execution) in runs {
            pipe.cmd("ZSCORE")
                .arg(self.keys.slots(agent))
                .arg(execution.as_str());
        }
        let scores: Vec<Option<f64>> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(scores.into_iter().map(|s| s.is_some()).collect())
    }

    /// A new, empty [`PairedSet`] for one sweep. Nothing is written until [`Self::pair_open`].
    pub fn paired_set(&self) -> PairedSet {
        PairedSet {
            key: format!("janitor:sweep:{}:paired", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The slots of these open runs, with the fields the rules read: one pipeline of a
    /// `ZMSCORE` per agent and an `HGET` per run (runs come a few agents at a time, so this
    /// is far fewer commands than a `ZSCORE` per run). Then counts the slots found per ZSET
    /// in `paired` so that [`Self::scan_unpaired`] skips the ZSETs whose every slot was
    /// paired here.
    pub async fn pair_open(
        &self,
        paired: &PairedSet,
        runs: &[(AgentName, ExecutionId)],
    ) -> Result<Vec<SlotRead>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        // The runs of each agent, agents in first-seen order.
        let mut agents: Vec<(&AgentName, Vec<usize>)> = Vec::new();
        let mut position: HashMap<&AgentName, usize> = HashMap::new();
        for (i, (agent, _)) in runs.iter().enumerate() {
            let at = *position.entry(agent).or_insert_with(|| {
                agents.push((agent, Vec::new()));
                agents.len() - 1
            });
            agents[at].1.push(i);
        }
        // With the timeout cache: the runs whose timeout an earlier sweep read, with the
        // score it was read at; only the others' are read now.
        let clock = std::time::Instant::now();
        let (run_keys, mut timeouts): (Vec<u64>, Vec<Option<Timeout>>) = match &self.timeouts {
            Some(cache) => {
                let cache = cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                runs.iter()
                    .map(|(agent, execution)| {
                        let key = cache.key(agent, execution);
                        (
                            key,
                            cache.get(key, clock).map(|(s, t)| Timeout::Cached(s, t)),
                        )
                    })
                    .unzip()
            }
            None => (Vec::new(), runs.iter().map(|_| None).collect()),
        };
        let mut pipe = redis::pipe();
        for (agent, of_agent) in &agents {
            let cmd = pipe.cmd("ZMSCORE").arg(self.keys.slots(agent));
            for &i in of_agent {
                cmd.arg(runs[i].1.as_str());
            }
        }
        let mut reads = 0;
        for ((agent, execution), timeout) in runs.iter().zip(&timeouts) {
            if timeout.is_none() {
                read_timeout(&mut pipe, &self.keys, agent, execution);
                reads += 1;
            }
        }
        // Errors per command: one key of the wrong type must not fail the page.
        let values: Vec<Value> = pipe
            .ignore_errors()
            .query_async(&mut self.conn.clone())
            .await?;
        if values.len() != agents.len() + reads {
            return Err(StoreError::Protocol("short pipeline reply".into()));
        }
        let protocol = |e: redis::ParsingError| StoreError::Protocol(e.to_string());
        let mut values = values.into_iter();
        let mut scores: Vec<Result<Option<f64>, String>> = vec![Ok(None); runs.len()];
        let mut counts: Vec<(&AgentName, i64)> = Vec::new();
        for ((agent, of_agent), found) in agents.iter().zip(values.by_ref()) {
            if let Some(reason) = refused(&found) {
                for &i in of_agent {
                    scores[i] = Err(reason.clone());
                }
                continue;
            }
            let found = Vec::<Option<f64>>::from_redis_value(found).map_err(protocol)?;
            if found.len() != of_agent.len() {
                return Err(StoreError::Protocol("short ZMSCORE reply".into()));
            }
            let mut count = 0;
            for (&i, score) in of_agent.iter().zip(found) {
                if score.is_some() {
                    count += 1;
                }
                scores[i] = Ok(score);
            }
            if count > 0 {
                counts.push((agent, count));
            }
        }
        for timeout in timeouts.iter_mut().filter(|t| t.is_none()) {
            *timeout = values.next().map(Timeout::Read);
        }
        // A cached timeout whose slot has moved (renewed, or a new slot for the same run):
        // read again, in one more round trip.
        let moved: Vec<usize> = (0..runs.len())
            .filter(|&i| match (&timeouts[i], &scores[i]) {
                (Some(Timeout::Cached(at, _)), Ok(Some(score))) => at != score,
                _ => false,
            })
            .collect();
        if !moved.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &moved {
                let (agent, execution) = &runs[i];
                read_timeout(&mut pipe, &self.keys, agent, execution);
            }
            let values: Vec<Value> = pipe
                .ignore_errors()
                .query_async(&mut self.conn.clone())
                .await?;
            if values.len() != moved.len() {
                return Err(StoreError::Protocol("short pipeline reply".into()));
            }
            for (&i, value) in moved.iter().zip(values) {
                timeouts[i] = Some(Timeout::Read(value));
            }
        }
        let mut found = Vec::with_capacity(runs.len());
        // What this page read, for the cache: (run, score, declared timeout or none).
        let mut learned: Vec<(usize, f64, Option<i64>)> = Vec::new();
        for (i, (((agent, execution), score), timeout)) in
            runs.iter().zip(scores).zip(timeouts).enumerate()
        {
            let timeout =
                timeout.ok_or_else(|| StoreError::Protocol("short pipeline reply".into()))?;
            found.push(match score {
                Ok(score) => {
                    let slot = match timeout {
                        Timeout::Cached(_, secs) => score.map(|score| {
                            observation(
                                &self.keys,
                                agent,
                                execution,
                                score,
                                SlotTimeout::Declared(secs),
                            )
                        }),
                        Timeout::Read(value) => {
                            let slot = observed(&self.keys, agent, execution, score, value)?;
                            if let Some(slot) = &slot {
                                let declared = match slot.timeout {
                                    SlotTimeout::Declared(secs) => Some(secs),
                                    _ => None,
                                };
                                learned.push((i, slot.score, declared));
                            }
                            slot
                        }
                    };
                    Ok(slot)
                }
                Err(reason) => Err(unreadable_slot(&self.keys, agent, execution, reason)),
            });
        }
        if let Some(cache) = &self.timeouts {
            let mut cache = cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (i, score, declared) in learned {
                match declared {
                    Some(secs) => cache.put(run_keys[i], score, secs, clock),
                    None => cache.forget(run_keys[i]),
                }
            }
            cache.prune(clock);
            janitor_metrics::timeout_cache_size(cache.len());
        }
        if !counts.is_empty() {
            // The row pass's pages are a keyset ordered by agent, so only the first and the
            // last agent of a page can have runs in another page: theirs are added to, the
            // others' set in one command. (Runs in another order only ever lower a count,
            // which costs the slot pass a read, never a slot.)
            let (first, last) = (agents[0].0, agents[agents.len() - 1].0);
            let mut pipe = redis::pipe();
            // The census learns every ZSET the row pass pairs a slot in: one created since
            // the last walk passed its place is looked at by this very sweep's slot pass.
            let census: Vec<String> = counts.iter().map(|(a, _)| self.keys.slots(a)).collect();
            pipe.cmd("SADD")
                .arg(self.keys.census())
                .arg(census)
                .ignore();
            pipe.cmd("EXPIRE")
                .arg(self.keys.census())
                .arg(CENSUS_TTL_SECS)
                .ignore();
            let mut inside = Vec::new();
            for (agent, count) in counts {
                if agent == first || agent == last {
                    pipe.cmd("HINCRBY")
                        .arg(&paired.key)
                        .arg(self.keys.slots(agent))
                        .arg(count)
                        .ignore();
                } else {
                    inside.push((self.keys.slots(agent), count));
                }
            }
            if !inside.is_empty() {
                pipe.cmd("HSET").arg(&paired.key).arg(inside).ignore();
            }
            pipe.cmd("EXPIRE")
                .arg(&paired.key)
                .arg(PAIRED_TTL_SECS)
                .ignore();
            pipe.exec_async(&mut self.conn.clone()).await?;
        }
        Ok(found)
    }

    /// Deletes a sweep's [`PairedSet`] (it also expires by itself).
    pub async fn drop_paired(&self, paired: &PairedSet) -> Result<(), StoreError> {
        redis::cmd("UNLINK")
            .arg(&paired.key)
            .exec_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The evidence of life kept beside the slots for these runs: whether each one's
    /// in-flight marker exists. One `MGET` for the whole batch (none when markers are off).
    pub async fn liveness(&self, runs: &[ExecutionId]) -> Result<Vec<Liveness>, StoreError> {
        let keys: Vec<String> = runs.iter().filter_map(|e| self.keys.inflight(e)).collect();
        if keys.is_empty() {
            return Ok(vec![Liveness::NONE; runs.len()]);
        }
        // Only existence matters (the platform writes a string; MGET reads any other
        // type as nil, i.e. no marker), so the values are never decoded.
        let values: Vec<Value> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await?;
        if values.len() != runs.len() {
            return Err(StoreError::Protocol("short MGET reply".into()));
        }
        Ok(values
            .iter()
            .map(|v| Liveness {
                in_flight: !matches!(v, Value::Nil),
                agent: None,
            })
            .collect())
    }

    /// Looks up the slots of specific runs (one pipeline): `None` where the run holds none.
    pub async fn lookup(
        &self,
        runs: &[(AgentName, ExecutionId)],
    ) -> Result<Vec<Option<SlotObservation>>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        self.lookup_at(runs)
            .await?
            .1
            .into_iter()
            .map(|read| {
                read.map_err(|c| {
                    StoreError::Protocol(format!("slot {} {}: {}", c.key, c.member, c.reason))
                })
            })
            .collect()
    }
}

/// Pairs `ZSCORE`, `HGET timeout_seconds` replies with the runs they were asked for.
fn decode_lookup(
    keys: &SlotKeys,
    runs: &[(AgentName, ExecutionId)],
    mut values: impl Iterator<Item = Value>,
) -> Result<Vec<SlotRead>, StoreError> {
    let mut found = Vec::with_capacity(runs.len());
    for (agent, execution) in runs {
        let (Some(score), Some(timeout)) = (values.next(), values.next()) else {
            return Err(StoreError::Protocol("short pipeline reply".into()));
        };
        if let Some(reason) = refused(&score) {
            found.push(Err(unreadable_slot(keys, agent, execution, reason)));
            continue;
        }
        let score = Option::<f64>::from_redis_value(score)
            .map_err(|e| StoreError::Protocol(e.to_string()))?;
        found.push(Ok(observed(keys, agent, execution, score, timeout)?));
    }
    Ok(found)
}

/// A run's slot from its score (`None`: the run holds none) and its hash's raw
/// `timeout_seconds` reply.
fn observed(
    keys: &SlotKeys,
    agent: &AgentName,
    execution: &ExecutionId,
    score: Option<f64>,
    timeout: Value,
) -> Result<Option<SlotObservation>, StoreError> {
    let timeout = match refused(&timeout) {
        // A hash of the wrong type: unreadable metadata, judged by the longest candidate.
        Some(reason) => SlotTimeout::Corrupt(reason),
        None => {
            let raw = Option::<Vec<u8>>::from_redis_value(timeout)
                .map_err(|e| StoreError::Protocol(e.to_string()))?
                .map(|raw| String::from_utf8_lossy(&raw).into_owned());
            SlotTimeout::parse(raw.as_deref())
        }
    };
    Ok(score.map(|score| observation(keys, agent, execution, score, timeout)))
}

/// A run's slot at `score` with its declared `timeout`.
fn observation(
    keys: &SlotKeys,
    agent: &AgentName,
    execution: &ExecutionId,
    score: f64,
    timeout: SlotTimeout,
) -> SlotObservation {
    SlotObservation {
        agent: agent.clone(),
        execution_id: execution.clone(),
        score,
        timeout,
        sentinel: keys.is_sentinel(execution),
    }
}
