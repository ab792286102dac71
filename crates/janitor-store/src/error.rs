//! Errors at the store boundary.

/// What went wrong talking to Redis or the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url {0:?}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("database file {0} does not exist (run `janitor migrate` to create it)")]
    MissingDatabase(String),
    #[error("table {0} is missing: run `janitor migrate` first")]
    MissingTable(&'static str),
    #[error("the platform's table {0} is missing: is DATABASE_URL the platform's database? (`janitor migrate --create-platform-tables` creates the platform's tables, for a demo or a test)")]
    NotPlatformDatabase(&'static str),
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
}

impl StoreError {
    /// Whether retrying later may succeed (the service was unreachable or busy), as opposed
    /// to an error that will repeat until someone changes data or configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_cluster_error()
            }
            Self::Sql(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                ) || e.as_database_error().is_some_and(|d| {
                    // SQLite BUSY/LOCKED, PostgreSQL serialization failure / deadlock.
                    matches!(d.code().as_deref(), Some("5" | "6" | "40001" | "40P01"))
                })
            }
            _ => false,
        }
    }
}
