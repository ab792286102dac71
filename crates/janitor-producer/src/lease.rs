//! The sweep lease: one sweep at a time across any number of producers.
//!
//! A Redis key taken with `SET NX PX` names the holder and a fencing token from a
//! monotonic counter. The holder re-checks (and extends) the lease before every batch it
//! enqueues, so a producer that stalled past the TTL and lost the lease stops instead of
//! enqueueing alongside the new holder.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Script;

static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/lease_acquire.lua")));
static CHECK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/lease_check.lua")));

/// A held sweep lease.
#[derive(Clone)]
pub struct SweepLease {
    conn: ConnectionManager,
    key: String,
    value: String,
    ttl: Duration,
    token: u64,
}

impl std::fmt::Debug for SweepLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepLease")
            .field("key", &self.key)
            .field("token", &self.token)
            .finish()
    }
}

/// The lease was lost (expired and taken by another producer).
#[derive(Debug, thiserror::Error)]
#[error("the sweep lease {key} was lost (fencing token {token} is stale); stopping this sweep")]
pub struct LeaseLost {
    pub key: String,
    pub token: u64,
}

impl SweepLease {
    /// Waits up to `wait` for the lease of `queue`; `None` if another producer kept it.
    pub async fn acquire(
        conn: ConnectionManager,
        queue: &str,
        holder: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<Self>, redis::RedisError> {
        let key = format!("{queue}:janitor:sweep-lease");
        let fence = format!("{queue}:janitor:sweep-fence");
        let deadline = Instant::now() + wait;
        loop {
            let token: u64 = ACQUIRE
                .key(&key)
                .key(&fence)
                .arg(holder)
                .arg(ttl.as_millis() as u64)
                .invoke_async(&mut conn.clone())
                .await?;
            if token > 0 {
                return Ok(Some(Self {
                    conn,
                    value: format!("{holder}|{token}"),
                    key,
                    ttl,
                    token,
                }));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The fencing token: strictly increasing across holders.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Confirms the lease is still ours and extends it.
    pub async fn ensure(&self) -> Result<(), LeaseOrRedis> {
        if self.check(self.ttl.as_millis() as u64).await? {
            Ok(())
        } else {
            Err(LeaseOrRedis::Lost(LeaseLost {
                key: self.key.clone(),
                token: self.token,
            }))
        }
    }

    /// Releases the lease if it is still ours.
    pub async fn release(self) -> Result<(), redis::RedisError> {
        self.check(0).await.map(|_| ())
    }

    async fn check(&self, ttl_ms: u64) -> Result<bool, redis::RedisError> {
        let ours: i64 = CHECK
            .key(&self.key)
            .arg(&self.value)
            .arg(ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(ours == 1)
    }
}

/// Either the lease was lost or Redis failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseOrRedis {
    #[error(transparent)]
    Lost(#[from] LeaseLost),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}
