//! A sandboxed platform: one private database and one private slot key space, with helpers
//! that write slots and runs exactly the way the platform does.

use anyhow::Context as _;
use sqlx::Connection as _;

use crate::{redis_url, slot_prefixes, Kind, TestDb};

/// Deletes every key matching ARGV[1], a `SCAN` page at a time, inside Redis.
/// Deletes the keys matching ARGV[1] from SCAN cursor ARGV[2] on, a few pages at a time (a
/// million keys in one call would block Redis for seconds and outlast a client's timeout);
/// returns the next cursor, `0` when done.
static CLEAR_NAMESPACE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local cursor = ARGV[2]
         for _ = 1, 5 do
           local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 2000)
           cursor = page[1]
           for _, key in ipairs(page[2]) do redis.call('UNLINK', key) end
           if cursor == '0' then break end
         end
         return cursor",
    )
});

/// A generation of the platform's schema, as its own code created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Late 2025: no `claude_session_id`, no timeout columns, `agent_ownership` keyed by id.
    Late2025,
    /// Spring 2026, the seed janitor was first built on: sessions and timeouts.
    Spring2026,
    /// Today (autumn 2026): pull-mode lease columns too. What `migrate
    /// --create-platform-tables` creates.
    Today,
}

impl Generation {
    pub const ALL: [Generation; 3] = [Self::Late2025, Self::Spring2026, Self::Today];

    /// The generation's DDL (portable across both backends).
    pub fn ddl(self) -> &'static str {
        match self {
            Self::Late2025 => include_str!("../../../migrations/platform/late-2025.sql"),
            Self::Spring2026 => include_str!("../../../migrations/platform/spring-2026.sql"),
            Self::Today => concat!(
                include_str!("../../../migrations/platform/today.sql"),
                include_str!("../../../migrations/platform/today-indexes.sql")
            ),
        }
    }

    /// Whether runs record `claude_session_id`.
    pub fn has_sessions(self) -> bool {
        self != Self::Late2025
    }

    /// Whether runs can hold a pull-mode lease.
    pub fn has_leases(self) -> bool {
        self == Self::Today
    }
}

/// A private database plus private slot prefixes.
#[derive(Debug)]
pub struct Sandbox {
    pub db: TestDb,
    pub slot_prefix: String,
    pub meta_prefix: String,
    /// A queue name private to this sandbox.
    pub queue: String,
    /// The platform generation the tables were created as ([`Sandbox::create_platform`]);
    /// today's unless set.
    generation: std::sync::OnceLock<Generation>,
}

impl Sandbox {
    pub async fn new(kind: Kind) -> anyhow::Result<Self> {
        let (slot_prefix, meta_prefix) = slot_prefixes();
        let queue = format!(
            "{}janitor:cleanup",
            slot_prefix.trim_end_matches("agent:slots:")
        );
        Ok(Self {
            db: TestDb::new(kind).await?,
            slot_prefix,
            meta_prefix,
            queue,
            generation: std::sync::OnceLock::new(),
        })
    }

    /// Creates the platform's tables as `generation` of its code did (before janitor's
    /// `migrate`, as on a real platform database).
    pub async fn create_platform(&self, generation: Generation) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.generation.set(generation).is_ok(),
            "the platform tables were already created"
        );
        self.sql(generation.ddl()).await
    }

    /// The generation of the platform's tables.
    pub fn generation(&self) -> Generation {
        self.generation.get().copied().unwrap_or(Generation::Today)
    }

    /// Marks a run alive as the platform's backend does while a dispatch is alive in it:
    /// `execution:inflight:{id}` (in this sandbox's namespace) with a 60 s TTL.
    pub async fn mark_in_flight(&self, execution: &str) -> anyhow::Result<()> {
        let namespace = self.slot_prefix.trim_end_matches("agent:slots:");
        redis::cmd("SET")
            .arg(format!("{namespace}execution:inflight:{execution}"))
            .arg("backend-1")
            .arg("EX")
            .arg(60)
            .query_async::<()>(&mut self.redis().await?)
            .await?;
        Ok(())
    }

    pub async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(redis_url())?
            .get_multiplexed_async_connection()
            .await?)
    }

    /// Redis' clock, in unix seconds.
    pub async fn redis_now(&self) -> anyhow::Result<f64> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.redis().await?)
            .await?;
        Ok(secs as f64 + micros as f64 / 1e6)
    }

    /// Writes a slot as the platform does, acquired `age_secs` ago by Redis' clock.
    /// Returns its score.
    pub async fn seed_slot(
        &self,
        agent: &str,
        execution: &str,
        age_secs: f64,
        timeout: Option<i64>,
    ) -> anyhow::Result<f64> {
        let score = self.redis_now().await? - age_secs;
        let meta = format!("{}{agent}:{execution}", self.meta_prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(format!("{}{agent}", self.slot_prefix))
            .arg(score)
            .arg(execution);
        pipe.cmd("HSET")
            .arg(&meta)
            .arg("started_at")
            .arg("2026-05-01T15:30:00.000000")
            .arg("slot_number")
            .arg(1);
        if let Some(timeout) = timeout {
            pipe.cmd("HSET")
                .arg(&meta)
                .arg("timeout_seconds")
                .arg(timeout);
            pipe.cmd("EXPIRE").arg(&meta).arg(timeout + 300);
        }
        pipe.query_async::<()>(&mut self.redis().await?).await?;
        // Read the score back as Redis stores it.
        let stored: f64 = redis::cmd("ZSCORE")
            .arg(format!("{}{agent}", self.slot_prefix))
            .arg(execution)
            .query_async(&mut self.redis().await?)
            .await?;
        Ok(stored)
    }

    /// Deletes every Redis key of this sandbox (slots, slot hashes, queue), so large runs
    /// do not leave a keyspace that slows every later SCAN. Dropping the sandbox does it too.
    pub async fn clear_redis(&self) -> anyhow::Result<()> {
        let mut conn = self.redis().await?;
        let pattern = format!("{}*", self.namespace());
        let mut cursor = "0".to_owned();
        loop {
            cursor = CLEAR_NAMESPACE
                .arg(&pattern)
                .arg(&cursor)
                .invoke_async::<String>(&mut conn)
                .await?;
            if cursor == "0" {
                break;
            }
        }
        redis::cmd("UNLINK")
            .arg(self.layout_keys().as_slice())
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// The keys janitor names after this sandbox's slot layout, outside the namespace
    /// (`SlotKeys` in janitor-store, which this crate does not depend on): the audit outbox
    /// STREAM, the census of slot ZSETs and its walk.
    fn layout_keys(&self) -> [String; 3] {
        ["audit-outbox", "census", "census-walk"]
            .map(|k| format!("janitor:{k}:{}", self.slot_prefix))
    }

    /// `jt…:`, the prefix of every key this sandbox's slots and queue use.
    fn namespace(&self) -> &str {
        self.slot_prefix.trim_end_matches("agent:slots:")
    }

    /// Members of an agent's slot set.
    pub async fn slot_members(&self, agent: &str) -> anyhow::Result<Vec<String>> {
        Ok(redis::cmd("ZRANGE")
            .arg(format!("{}{agent}", self.slot_prefix))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.redis().await?)
            .await?)
    }

    /// Runs SQL statements on the sandbox database (creating a SQLite file if needed).
    pub async fn sql(&self, sql: &str) -> anyhow::Result<()> {
        run_sql(self.db.kind, &self.db.url, sql).await
    }

    /// The database's kind and URL, for code that must outlive the sandbox's borrow (a
    /// fault-injection hook).
    pub fn db_handle(&self) -> (Kind, String) {
        (self.db.kind, self.db.url.clone())
    }

    /// One text value (first column of the first row), or `None` for NULL / no row.
    pub async fn sql_text(&self, sql: &str) -> anyhow::Result<Option<String>> {
        Ok(match self.db.kind {
            Kind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.db.url).await?;
                let v: Option<Option<String>> =
                    sqlx::query_scalar(sql).fetch_optional(&mut conn).await?;
                conn.close().await?;
                v.flatten()
            }
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.db.url).await?;
                let v: Option<Option<String>> =
                    sqlx::query_scalar(sql).fetch_optional(&mut conn).await?;
                conn.close().await?;
                v.flatten()
            }
        })
    }

    /// Inserts a run row as the platform does.
    pub async fn seed_run(
        &self,
        id: &str,
        agent: &str,
        status: &str,
        started_at: &str,
        session: Option<&str>,
    ) -> anyhow::Result<()> {
        // A generation without sessions has no column to write one to.
        let (column, session) = match (self.generation().has_sessions(), session) {
            (false, _) => ("", String::new()),
            (true, None) => (", claude_session_id", ", NULL".to_owned()),
            (true, Some(s)) => (", claude_session_id", format!(", '{s}'")),
        };
        self.sql(&format!(
            "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by{column}) \
             VALUES ('{id}', '__manual__', '{}', '{status}', '{started_at}', 'run the report', 'schedule'{session})",
            agent.replace('\'', "''")
        ))
        .await
    }

    /// Inserts a pull-mode run as the platform's claim leaves it: `running`, queued at
    /// `queued_at`, claimed by a worker with a lease until `lease_expires_at`.
    pub async fn seed_leased_run(
        &self,
        id: &str,
        agent: &str,
        queued_at: &str,
        lease_expires_at: &str,
        redelivery_count: i64,
    ) -> anyhow::Result<()> {
        self.sql(&format!(
            "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, \
             claude_session_id, queued_at, claim_token, lease_expires_at, claimed_by_worker, redelivery_count) \
             VALUES ('{id}', '__manual__', '{}', 'running', '{queued_at}', 'run the report', 'schedule', \
             'dispatched_async', '{queued_at}', 'tok-{id}', '{lease_expires_at}', 'pull-worker-1', {redelivery_count})",
            agent.replace('\'', "''")
        ))
        .await
    }

    /// Opens the run's `started` activity, as the platform does for every task run.
    pub async fn seed_activity(
        &self,
        id: &str,
        execution: &str,
        started_at: &str,
    ) -> anyhow::Result<()> {
        self.sql(&format!(
            "INSERT INTO agent_activities (id, agent_name, activity_type, activity_state, started_at, related_execution_id, created_at) \
             VALUES ('{id}', 'a', 'schedule_start', 'started', '{started_at}', '{execution}', '{started_at}')"
        ))
        .await
    }

    /// A run's status.
    pub async fn status(&self, id: &str) -> anyhow::Result<Option<String>> {
        self.sql_text(&format!(
            "SELECT status FROM schedule_executions WHERE id = '{id}'"
        ))
        .await
    }
}

/// A timestamp `secs` before `now` (unix seconds) in one of the platform's formats:
/// `naive` (`…T…ffffff`), `zulu` (`…T…ffffffZ`) or `sqlite` (`YYYY-MM-DD HH:MM:SS`).
pub fn ts_ago(now: f64, secs: f64, style: &str) -> String {
    let micros = ((now - secs) * 1e6) as i64;
    let t = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    match style {
        "zulu" => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "sqlite" => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
    }
}

/// Runs SQL statements on a test database (creating a SQLite file if needed).
pub async fn run_sql(kind: Kind, url: &str, sql: &str) -> anyhow::Result<()> {
    match kind {
        Kind::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc")).await?;
            sqlx::raw_sql(sql)
                .execute(&mut conn)
                .await
                .context("running sql")?;
            conn.close().await?;
        }
        Kind::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::raw_sql(sql)
                .execute(&mut conn)
                .await
                .context("running sql")?;
            conn.close().await?;
        }
    }
    Ok(())
}

impl Drop for Sandbox {
    /// Deletes this sandbox's Redis keys: test runs leave nothing behind for the next
    /// `SCAN` (a bench's sweep walks every key of the server; a day of test runs once left
    /// 38,000). Best effort: a Redis that is down keeps them.
    fn drop(&mut self) {
        let pattern = format!("{}*", self.namespace());
        if let Ok(mut conn) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) {
            let mut cursor = "0".to_owned();
            while let Ok(next) = CLEAR_NAMESPACE
                .arg(&pattern)
                .arg(&cursor)
                .invoke::<String>(&mut conn)
            {
                if next == "0" {
                    break;
                }
                cursor = next;
            }
            let _ = redis::cmd("UNLINK")
                .arg(self.layout_keys().as_slice())
                .exec(&mut conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_sandbox_leaves_no_redis_key_behind() -> anyhow::Result<()> {
        let sandbox = Sandbox::new(Kind::Sqlite).await?;
        sandbox
            .seed_slot("agent one", "run-1", 5.0, Some(60))
            .await?;
        let pattern = format!("{}*", sandbox.namespace());
        let mut conn = sandbox.redis().await?;
        let count = |conn: &mut redis::aio::MultiplexedConnection| {
            let pattern = pattern.clone();
            let mut conn = conn.clone();
            async move {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query_async(&mut conn)
                    .await?;
                anyhow::Ok(keys.len())
            }
        };
        assert_eq!(count(&mut conn).await?, 2, "the slot and its hash");
        let [outbox, census, walk] = sandbox.layout_keys();
        redis::cmd("XADD")
            .arg(&outbox)
            .arg("*")
            .arg("audit")
            .arg("{}")
            .exec_async(&mut conn)
            .await?;
        redis::cmd("SADD")
            .arg(&census)
            .arg("zset")
            .exec_async(&mut conn)
            .await?;
        redis::cmd("HSET")
            .arg(&walk)
            .arg("cursor")
            .arg(1)
            .exec_async(&mut conn)
            .await?;
        drop(sandbox);
        assert_eq!(count(&mut conn).await?, 0);
        let left: u64 = redis::cmd("EXISTS")
            .arg(&[&outbox, &census, &walk][..])
            .query_async(&mut conn)
            .await?;
        assert_eq!(
            left, 0,
            "the audit outbox and the census, named outside the namespace"
        );
        Ok(())
    }
}
