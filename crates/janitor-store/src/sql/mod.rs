//! The SQL side: one [`Database`] handle over SQLite (the embedded default) or PostgreSQL
//! (the scale-out database). Queries are written once, with `$N` placeholders both drivers
//! accept, and compiled against each pool by [`with_pool!`]; only schema introspection and
//! DDL differ.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Connection as _;

use crate::{redact_url, StoreError};

pub mod activities;
pub mod audit;
pub mod executions;
mod migrate;

pub use migrate::MigrationReport;

/// Runs `$body` with `$pool` bound to the concrete pool: the same query text is compiled
/// for each driver.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::sql::Database::Sqlite($pool) => $body,
            $crate::sql::Database::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

#[cfg(test)]
mod marks_tests {
    use super::{marks, Backend};

    #[test]
    fn sqlite_gets_anonymous_parameters_and_postgres_keeps_numbers() {
        let numbered: Vec<String> = (1..=12).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO t VALUES ({}), (CAST({} AS BIGINT), '$x', {})",
            numbered[..10].join(", "),
            numbered[10],
            numbered[11]
        );
        assert_eq!(marks(Backend::Postgres, &sql), sql);
        assert_eq!(
            marks(Backend::Sqlite, &sql),
            format!(
                "INSERT INTO t VALUES ({}), (CAST(? AS BIGINT), '$x', ?)",
                ["?"; 10].join(", ")
            )
        );
    }
}

/// The statement as `backend` binds it best: PostgreSQL keeps `$1, $2, …`; for SQLite each
/// `$N` becomes `?`. While binding, sqlx asks SQLite for every parameter's name, and SQLite
/// finds a numbered parameter's name by a linear search, so a batch statement with `$N`
/// costs n² in its n parameters (a quarter of a SQLite worker's CPU in the catch-up,
/// `sqlite3_bind_parameter_name` in `perf`); anonymous `?` parameters have no names. The
/// statement must use its parameters in order, each once.
pub(crate) fn marks(backend: Backend, sql: &str) -> std::borrow::Cow<'_, str> {
    if backend == Backend::Postgres {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut expected = 1usize;
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' || !chars.peek().is_some_and(|(_, d)| d.is_ascii_digit()) {
            out.push(c);
            continue;
        }
        let mut n = 0usize;
        while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
            n = n * 10 + (d as usize - '0' as usize);
            chars.next();
        }
        debug_assert_eq!(n, expected, "parameters must be used in order, once: {sql}");
        expected += 1;
        out.push('?');
    }
    std::borrow::Cow::Owned(out)
}

/// A session opened while the database refused writes keeps refusing them after the
/// database is writable again: PostgreSQL applies `default_transaction_read_only` (the
/// switch operators and failovers flip) when a session starts, and a SQLite file opened
/// read-only stays so. A pool would hand such a session out for as long as it lives (up to
/// its 30-minute lifetime), every write failing as "read-only", every job retried and
/// parked dead again after the store has long recovered (found by `make soak`). So every
/// refused write stamps the time here, and a pooled connection opened before the latest
/// refusal is discarded instead of handed out: the pool opens a fresh session, which sees
/// the database as it is now. While the refusals go on this costs one reconnect per try
/// (tries are backed off); afterwards each stale session is replaced once. Process-wide: a
/// refusal is news about the database, not about one pool.
static READ_ONLY_SEEN: AtomicU64 = AtomicU64::new(0);

fn clock() -> Duration {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

/// Records that a write was just refused as read-only.
pub(crate) fn saw_read_only() {
    let now = clock().as_nanos() as u64 + 1;
    READ_ONLY_SEEN.fetch_max(now, Ordering::Relaxed);
}

/// Whether a pooled connection of this age was opened before the latest read-only refusal.
fn opened_before_refusal(age: Duration) -> bool {
    let seen = READ_ONLY_SEEN.load(Ordering::Relaxed);
    if seen == 0 {
        return false;
    }
    let opened = (clock().as_nanos() as u64 + 1).saturating_sub(age.as_nanos() as u64);
    opened < seen
}

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Reads the scheme of a database URL.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }
}

/// A connection pool on one of the supported databases.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The optional platform tables and columns found in the database, probed once when a
/// store opens. Each platform generation has its own set: late 2025 has no
/// `claude_session_id` and no timeout columns; spring 2026 has both; today's adds the
/// pull-mode lease columns. A rule whose inputs are missing does not apply
/// ([`Schema::rules_off`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Schema {
    pub agent_schedules: bool,
    pub agent_ownership: bool,
    pub agent_activities: bool,
    /// `schedule_executions.claude_session_id`
    pub session: bool,
    /// `agent_schedules.timeout_seconds`
    pub schedule_timeout: bool,
    /// `agent_ownership.execution_timeout_seconds`
    pub agent_timeout: bool,
    /// `schedule_executions.lease_expires_at`
    pub lease: bool,
    /// `schedule_executions.redelivery_count`
    pub redelivery_count: bool,
}

/// A rule, or an input of one, that this database's schema switches off.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RuleOff {
    pub rule: &'static str,
    pub why: &'static str,
}

impl Schema {
    /// What the missing columns switch off, for `janitor config` and `janitor stuck`.
    pub fn rules_off(&self) -> Vec<RuleOff> {
        let mut off = Vec::new();
        if !self.session {
            off.push(RuleOff {
                rule: "fail never-launched runs",
                why: "schedule_executions has no claude_session_id column",
            });
        }
        if !self.schedule_timeout && !self.agent_timeout {
            off.push(RuleOff {
                rule: "per-run timeouts (the default timeout applies to every run)",
                why: "neither agent_schedules.timeout_seconds nor agent_ownership.execution_timeout_seconds exists",
            });
        }
        if !self.lease {
            off.push(RuleOff {
                rule: "pull-mode leases",
                why: "schedule_executions has no lease_expires_at column (no run can be leased)",
            });
        }
        if !self.agent_activities {
            off.push(RuleOff {
                rule: "closing a failed run's activity",
                why: "there is no agent_activities table",
            });
        }
        off
    }
}

impl Database {
    /// Opens a pool. With `create`, a missing SQLite file is created (for `migrate`);
    /// otherwise a missing file is an error rather than a silently empty database.
    pub async fn connect(url: &str, create: bool) -> Result<Self, StoreError> {
        match Backend::of_url(url)? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(create)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(false);
                let file = options.get_filename();
                let in_memory =
                    file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:");
                if !create && !in_memory && !file.exists() {
                    return Err(StoreError::MissingDatabase(file.display().to_string()));
                }
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .before_acquire(|_, meta| {
                        Box::pin(async move { Ok(!opened_before_refusal(meta.age)) })
                    })
                    .connect_with(options)
                    .await?;
                Ok(Self::Sqlite(pool))
            }
            Backend::Postgres => {
                // One direct connection first: a pool only reports "timed out" when the
                // server is unreachable; this reports why (refused, auth, no such db).
                // Every janitor statement is a key lookup or a keyset page whose best plan
                // does not depend on the values bound: generic plans keep the planner from
                // trading an array of ids' index probes for a sequential scan on a mid-sized
                // table (measured: 500-id lookups 14 ms seq scan vs 3 ms index on 100k rows).
                let options = PgConnectOptions::from_str(url)?
                    .options([("plan_cache_mode", "force_generic_plan")]);
                PgConnection::connect_with(&options).await?.close().await?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .before_acquire(|_, meta| {
                        Box::pin(async move { Ok(!opened_before_refusal(meta.age)) })
                    })
                    .connect_with(options)
                    .await?;
                Ok(Self::Postgres(pool))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies janitor's migrations for this backend. The platform's own tables are
    /// created only with `create_platform_tables` (a demo or a test); without it a
    /// database that lacks them is refused with [`StoreError::NotPlatformDatabase`].
    pub async fn migrate(
        &self,
        create_platform_tables: bool,
    ) -> Result<MigrationReport, StoreError> {
        migrate::run(self, create_platform_tables).await
    }

    /// The names of the tables that exist, among `names`.
    pub(crate) async fn existing_tables(&self, names: &[&str]) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        for name in names {
            let exists: bool = match self {
                Self::Sqlite(pool) => sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)",
                )
                .bind(*name)
                .fetch_one(pool)
                .await?,
                Self::Postgres(pool) => sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name = $1)",
                )
                .bind(*name)
                .fetch_one(pool)
                .await?,
            };
            if exists {
                found.push((*name).to_owned());
            }
        }
        Ok(found)
    }

    /// Checks the tables janitor needs exist and reports the optional ones.
    pub async fn schema(&self) -> Result<Schema, StoreError> {
        let found = self
            .existing_tables(&[
                "schedule_executions",
                "janitor_audit",
                "agent_schedules",
                "agent_ownership",
                "agent_activities",
            ])
            .await?;
        let has = |name: &str| found.iter().any(|f| f == name);
        for required in ["schedule_executions", "janitor_audit"] {
            if !has(required) {
                return Err(StoreError::MissingTable(required));
            }
        }
        // Migrations 4 and 6: audit writes name the unique (run, change key) index.
        let change_key: bool = match self {
            Self::Sqlite(pool) => sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'janitor_audit_run_change')",
            )
            .fetch_one(pool)
            .await?,
            Self::Postgres(pool) => sqlx::query_scalar(
                "SELECT to_regclass('janitor_audit_run_change') IS NOT NULL",
            )
            .fetch_one(pool)
            .await?,
        };
        if !change_key {
            return Err(StoreError::Outdated("the audit's (run, change key) index"));
        }
        let columns = self
            .existing_columns(&["schedule_executions", "agent_schedules", "agent_ownership"])
            .await?;
        let column = |table: &str, name: &str| columns.iter().any(|(t, c)| t == table && c == name);
        Ok(Schema {
            agent_schedules: has("agent_schedules"),
            agent_ownership: has("agent_ownership"),
            agent_activities: has("agent_activities"),
            session: column("schedule_executions", "claude_session_id"),
            schedule_timeout: column("agent_schedules", "timeout_seconds"),
            agent_timeout: column("agent_ownership", "execution_timeout_seconds"),
            lease: column("schedule_executions", "lease_expires_at"),
            redelivery_count: column("schedule_executions", "redelivery_count"),
        })
    }

    /// The (table, column) pairs of these tables, lowercased.
    async fn existing_columns(&self, tables: &[&str]) -> Result<Vec<(String, String)>, StoreError> {
        let mut found = Vec::new();
        match self {
            Self::Sqlite(pool) => {
                for table in tables {
                    let names: Vec<String> =
                        sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                            .bind(*table)
                            .fetch_all(pool)
                            .await?;
                    found.extend(
                        names
                            .into_iter()
                            .map(|n| ((*table).to_owned(), n.to_lowercase())),
                    );
                }
            }
            Self::Postgres(pool) => {
                let tables: Vec<&str> = tables.to_vec();
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT) FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = ANY($1)",
                )
                .bind(tables)
                .fetch_all(pool)
                .await?;
                found.extend(rows.into_iter().map(|(t, c)| (t, c.to_lowercase())));
            }
        }
        Ok(found)
    }

    /// Checks the database answers (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}
