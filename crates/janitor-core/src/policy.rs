//! The thresholds the rules apply, with the platform's defaults.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

/// Timeout of a run whose schedule and agent declare none (the platform's own fallback).
pub const DEFAULT_TIMEOUT_SECS: i64 = 3600;
/// Added to every timeout before a slot or run counts as dead (the platform's TTL buffer).
pub const DEFAULT_TTL_BUFFER_SECS: i64 = 300;
/// How long a slot may exist without its row before it is leaked capacity: the row may be
/// being written right now.
pub const DEFAULT_MISSING_ROW_GRACE_SECS: i64 = 15;
/// How long a `running` row may go without a session before it is a silent launch failure.
pub const DEFAULT_SESSION_GRACE_SECS: i64 = 60;
/// How long a `skipped` row may stay `skipped` before it is finalized as `cancelled`.
pub const DEFAULT_SKIPPED_AFTER_SECS: i64 = 600;
/// How long a backlog sentinel (`drain-…`) may sit in a slot ZSET before it is reported:
/// the platform's swap takes seconds; ten minutes is generous.
pub const DEFAULT_SENTINEL_REPORT_AFTER_SECS: i64 = 600;
/// How long a `queued` row may wait for a slot before its backlog entry has expired (the
/// platform's own rule: 24 hours).
pub const DEFAULT_QUEUED_EXPIRE_AFTER_SECS: i64 = 24 * 3600;
/// How long an activity with no run that could still finish it may stay `started` (the
/// platform's own stale-activity rule: 120 minutes).
pub const DEFAULT_ACTIVITY_STALE_AFTER_SECS: i64 = 120 * 60;
/// The longest timeout the platform lets an agent or schedule declare. A slot whose own
/// `timeout_seconds` is corrupt is judged by the longest of its candidates, this among them,
/// so bad metadata never shortens a live run's deadline.
pub const PLATFORM_MAX_TIMEOUT_SECS: i64 = 7200;
/// Slot scores before this instant (2000-01-01T00:00:00Z) are not acquire times the
/// platform could have written: corrupt, reported, never judged.
pub const EARLIEST_PLAUSIBLE_SCORE: f64 = 946_684_800.0;
/// Slot scores further than this ahead of Redis' clock (e.g. milliseconds written as
/// seconds) are corrupt too.
pub const MAX_SCORE_AHEAD_SECS: i64 = 86_400;
/// Largest timeout believed from data (30 days). The platform allows 60–7200 s; anything
/// beyond this is corrupt metadata, not a real timeout.
pub const MAX_TIMEOUT_SECS: i64 = 30 * 24 * 3600;

/// What to do with `skipped` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkippedPolicy {
    /// Finalize old `skipped` rows as `cancelled` (the default).
    #[default]
    Finalize,
    /// Treat `skipped` as terminal: never change it.
    Terminal,
    /// The platform's own rule: `skipped` is terminal once `completed_at` is set; an old
    /// `skipped` row without it is finalized as `failed`, `Finalized by cleanup: skipped
    /// execution`, `completed_at = COALESCE(started_at, now)`, `duration_ms = 0`.
    Platform,
}

/// What to do with a pull-mode run whose lease has expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeasePolicy {
    /// Leave it to the platform's lease reaper; report it (the default).
    #[default]
    Platform,
    /// Re-queue it exactly as the platform's reaper does (`queued`, `redelivery_count +
    /// 1`, lease and worker cleared, `claim_token` kept), failing it as poison at the cap:
    /// for deployments that run without that reaper.
    Requeue,
    /// Fail it.
    Fail,
}

/// The platform's re-delivery cap (`MAX_REDELIVERY`).
pub const DEFAULT_LEASE_MAX_REDELIVERY: i64 = 3;

/// What an unreachable agent means when the liveness probe is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnreachablePolicy {
    /// Judge on the stores alone, as without the probe.
    #[default]
    Skip,
    /// Act on a run only when its agent answers.
    Hold,
}

/// Whose words the error texts janitor writes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorStyle {
    /// janitor's own, naming the evidence (the slot, its score, the deadline).
    #[default]
    Janitor,
    /// The platform's own texts (`lease_expired: Stale execution — …`), which its UI and
    /// its failure classifier read.
    Platform,
}

/// The thresholds of the rules. Every field is in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub default_timeout_secs: i64,
    pub ttl_buffer_secs: i64,
    pub missing_row_grace_secs: i64,
    pub session_grace_secs: i64,
    pub skipped_after_secs: i64,
    pub skipped: SkippedPolicy,
    pub sentinel_report_after_secs: i64,
    pub error_style: ErrorStyle,
    pub agent_unreachable: UnreachablePolicy,
    pub queued_expire_after_secs: i64,
    pub activity_stale_after_secs: i64,
    pub lease: LeasePolicy,
    pub lease_max_redelivery: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_timeout_secs: DEFAULT_TIMEOUT_SECS,
            ttl_buffer_secs: DEFAULT_TTL_BUFFER_SECS,
            missing_row_grace_secs: DEFAULT_MISSING_ROW_GRACE_SECS,
            session_grace_secs: DEFAULT_SESSION_GRACE_SECS,
            skipped_after_secs: DEFAULT_SKIPPED_AFTER_SECS,
            skipped: SkippedPolicy::Finalize,
            sentinel_report_after_secs: DEFAULT_SENTINEL_REPORT_AFTER_SECS,
            error_style: ErrorStyle::Janitor,
            agent_unreachable: UnreachablePolicy::Skip,
            queued_expire_after_secs: DEFAULT_QUEUED_EXPIRE_AFTER_SECS,
            activity_stale_after_secs: DEFAULT_ACTIVITY_STALE_AFTER_SECS,
            lease: LeasePolicy::Platform,
            lease_max_redelivery: DEFAULT_LEASE_MAX_REDELIVERY,
        }
    }
}

impl Policy {
    /// Checks the thresholds are usable: non-negative, and timeouts within range.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("default timeout", self.default_timeout_secs),
            ("ttl buffer", self.ttl_buffer_secs),
            ("missing-row grace", self.missing_row_grace_secs),
            ("session grace", self.session_grace_secs),
            ("skipped threshold", self.skipped_after_secs),
            ("sentinel report bound", self.sentinel_report_after_secs),
            ("queued expiry", self.queued_expire_after_secs),
            ("stale activity threshold", self.activity_stale_after_secs),
            ("lease re-delivery cap", self.lease_max_redelivery),
        ];
        for (name, value) in fields {
            if !(0..=MAX_TIMEOUT_SECS).contains(&value) {
                return Err(format!(
                    "{name} must be between 0 and {MAX_TIMEOUT_SECS} seconds, got {value}"
                ));
            }
        }
        if self.default_timeout_secs == 0 {
            return Err("default timeout must be at least 1 second".into());
        }
        Ok(())
    }

    pub(crate) fn buffer(&self) -> TimeDelta {
        TimeDelta::seconds(self.ttl_buffer_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_platforms() {
        let p = Policy::default();
        assert_eq!(p.default_timeout_secs, 3600);
        assert_eq!(p.ttl_buffer_secs, 300);
        assert_eq!(p.missing_row_grace_secs, 15);
        assert_eq!(p.session_grace_secs, 60);
        assert_eq!(p.skipped_after_secs, 600);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn rejects_negative_and_absurd_values() {
        let p = Policy {
            ttl_buffer_secs: -1,
            ..Policy::default()
        };
        assert!(p.validate().unwrap_err().contains("ttl buffer"));
        let p = Policy {
            default_timeout_secs: MAX_TIMEOUT_SECS + 1,
            ..Policy::default()
        };
        assert!(p.validate().is_err());
    }
}
