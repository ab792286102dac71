//! Embedded migrations, one directory per backend (`migrations/sqlite`, `migrations/postgres`).
//!
//! The SQL files are compiled into the binary, so `janitor migrate` needs nothing on disk.
//! Every statement is `CREATE … IF NOT EXISTS`: run against an existing platform database it
//! adds janitor's own table and indexes and leaves every platform row and column as it was.
//!
//! The platform's own tables (`migrations/platform/today.sql`) are created only when asked
//! (`janitor migrate --create-platform-tables`, for a demo or a test): created anywhere else
//! they would turn an empty file or the wrong database into one that looks like the
//! platform's, where every live slot has no row — and janitor would release them all.
//! Databases that recorded version 1 as applied keep it (the migrator ignores it).

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::{with_pool, Backend, Database};
use crate::StoreError;

/// The platform's tables as the demo and tests create them: today's generation, in SQL both
/// backends read.
const PLATFORM_TABLES: &str = include_str!("../../../../migrations/platform/today.sql");
/// Their indexes, created only with the tables (never on a platform table that existed).
const PLATFORM_INDEXES: &str = include_str!("../../../../migrations/platform/today-indexes.sql");

/// The platform tables janitor's own migrations need (they index them).
pub(crate) const REQUIRED_PLATFORM_TABLES: [&str; 2] = ["schedule_executions", "agent_activities"];

/// (version, description, SQLite text, PostgreSQL text)
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        2,
        "janitor audit",
        include_str!("../../../../migrations/sqlite/0002_janitor_audit.sql"),
        include_str!("../../../../migrations/postgres/0002_janitor_audit.sql"),
    ),
    (
        3,
        "open runs by agent",
        include_str!("../../../../migrations/sqlite/0003_open_runs_by_agent.sql"),
        include_str!("../../../../migrations/postgres/0003_open_runs_by_agent.sql"),
    ),
    (
        4,
        "audit change key",
        include_str!("../../../../migrations/sqlite/0004_audit_change_key.sql"),
        include_str!("../../../../migrations/postgres/0004_audit_change_key.sql"),
    ),
    (
        5,
        "started activities by id",
        include_str!("../../../../migrations/sqlite/0005_started_activities_by_id.sql"),
        include_str!("../../../../migrations/postgres/0005_started_activities_by_id.sql"),
    ),
    (
        6,
        "audit run change",
        include_str!("../../../../migrations/sqlite/0006_audit_run_change.sql"),
        include_str!("../../../../migrations/postgres/0006_audit_run_change.sql"),
    ),
    (
        7,
        "started activities by run",
        include_str!("../../../../migrations/sqlite/0007_started_activities_by_run.sql"),
        include_str!("../../../../migrations/postgres/0007_started_activities_by_run.sql"),
    ),
];

#[derive(Debug)]
struct Embedded(Backend);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sqlite, postgres)| {
                    let sql = match self.0 {
                        Backend::Sqlite => sqlite,
                        Backend::Postgres => postgres,
                    };
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run (empty when already up to date).
    pub applied: Vec<i64>,
    /// The latest version known to this build.
    pub latest: i64,
}

pub(super) async fn run(
    db: &Database,
    create_platform_tables: bool,
) -> Result<MigrationReport, StoreError> {
    if create_platform_tables {
        let existed = !db
            .existing_tables(&["schedule_executions"])
            .await?
            .is_empty();
        with_pool!(db, pool => sqlx::raw_sql(PLATFORM_TABLES).execute(pool).await.map(drop))?;
        if !existed {
            with_pool!(db, pool => sqlx::raw_sql(PLATFORM_INDEXES).execute(pool).await.map(drop))?;
        }
    }
    let found = db.existing_tables(&REQUIRED_PLATFORM_TABLES).await?;
    if let Some(missing) = REQUIRED_PLATFORM_TABLES
        .into_iter()
        .find(|t| !found.iter().any(|f| f == t))
    {
        return Err(StoreError::NotPlatformDatabase(missing));
    }
    let mut migrator = Migrator::new(Embedded(db.backend()))
        .await
        .map_err(StoreError::Migrate)?;
    // Version 1 (the platform's tables) is no longer a migration; databases that applied
    // it keep their record.
    migrator.set_ignore_missing(true);
    let applied_before: Vec<i64> = with_pool!(db, pool => {
        let table: Option<String> = match db.backend() {
            Backend::Sqlite => sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'").fetch_optional(pool).await?,
            Backend::Postgres => sqlx::query_scalar("SELECT CAST(to_regclass('_sqlx_migrations') AS TEXT)").fetch_optional(pool).await?.flatten(),
        };
        if table.is_some() {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await?
        } else {
            Vec::new()
        }
    });
    with_pool!(db, pool => migrator.run(pool).await)?;
    let applied = MIGRATIONS
        .iter()
        .map(|m| m.0)
        .filter(|v| !applied_before.contains(v))
        .collect();
    Ok(MigrationReport {
        applied,
        latest: MIGRATIONS.last().map_or(0, |m| m.0),
    })
}
