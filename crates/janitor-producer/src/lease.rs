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

    /// Renews the lease every third of its TTL until the returned guard is dropped, so a
    /// pass longer than the TTL keeps it (pushes still confirm it, the fence, each time).
    /// A renewal that finds the lease gone stops: the next push then fails with
    /// [`LeaseLost`].
    pub fn keep_alive(&self) -> KeepAlive {
        let lease = self.clone();
        let every = (self.ttl / 3).max(Duration::from_millis(10));
        KeepAlive(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                match lease.check(lease.ttl.as_millis() as u64).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(key = %lease.key, token = lease.token, "the sweep lease was lost; this sweep will stop at its next push");
                        return;
                    }
                    // Redis unreachable: the next push's check decides.
                    Err(e) => tracing::warn!(error = %e, "renewing the sweep lease failed"),
                }
            }
        }))
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

/// Renews a [`SweepLease`] in the background while it lives (see [`SweepLease::keep_alive`]).
#[derive(Debug)]
pub struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Safety issue item 6: the lease was renewed only when pushing, and a pass longer than
    /// its TTL (reclaims are pushed last) lost it and never enqueued them.
    #[tokio::test]
    async fn a_kept_alive_lease_outlives_its_ttl() {
        let client = redis::Client::open(janitor_testkit::redis_url()).unwrap();
        let conn = ConnectionManager::new(client).await.unwrap();
        let queue = format!("jt{}:queue", janitor_testkit::unique());
        let ttl = Duration::from_millis(300);
        let lease = SweepLease::acquire(conn.clone(), &queue, "p1", ttl, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        let renewal = lease.keep_alive();
        // Three TTLs pass: with renewals, still ours, and nobody else can take it.
        tokio::time::sleep(ttl * 3).await;
        assert!(lease.ensure().await.is_ok());
        let other = SweepLease::acquire(conn.clone(), &queue, "p2", ttl, Duration::ZERO)
            .await
            .unwrap();
        assert!(other.is_none());
        // Without renewals it lapses.
        drop(renewal);
        tokio::time::sleep(ttl * 2).await;
        assert!(matches!(lease.ensure().await, Err(LeaseOrRedis::Lost(_))));
    }
}
