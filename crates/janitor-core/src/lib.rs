//! The rules of janitor, with no I/O.
//!
//! Everything that decides what janitor does lives here as pure functions over plain data
//! and an explicit `now` (Redis server time, so every replica judges by one clock). The
//! store crate fetches the data and applies a [`Verdict`] with compare-and-set writes; the
//! producer uses the same [`decide`] to choose jobs and the worker re-runs it before acting,
//! so there is exactly one reconciliation, not one sweep per symptom.

mod activity;
mod ids;
mod job;
mod policy;
mod status;
mod time;
mod verdict;

pub use activity::{
    decide_activity, ActivityObservation, ActivityRun, ActivityVerdict, CloseReason,
};
pub use ids::{AgentName, ExecutionId, IdError};
pub use job::{CleanupJob, JobKind, JobPayloadError, JOB_VERSION};
pub use policy::{
    ErrorStyle, LeasePolicy, Policy, SkippedPolicy, UnreachablePolicy,
    DEFAULT_ACTIVITY_STALE_AFTER_SECS, DEFAULT_LEASE_MAX_REDELIVERY,
    DEFAULT_MISSING_ROW_GRACE_SECS, DEFAULT_QUEUED_EXPIRE_AFTER_SECS,
    DEFAULT_SENTINEL_REPORT_AFTER_SECS, DEFAULT_SESSION_GRACE_SECS, DEFAULT_SKIPPED_AFTER_SECS,
    DEFAULT_TIMEOUT_SECS, DEFAULT_TTL_BUFFER_SECS, EARLIEST_PLAUSIBLE_SCORE, MAX_SCORE_AHEAD_SECS,
    MAX_TIMEOUT_SECS, PLATFORM_MAX_TIMEOUT_SECS,
};
pub use status::Status;
pub use time::{
    format_timestamp, from_unix_seconds, parse_timestamp, to_unix_seconds, Timestamp,
    TimestampError,
};
pub use verdict::{
    decide, plausible_score, row_deadline, slot_deadline, AgentSays, AliveBy, Concern, LeakReason,
    Liveness, RowObservation, SlotObservation, SlotTimeout, TimeoutSource, Verdict,
};
