//! Helpers for the end-to-end tests: run the real `janitor` binary with an isolated
//! environment, and shape Redis and the database the way the platform leaves them.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context as _;
use sqlx::Connection as _;

pub use janitor_testkit::{redis_url, slot_prefixes, Kind, TestDb};

/// The `janitor` binary next to this test executable (`make test` builds it first).
pub fn janitor_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(format!("janitor{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p janitor`, which `make test` does)",
        bin.display()
    );
    bin
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "janitor failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// An isolated janitor environment: its own database, its own slot prefixes, its own
/// working directory (so no stray `janitor.toml` is picked up).
#[derive(Debug)]
pub struct Env {
    pub db: TestDb,
    pub slot_prefix: String,
    pub meta_prefix: String,
    pub workdir: tempfile::TempDir,
}

impl Env {
    pub async fn new(kind: Kind) -> Self {
        let (slot_prefix, meta_prefix) = slot_prefixes();
        Self {
            db: TestDb::new(kind).await.unwrap(),
            slot_prefix,
            meta_prefix,
            workdir: tempfile::tempdir().unwrap(),
        }
    }

    /// A command with only this environment's settings (flags via env, as an operator
    /// would configure a deployment).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(janitor_bin());
        cmd.current_dir(self.workdir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.db.url)
            .env("REDIS_URL", redis_url())
            .env("JANITOR_SLOT_PREFIX", &self.slot_prefix)
            .env("JANITOR_SLOT_META_PREFIX", &self.meta_prefix)
            .env("JANITOR_LOG_FORMAT", "text");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run(self.command().args(args))
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Redis' clock, in unix seconds.
    pub async fn redis_now(&self) -> f64 {
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
        secs as f64 + micros as f64 / 1e6
    }

    /// Writes a slot as the platform does, acquired `age_secs` ago (by Redis' clock).
    pub async fn seed_slot(
        &self,
        agent: &str,
        execution: &str,
        age_secs: f64,
        timeout: Option<i64>,
    ) {
        let score = self.redis_now().await - age_secs;
        let mut conn = self.redis().await;
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
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }

    /// Members of an agent's slot set.
    pub async fn slot_members(&self, agent: &str) -> Vec<String> {
        redis::cmd("ZRANGE")
            .arg(format!("{}{agent}", self.slot_prefix))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    /// Runs SQL statements on the environment's database.
    pub async fn sql(&self, sql: &str) -> anyhow::Result<()> {
        match self.db.kind {
            Kind::Sqlite => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", self.db.url)).await?;
                sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .context("running sql")?;
                conn.close().await?;
            }
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.db.url).await?;
                sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .context("running sql")?;
                conn.close().await?;
            }
        }
        Ok(())
    }

    /// Inserts a run row as the platform does (ISO TEXT timestamps, `seconds_ago` before
    /// Redis' clock, in the given format).
    pub async fn seed_run(
        &self,
        id: &str,
        agent: &str,
        status: &str,
        started_at: &str,
        session: Option<&str>,
    ) {
        let session = session.map_or("NULL".to_owned(), |s| format!("'{s}'"));
        self.sql(&format!(
            "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, claude_session_id) \
             VALUES ('{id}', '__manual__', '{}', '{status}', '{started_at}', 'run the report', 'schedule', {session})",
            agent.replace('\'', "''")
        ))
        .await
        .unwrap();
    }
}

/// Runs a prepared command and captures its output.
pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A timestamp `secs` before `now` (unix seconds) in one of the platform's formats:
/// `naive` (`…T…ffffff`), `zulu` (`…T…ffffffZ`) or `sqlite` (`YYYY-MM-DD HH:MM:SS`).
pub fn ts_ago(now: f64, secs: f64, style: &str) -> String {
    let t = chrono::DateTime::from_timestamp_micros(((now - secs) * 1e6) as i64).unwrap();
    match style {
        "zulu" => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "sqlite" => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
    }
}
