//! A sandboxed platform: one private database and one private slot key space, with helpers
//! that write slots and runs exactly the way the platform does.

use anyhow::Context as _;
use sqlx::Connection as _;

use crate::{redis_url, slot_prefixes, Kind, TestDb};

/// A private database plus private slot prefixes.
#[derive(Debug)]
pub struct Sandbox {
    pub db: TestDb,
    pub slot_prefix: String,
    pub meta_prefix: String,
    /// A queue name private to this sandbox.
    pub queue: String,
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
        })
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
    /// do not leave a keyspace that slows every later SCAN.
    pub async fn clear_redis(&self) -> anyhow::Result<()> {
        let namespace = self.slot_prefix.trim_end_matches("agent:slots:");
        let mut conn = self.redis().await?;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{namespace}*"))
                .arg("COUNT")
                .arg(5_000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
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
        let session = session.map_or("NULL".to_owned(), |s| format!("'{s}'"));
        self.sql(&format!(
            "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, claude_session_id) \
             VALUES ('{id}', '__manual__', '{}', '{status}', '{started_at}', 'run the report', 'schedule', {session})",
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
