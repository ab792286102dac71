//! Test isolation: every test gets its own Redis key prefix and its own database, so the
//! suite runs in parallel against the one Redis and PostgreSQL of the machine.
//!
//! `JANITOR_TEST_REDIS_URL` and `JANITOR_TEST_PG_URL` (an admin connection to an existing
//! database, used to `CREATE DATABASE`) override the local defaults.

use std::path::PathBuf;

use anyhow::Context as _;
use sqlx::Connection as _;

mod sandbox;
pub use sandbox::{run_sql, ts_ago, Generation, Sandbox};

/// Where the tests' Redis is.
pub fn redis_url() -> String {
    std::env::var("JANITOR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// An admin connection URL for the tests' PostgreSQL.
pub fn pg_admin_url() -> String {
    std::env::var("JANITOR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A short unique token for names.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Slot prefixes private to one test: (`…:agent:slots:`, `…:agent:slot:`).
pub fn slot_prefixes() -> (String, String) {
    let ns = format!("jt{}", unique());
    (format!("{ns}:agent:slots:"), format!("{ns}:agent:slot:"))
}

/// A database private to one test. SQLite files live in a temp dir removed on drop;
/// PostgreSQL databases are named `janitor_t_*` (`make test` drops leftovers).
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub kind: Kind,
    dir: Option<tempfile::TempDir>,
}

/// Which database a [`TestDb`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl TestDb {
    /// A fresh database of `kind` (nothing created in it yet).
    pub async fn new(kind: Kind) -> anyhow::Result<Self> {
        match kind {
            Kind::Sqlite => Self::sqlite(),
            Kind::Postgres => Self::postgres().await,
        }
    }

    /// A path in a fresh temp dir, `sqlite://…/janitor.db`; the file does not exist yet.
    pub fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temp dir")?;
        let path = dir.path().join("janitor.db");
        Ok(Self {
            url: format!("sqlite://{}", path.display()),
            kind: Kind::Sqlite,
            dir: Some(dir),
        })
    }

    /// `CREATE DATABASE janitor_t_<random>` on the tests' PostgreSQL.
    pub async fn postgres() -> anyhow::Result<Self> {
        let admin = pg_admin_url();
        let name = format!("janitor_t_{}", unique());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {admin}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        conn.close().await.ok();
        let base = admin
            .rsplit_once('/')
            .map(|(base, _)| base.to_owned())
            .context("admin url has no database part")?;
        Ok(Self {
            url: format!("{base}/{name}"),
            kind: Kind::Postgres,
            dir: None,
        })
    }

    /// The database name of a PostgreSQL test database.
    fn pg_name(&self) -> Option<&str> {
        (self.kind == Kind::Postgres)
            .then(|| self.url.rsplit('/').next())
            .flatten()
    }

    /// The SQLite file, for tests that shape it by hand.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("janitor.db"))
    }
}

impl Drop for TestDb {
    /// Drops a PostgreSQL test database (terminating the test's connections). Runs on its
    /// own thread and runtime because `Drop` cannot await; failures are ignored (`make test`
    /// sweeps leftovers).
    fn drop(&mut self) {
        let Some(name) = self.pg_name().map(str::to_owned) else {
            return;
        };
        let admin = pg_admin_url();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Runs each listed `async fn name(kind: Kind)` once per backend, as `sqlite::name` and
/// `postgres::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name($crate::Kind::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name($crate::Kind::Postgres).await })*
        }
    };
}

/// Polls `check` until it holds, failing the test after `limit`: for conditions that other
/// processes or a running worker change (which no in-process signal can report).
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: std::time::Duration,
    mut check: impl FnMut() -> F,
) {
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
