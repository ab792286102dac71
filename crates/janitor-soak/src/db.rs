//! The platform's database as the simulator and the fault injector use it: a pool whose
//! sessions outlive the outages janitor is put through (the platform's own writes are not
//! what the soak tests), and the outages themselves.

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection as _, Executor as _, Row as _};

/// The `application_name` janitor's sessions carry in the soak, so an outage can end them
/// and leave the platform's alone.
pub const JANITOR_APP: &str = "janitor-soak-janitor";

#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

impl Db {
    /// The platform's pool. SQLite waits out a lock as long as any outage lasts; PostgreSQL
    /// sessions insist on read-write, whatever the database's default is made during an
    /// outage.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(600));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(600))
                .connect_with(options)
                .await
                .context("opening the soak's SQLite file")?;
            Ok(Self::Sqlite(pool))
        } else {
            let options =
                PgConnectOptions::from_str(url)?.application_name("janitor-soak-platform");
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(600))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("SET default_transaction_read_only = off")
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await
                .context("connecting to the soak's PostgreSQL database")?;
            Ok(Self::Postgres(pool))
        }
    }

    /// Runs one statement with text (or NULL) binds; the rows it changed.
    pub async fn execute(&self, sql: &str, binds: &[Option<&str>]) -> Result<u64, sqlx::Error> {
        on_pool!(self, pool => {
            let mut query = sqlx::query(sql);
            for bind in binds {
                query = query.bind(bind.map(str::to_owned));
            }
            query.execute(pool).await.map(|r| r.rows_affected())
        })
    }

    /// The first column of the first row of `sql` bound to `id`, as text.
    pub async fn text(&self, sql: &str, id: &str) -> Result<Option<String>, sqlx::Error> {
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(id).fetch_optional(pool).await?;
            Ok(row.and_then(|r| r.try_get::<Option<String>, _>(0).ok().flatten()))
        })
    }

    /// Every row of `sql` as text columns (numbers cast by the query).
    pub async fn rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, sqlx::Error> {
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            Ok(rows
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.try_get::<Option<String>, _>(i).ok().flatten())
                        .collect()
                })
                .collect())
        })
    }

    /// The per-agent timeouts, as the platform's `agent_ownership` holds them.
    pub async fn seed_agents(&self, agents: &[crate::platform::Agent]) -> anyhow::Result<()> {
        for agent in agents {
            let timeout = agent.timeout.to_string();
            self.execute(
                "INSERT INTO agent_ownership (agent_name, max_parallel_tasks, execution_timeout_seconds) \
                 VALUES ($1, 10, CAST($2 AS INTEGER))",
                &[Some(agent.name.as_str()), Some(timeout.as_str())],
            )
            .await
            .context("seeding agent_ownership")?;
        }
        Ok(())
    }
}

/// A database outage, as the soak injects it.
#[derive(Debug)]
pub enum Outage {
    /// A connection holding SQLite's write lock (`BEGIN EXCLUSIVE`).
    SqliteLock(sqlx::SqliteConnection),
    /// PostgreSQL read-only for new transactions, janitor's sessions terminated.
    PgReadOnly {
        admin: sqlx::PgConnection,
        name: String,
    },
}

impl Outage {
    pub async fn begin(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(url).await?;
            conn.execute("BEGIN EXCLUSIVE").await?;
            Ok(Self::SqliteLock(conn))
        } else {
            let name = pg_name(url)?;
            let mut admin = sqlx::PgConnection::connect(url).await?;
            admin
                .execute(
                    format!("ALTER DATABASE \"{name}\" SET default_transaction_read_only = on")
                        .as_str(),
                )
                .await?;
            cut_janitor_sessions(&mut admin, &name).await?;
            Ok(Self::PgReadOnly { admin, name })
        }
    }

    pub async fn end(self) -> anyhow::Result<()> {
        match self {
            Self::SqliteLock(mut conn) => {
                conn.execute("ROLLBACK").await?;
                conn.close().await?;
            }
            Self::PgReadOnly { mut admin, name } => {
                admin
                    .execute(
                        format!("ALTER DATABASE \"{name}\" RESET default_transaction_read_only")
                            .as_str(),
                    )
                    .await?;
                admin.close().await?;
            }
        }
        Ok(())
    }
}

fn pg_name(url: &str) -> anyhow::Result<String> {
    let name = url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .context("no database name in the url")?;
    Ok(name.to_owned())
}

/// `pg_terminate_backend` on every session janitor has open on the soak's database.
pub async fn cut_janitor_sessions(
    admin: &mut sqlx::PgConnection,
    name: &str,
) -> anyhow::Result<u64> {
    let cut: i64 = sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = $2",
    )
    .bind(name)
    .bind(JANITOR_APP)
    .fetch_one(&mut *admin)
    .await?;
    Ok(cut as u64)
}

/// Cuts janitor's connections once (the "now and then" fault).
pub async fn cut_connections(url: &str) -> anyhow::Result<u64> {
    let name = pg_name(url)?;
    let mut admin = sqlx::PgConnection::connect(url).await?;
    let cut = cut_janitor_sessions(&mut admin, &name).await?;
    admin.close().await?;
    Ok(cut)
}
