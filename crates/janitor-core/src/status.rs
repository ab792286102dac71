//! Execution statuses.
//!
//! The platform stores status as free text. Known values become variants; anything else is
//! kept verbatim in [`Status::Other`] so an unknown value is preserved and left alone rather
//! than crashing the sweep or being "corrected" into something it was not.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The status of a `schedule_executions` row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Status {
    Queued,
    Running,
    Success,
    Failed,
    Cancelled,
    Skipped,
    PendingRetry,
    Completed,
    /// A value this version does not know. Never written, never changed.
    Other(String),
}

/// A status is any string: the platform's statuses are listed as examples, others are kept
/// as they are (`Other`).
impl utoipa::PartialSchema for Status {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "The row's status as stored: queued, running, success, failed, cancelled, \
                 skipped, pending_retry, completed, or any other text",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Status {}

impl Status {
    /// Every status janitor treats as final, as SQL literals for `NOT IN (...)` filters.
    pub const TERMINAL: [&'static str; 4] = ["success", "failed", "cancelled", "completed"];

    pub fn parse(value: &str) -> Self {
        match value {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "success" => Self::Success,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "skipped" => Self::Skipped,
            "pending_retry" => Self::PendingRetry,
            "completed" => Self::Completed,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
            Self::PendingRetry => "pending_retry",
            Self::Completed => "completed",
            Self::Other(other) => other,
        }
    }

    /// Terminal statuses win: janitor never writes over one.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failed | Self::Cancelled | Self::Completed
        )
    }

    /// Whether this is a value janitor understands (anything else is left alone).
    pub fn is_known(&self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Status {
    fn from(value: String) -> Self {
        Self::parse(&value)
    }
}

impl From<Status> for String {
    fn from(value: Status) -> Self {
        value.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_known_value() {
        for s in [
            "queued",
            "running",
            "success",
            "failed",
            "cancelled",
            "skipped",
            "pending_retry",
            "completed",
        ] {
            let status = Status::parse(s);
            assert!(status.is_known(), "{s}");
            assert_eq!(status.as_str(), s);
        }
    }

    #[test]
    fn unknown_values_are_preserved() {
        let status = Status::parse("Running ");
        assert_eq!(status, Status::Other("Running ".into()));
        assert_eq!(status.as_str(), "Running ");
        assert!(!status.is_terminal());
        assert!(!status.is_known());
    }

    #[test]
    fn terminal_set_matches_the_sql_literals() {
        for s in Status::TERMINAL {
            assert!(Status::parse(s).is_terminal());
        }
        for s in ["queued", "running", "skipped", "pending_retry"] {
            assert!(!Status::parse(s).is_terminal());
        }
    }
}
