//! Rule 8: `agent_activities` rows left `started`. The platform shows an agent busy while
//! one is open; its own cleanup fails those older than 120 minutes. janitor closes one when
//! nothing can still finish it — its run is finished, or (after the same 120 minutes) it
//! has no run or its run is gone — and leaves every activity of an open run to that run's
//! rules (failing a run closes its activity with it).

use chrono::TimeDelta;
use serde::Serialize;

use crate::{AgentName, ExecutionId, Policy, Status, Timestamp, TimestampError};

/// One `started` activity, with what became of its run.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ActivityObservation {
    /// The activity's id (held to the same rules as an execution id).
    pub id: ExecutionId,
    pub agent: AgentName,
    #[serde(serialize_with = "crate::verdict::serialize_timestamp_result")]
    #[schema(value_type = String)]
    pub started_at: Result<Timestamp, TimestampError>,
    /// `started_at` exactly as stored: the close compares it.
    #[serde(skip)]
    pub started_at_raw: String,
    pub run: ActivityRun,
}

/// The activity's run, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "run", content = "value", rename_all = "snake_case")]
pub enum ActivityRun {
    /// No `related_execution_id` (a chat, a tool call).
    Unlinked,
    /// It names a run that has no row.
    Missing(String),
    /// Its run, with its status.
    Found(String, Status),
}

/// Why an activity is closed.
/// Written by hand: the derive has no adjacently tagged tuple variants. The JSON is
/// `{"run":"unlinked"}`, `{"run":"missing","value":ID}` or `{"run":"found","value":[ID,STATUS]}`.
impl utoipa::PartialSchema for ActivityRun {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let tag = |name: &str| serde_json::json!({"type": "string", "enum": [name]});
        let schema = serde_json::json!({"oneOf": [
            {"type": "object", "required": ["run"], "properties": {"run": tag("unlinked")}},
            {"type": "object", "required": ["run", "value"],
             "properties": {"run": tag("missing"), "value": {"type": "string"}}},
            {"type": "object", "required": ["run", "value"],
             "properties": {"run": tag("found"), "value": {
                 "type": "array", "minItems": 2, "maxItems": 2,
                 "prefixItems": [{"type": "string"}, {"type": "string"}]}}},
        ]});
        #[allow(clippy::expect_used)]
        serde_json::from_value(schema).expect("a valid schema")
    }
}

impl utoipa::ToSchema for ActivityRun {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "reason", content = "status", rename_all = "snake_case")]
pub enum CloseReason {
    /// Its run already reached this terminal status.
    RunFinished(Status),
    /// Open longer than the threshold with no run that could still finish it.
    Stale,
}

/// What the rule says about one activity.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ActivityVerdict {
    /// Close it: `state` is the `activity_state` written.
    Close {
        state: &'static str,
        reason: CloseReason,
    },
    /// Its run is open (the run's rules govern), or it is younger than the threshold.
    Leave { recheck_at: Option<Timestamp> },
    /// `started_at` is unreadable: reported, never guessed.
    Unparseable { started_at: String },
}

impl ActivityVerdict {
    pub fn is_actionable(&self) -> bool {
        matches!(self, Self::Close { .. })
    }

    /// The `error` written with the close (kept if the activity already has one).
    pub fn error(&self, policy: &Policy) -> Option<String> {
        match self {
            Self::Close {
                reason: CloseReason::Stale,
                ..
            } => Some(format!(
                "Marked as failed by cleanup: exceeded {}-minute timeout",
                policy.activity_stale_after_secs / 60
            )),
            Self::Close {
                reason: CloseReason::RunFinished(status),
                state: "failed" | "cancelled",
            } => Some(format!("Closed by janitor: its run is already {status}")),
            _ => None,
        }
    }
}

/// Decides about one `started` activity at `now`.
pub fn decide_activity(
    activity: &ActivityObservation,
    now: Timestamp,
    policy: &Policy,
) -> ActivityVerdict {
    match &activity.run {
        ActivityRun::Found(_, status) if status.is_terminal() => ActivityVerdict::Close {
            state: match status {
                Status::Success | Status::Completed => "completed",
                Status::Cancelled => "cancelled",
                _ => "failed",
            },
            reason: CloseReason::RunFinished(status.clone()),
        },
        ActivityRun::Found(..) => ActivityVerdict::Leave { recheck_at: None },
        ActivityRun::Unlinked | ActivityRun::Missing(_) => {
            let Ok(started) = &activity.started_at else {
                return ActivityVerdict::Unparseable {
                    started_at: activity.started_at_raw.clone(),
                };
            };
            let due = TimeDelta::try_seconds(policy.activity_stale_after_secs)
                .and_then(|d| started.checked_add_signed(d));
            match due {
                Some(due) if now > due => ActivityVerdict::Close {
                    state: "failed",
                    reason: CloseReason::Stale,
                },
                due => ActivityVerdict::Leave { recheck_at: due },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_timestamp;

    fn activity(run: ActivityRun, started: &str) -> ActivityObservation {
        ActivityObservation {
            id: ExecutionId::parse("act-1").unwrap_or_else(|e| panic!("{e}")),
            agent: AgentName::parse("a").unwrap_or_else(|e| panic!("{e}")),
            started_at: parse_timestamp(started),
            started_at_raw: started.to_owned(),
            run,
        }
    }

    fn at(text: &str) -> Timestamp {
        parse_timestamp(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_branch() {
        let p = Policy::default();
        let t0 = "2026-05-01T10:00:00Z";
        let found = |s: &str| ActivityRun::Found("e1".into(), Status::parse(s));
        let soon = at("2026-05-01T10:05:00Z");
        let late = at("2026-05-01T12:00:01Z");
        // A finished run's activity is closed at once, in the run's terms.
        let v = decide_activity(&activity(found("success"), t0), soon, &p);
        assert_eq!(
            v,
            ActivityVerdict::Close {
                state: "completed",
                reason: CloseReason::RunFinished(Status::Success)
            }
        );
        assert_eq!(v.error(&p), None);
        let v = decide_activity(&activity(found("failed"), t0), soon, &p);
        assert_eq!(
            v.error(&p).as_deref(),
            Some("Closed by janitor: its run is already failed")
        );
        // An open run's activity is the run's: never closed here, however old.
        for status in ["running", "queued", "skipped", "paused"] {
            let v = decide_activity(&activity(found(status), t0), late, &p);
            assert!(!v.is_actionable(), "{status}: {v:?}");
        }
        // No run, or a run that is gone: failed after 120 minutes, in the platform's words.
        for run in [ActivityRun::Unlinked, ActivityRun::Missing("gone".into())] {
            let young = decide_activity(&activity(run.clone(), t0), soon, &p);
            assert_eq!(
                young,
                ActivityVerdict::Leave {
                    recheck_at: Some(at("2026-05-01T12:00:00Z"))
                }
            );
            let v = decide_activity(&activity(run, t0), late, &p);
            assert_eq!(
                v.error(&p).as_deref(),
                Some("Marked as failed by cleanup: exceeded 120-minute timeout")
            );
        }
        let v = decide_activity(&activity(ActivityRun::Unlinked, "yesterday"), late, &p);
        assert_eq!(
            v,
            ActivityVerdict::Unparseable {
                started_at: "yesterday".into()
            }
        );
        // Serializable (an internally tagged newtype variant of a string is not).
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"verdict": "unparseable", "started_at": "yesterday"})
        );
    }
}
