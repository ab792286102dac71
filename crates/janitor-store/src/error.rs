//! Errors at the store boundary.

/// What went wrong talking to Redis or the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("database: {0}")]
    Sql(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url {0:?}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("database file {0} does not exist: is DATABASE_URL the platform's database? (a relative sqlite://PATH is read from the working directory; `janitor migrate --create-platform-tables` creates a new one, for a demo or a test)")]
    MissingDatabase(String),
    #[error("table {0} is missing: run `janitor migrate` first")]
    MissingTable(&'static str),
    #[error(
        "{0} is missing: the database has an older janitor schema; run `janitor migrate` first"
    )]
    Outdated(&'static str),
    #[error("the platform's table {0} is missing: is DATABASE_URL the platform's database? (`janitor migrate --create-platform-tables` creates the platform's tables, for a demo or a test)")]
    NotPlatformDatabase(&'static str),
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    #[error("invalid settings: {0}")]
    Config(String),
}

impl From<sqlx::Error> for StoreError {
    /// Every database error passes here: a refused write also tells the pools that the
    /// sessions they hold may be stuck read-only (see [`crate::sql::saw_read_only`]).
    fn from(e: sqlx::Error) -> Self {
        let code = e.as_database_error().and_then(|d| d.code());
        if code.is_some_and(|code| read_only_sql_code(&code)) {
            crate::sql::saw_read_only();
        }
        Self::Sql(e)
    }
}

/// The database refused a write because the session or the file is read-only: PostgreSQL
/// `read_only_sql_transaction`; SQLite `READONLY` and its extended codes.
fn read_only_sql_code(code: &str) -> bool {
    matches!(
        code,
        "25006" | "8" | "264" | "520" | "776" | "1032" | "1288"
    )
}

impl StoreError {
    /// Whether retrying later may succeed (the service was unreachable, busy, read-only for
    /// a while, restarting or still loading), as opposed to an error that will repeat until
    /// someone changes data or configuration. Transient errors never make a job dead: an
    /// outage is not poison.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_cluster_error()
                    || matches!(
                        e.code(),
                        Some(
                            "LOADING"
                                | "READONLY"
                                | "BUSY"
                                | "TRYAGAIN"
                                | "MASTERDOWN"
                                | "CLUSTERDOWN"
                        )
                    )
            }
            Self::Sql(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                ) || e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|code| transient_sql_code(&code))
            }
            _ => false,
        }
    }
}

/// SQLite: BUSY and LOCKED (with their extended codes) and READONLY (a file or database
/// opened read-only for a while). PostgreSQL: serialization failure, deadlock, admin or
/// crash shutdown, cannot connect now (starting up, recovery), read-only transaction (a
/// standby, `default_transaction_read_only`), too many connections, and every connection
/// exception (class 08).
fn transient_sql_code(code: &str) -> bool {
    matches!(
        code,
        "5" | "6"
            | "261"
            | "262"
            | "517"
            | "773"
            | "8"
            | "264"
            | "520"
            | "40001"
            | "40P01"
            | "57P01"
            | "57P02"
            | "57P03"
            | "25006"
            | "53300"
    ) || code.starts_with("08")
}

#[cfg(test)]
mod tests {
    use super::transient_sql_code;

    #[test]
    fn outage_codes_are_transient_and_data_errors_are_not() {
        for code in [
            "5", "6", "517", "8", "40001", "57P01", "57P03", "25006", "53300", "08006",
        ] {
            assert!(transient_sql_code(code), "{code}");
        }
        // Constraint violations, syntax, undefined table, data exceptions.
        for code in ["19", "1", "23505", "42601", "42P01", "22P02"] {
            assert!(!transient_sql_code(code), "{code}");
        }
    }
}
