//! The Redis slot store, in three parts: the platform's own operations (acquire, renew,
//! release, compare-and-delete; this file), the observation reads a sweep and a worker
//! make ([`observe`]: scan, pairing with open runs, lookups), and janitor's batched,
//! audited removals ([`changes`]).
//!
//! Every mutation is one Lua script, so it is atomic on the server, and every time it
//! needs comes from Redis' own `TIME`: replicas with skewed clocks agree on what is stale.

mod changes;
mod observe;
mod timeouts;

pub use changes::{drain_outbox, SlotChange, OUTBOX_BATCH};
pub use observe::SlotRead;

use std::sync::LazyLock;
use std::time::Duration;

use janitor_core::{
    from_unix_seconds, to_unix_seconds, AgentName, AgentSays, ExecutionId, Liveness,
    SlotObservation, Timestamp,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use crate::{AgentProbe, SlotKeys, StoreError};

static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/acquire.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/renew.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/release.lua")));
static RECLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/reclaim.lua")));

/// Longest `message_preview` stored in a slot hash, as on the platform.
pub const MESSAGE_PREVIEW_CHARS: usize = 100;

/// Outcome of [`SlotStore::acquire`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Acquire {
    Acquired {
        slot_number: i64,
        score: f64,
    },
    /// The execution already holds a slot; nothing changed.
    AlreadyHeld {
        slot_number: i64,
        score: f64,
    },
    /// The agent is at capacity.
    Full {
        held: i64,
    },
}

/// Outcome of [`SlotStore::renew`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Renew {
    Renewed {
        score: f64,
    },
    /// The slot is gone (released or reclaimed); it is not recreated.
    NotHeld,
}

/// Outcome of [`SlotStore::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    Released,
    NotHeld,
}

/// Outcome of the compare-and-delete calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reclaim {
    /// Removed: the score was the observed one (and the deadline had passed).
    Reclaimed,
    /// Someone else removed it first.
    AlreadyGone,
    /// The score changed since it was observed: the slot was renewed and is alive.
    Renewed { score: f64 },
    /// Same score, but Redis' clock says the deadline has not passed.
    NotYetDue,
}

/// A slot found by [`SlotStore::scan`], with what its hash says.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedSlot {
    pub observation: SlotObservation,
    /// Whether the metadata hash still exists (it expires by itself).
    pub has_meta: bool,
    /// The hash's `started_at`, as written.
    pub meta_started_at: Option<String>,
}

/// A ZSET member that cannot be a slot: reported, never touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptSlot {
    pub key: String,
    pub member: String,
    pub reason: String,
}

/// One entry of a scan batch.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotEntry {
    Slot(ScannedSlot),
    Corrupt(CorruptSlot),
}

/// A sweep's scratch HASH counting, per slot ZSET, the slots already judged from the row
/// side; held in Redis so the sweep's own memory grows with neither slots nor agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairedSet {
    key: String,
}

impl PairedSet {
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// How much of the keyspace one sweep's census walk covers
/// ([`SlotStore::census_walk`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum CensusWalk {
    /// The whole keyspace, from the start, now.
    #[default]
    Whole,
    /// About this fraction of the keyspace's keys, going on from where the walk stopped,
    /// so a walk spans about `1 / fraction` sweeps — unless no walk completed within
    /// `max_age`: then the whole keyspace, now.
    Share {
        fraction: f64,
        max_age: std::time::Duration,
    },
}

/// What one census walk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CensusReport {
    /// `SCAN` calls made.
    pub calls: u64,
    /// Slot ZSET keys found (recorded in the census).
    pub keys: u64,
    /// The walk went over the whole keyspace from the start.
    pub whole: bool,
    /// The walk came back to cursor 0: every key that existed through it is in the census.
    pub completed: bool,
}

/// Slots in Redis under one [`SlotKeys`] layout.
#[derive(Clone)]
pub struct SlotStore {
    conn: ConnectionManager,
    keys: SlotKeys,
    ttl_buffer_secs: i64,
    /// The agent liveness probe, when configured: the other evidence beside the stores.
    probe: Option<AgentProbe>,
    /// Timeouts read by earlier sweeps, in a long-running producer
    /// ([`Self::with_timeout_cache`]).
    timeouts: Option<std::sync::Arc<std::sync::Mutex<timeouts::TimeoutCache>>>,
}

impl std::fmt::Debug for SlotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotStore")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl SlotStore {
    /// Connects (and checks the connection with `PING`). The connection reconnects by
    /// itself after Redis restarts; calls made while it is down fail fast with a transient
    /// error.
    pub async fn connect(
        url: &str,
        keys: SlotKeys,
        ttl_buffer_secs: i64,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2);
        let mut conn = ConnectionManager::new_with_config(client, config).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(Self {
            conn,
            keys,
            ttl_buffer_secs,
            probe: None,
            timeouts: None,
        })
    }

    /// Lets sweeps reuse a run's declared timeout read by an earlier sweep while its slot's
    /// score is unchanged, for 5 to 15 minutes (see the `timeouts` module): for a process
    /// that sweeps again and again. About 32 bytes per open run.
    pub fn with_timeout_cache(mut self) -> Self {
        self.timeouts = Some(Default::default());
        self
    }

    /// Asks agents before their runs are failed or their slots removed (see [`AgentProbe`]).
    pub fn with_probe(mut self, probe: Option<AgentProbe>) -> Self {
        self.probe = probe;
        self
    }

    pub fn probe(&self) -> Option<&AgentProbe> {
        self.probe.as_ref()
    }

    /// Fills in what the agents say about the runs `ask` selects: one request per agent,
    /// none when the probe is off or nothing is selected. `runs[i]` pairs with `live[i]`.
    pub async fn ask_agents(
        &self,
        runs: &[(AgentName, ExecutionId)],
        live: &mut [Liveness],
        ask: impl Fn(usize) -> bool,
    ) {
        let Some(probe) = &self.probe else { return };
        let wanted: Vec<usize> = (0..runs.len().min(live.len()))
            .filter(|&i| ask(i))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let agents: Vec<AgentName> = wanted.iter().map(|&i| runs[i].0.clone()).collect();
        let answers = probe.ask(&agents).await;
        for i in wanted {
            live[i].agent = Some(match answers.get(&runs[i].0) {
                Some(Ok(known)) => known.says(&runs[i].1),
                _ => AgentSays::Unreachable,
            });
        }
    }

    pub fn keys(&self) -> &SlotKeys {
        &self.keys
    }

    /// A handle on the underlying connection, for callers that share it (e.g. the queue).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// "Now" for every decision: the Redis server's clock.
    pub async fn server_time(&self) -> Result<Timestamp, StoreError> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.conn.clone())
            .await?;
        from_unix_seconds(secs as f64 + micros as f64 / 1e6)
            .ok_or_else(|| StoreError::Protocol(format!("TIME returned {secs}.{micros}")))
    }

    /// Takes a slot for `execution` if the agent has fewer than `max_parallel`.
    pub async fn acquire(
        &self,
        agent: &AgentName,
        execution: &ExecutionId,
        max_parallel: u32,
        timeout_secs: i64,
        message: &str,
    ) -> Result<Acquire, StoreError> {
        let preview: String = message.chars().take(MESSAGE_PREVIEW_CHARS).collect();
        let (code, number, score): (i64, i64, String) = ACQUIRE
            .key(self.keys.slots(agent))
            .key(self.keys.meta(agent, execution))
            .arg(execution.as_str())
            .arg(max_parallel)
            .arg(timeout_secs)
            .arg(self.ttl_buffer_secs)
            .arg(preview)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match code {
            1 => Acquire::Acquired {
                slot_number: number,
                score: parse_score(&score)?,
            },
            2 => Acquire::AlreadyHeld {
                slot_number: number,
                score: parse_score(&score)?,
            },
            _ => Acquire::Full { held: number },
        })
    }

    /// Re-anchors the slot's score to now (and its hash's expiry), only if it still exists.
    /// `timeout_secs` replaces the slot's own timeout when given.
    pub async fn renew(
        &self,
        agent: &AgentName,
        execution: &ExecutionId,
        timeout_secs: Option<i64>,
    ) -> Result<Renew, StoreError> {
        let (code, score): (i64, String) = RENEW
            .key(self.keys.slots(agent))
            .key(self.keys.meta(agent, execution))
            .arg(execution.as_str())
            .arg(self.ttl_buffer_secs)
            .arg(timeout_secs.map(|t| t.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(if code == 1 {
            Renew::Renewed {
                score: parse_score(&score)?,
            }
        } else {
            Renew::NotHeld
        })
    }

    /// Releases the slot (the run finished). Idempotent.
    pub async fn release(
        &self,
        agent: &AgentName,
        execution: &ExecutionId,
    ) -> Result<Release, StoreError> {
        let removed: i64 = RELEASE
            .key(self.keys.slots(agent))
            .key(self.keys.meta(agent, execution))
            .arg(execution.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(if removed == 1 {
            Release::Released
        } else {
            Release::NotHeld
        })
    }

    /// Removes a stale slot only if its score is still `observed_score` and Redis' clock is
    /// past `deadline`. A renewal in between makes this return [`Reclaim::Renewed`].
    pub async fn reclaim_if_expired(
        &self,
        agent: &AgentName,
        execution: &ExecutionId,
        observed_score: f64,
        deadline: Timestamp,
    ) -> Result<Reclaim, StoreError> {
        self.compare_and_delete(agent, execution, observed_score, Some(deadline))
            .await
    }

    /// Removes a leaked slot only if its score is still `observed_score`.
    pub async fn release_if_unchanged(
        &self,
        agent: &AgentName,
        execution: &ExecutionId,
        observed_score: f64,
    ) -> Result<Reclaim, StoreError> {
        self.compare_and_delete(agent, execution, observed_score, None)
            .await
    }

    async fn compare_and_delete(
        &self,
        agent: &AgentName,
        execution: &ExecutionId,
        observed_score: f64,
        deadline: Option<Timestamp>,
    ) -> Result<Reclaim, StoreError> {
        let (code, current): (i64, String) = RECLAIM
            .key(self.keys.slots(agent))
            .key(self.keys.meta(agent, execution))
            .arg(execution.as_str())
            // Shortest round-trip text: Lua's tonumber() reads back the same double.
            .arg(observed_score.to_string())
            .arg(
                deadline
                    .map(|d| to_unix_seconds(d).to_string())
                    .unwrap_or_default(),
            )
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match code {
            1 => Reclaim::Reclaimed,
            0 => Reclaim::AlreadyGone,
            2 => Reclaim::Renewed {
                score: parse_score(&current)?,
            },
            _ => Reclaim::NotYetDue,
        })
    }
}

fn parse_score(text: &str) -> Result<f64, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Protocol(format!("score {text:?} is not a number")))
}
