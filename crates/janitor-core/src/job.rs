//! Cleanup job payloads: what the producer enqueues and a worker applies.
//!
//! A payload carries the evidence the producer saw (observed slot score, deadline, observed
//! status) so an operator can read why it exists; the worker never trusts it and re-runs
//! [`crate::decide`] on fresh state. The task id is deterministic and contains what makes
//! the work new, so a second sweep enqueues nothing while the first job exists, yet a slot
//! that was renewed and went stale again (new score) gets a new job.

use serde::{Deserialize, Serialize};

use crate::{
    to_unix_seconds, AgentName, ExecutionId, RowObservation, SlotObservation, Status, Timestamp,
    Verdict,
};

/// The payload format version this build writes and reads.
pub const JOB_VERSION: u32 = 1;

/// One kind of job per verdict that changes something.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Rule 1: reclaim a slot past its deadline, and fail its row if still in progress.
    ReclaimSlot,
    /// Rule 2: release a live slot nothing runs in.
    ReleaseSlot,
    /// Rules 3, 4 and 7: fail an orphaned, never-launched or expired-backlog run (releasing
    /// its slot for 4).
    FailRun,
    /// Rule 5: finalize an old `skipped` run as `cancelled`.
    FinalizeSkipped,
    /// Re-queue a pull-mode run whose lease expired (`--lease-policy requeue`).
    RequeueRun,
    /// Rule 8: close a `started` activity nothing can still finish (its `execution_id`
    /// names the activity).
    CloseActivity,
}

impl JobKind {
    pub const ALL: [JobKind; 6] = [
        Self::ReclaimSlot,
        Self::ReleaseSlot,
        Self::FailRun,
        Self::FinalizeSkipped,
        Self::CloseActivity,
        Self::RequeueRun,
    ];

    /// The kind named `name` (as [`Self::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReclaimSlot => "reclaim_slot",
            Self::ReleaseSlot => "release_slot",
            Self::FailRun => "fail_run",
            Self::FinalizeSkipped => "finalize_skipped",
            Self::CloseActivity => "close_activity",
            Self::RequeueRun => "requeue_run",
        }
    }

    /// The job kind that applies a verdict, if it changes anything.
    pub fn for_verdict(verdict: &Verdict) -> Option<Self> {
        match verdict {
            Verdict::ReclaimStaleSlot { .. } => Some(Self::ReclaimSlot),
            Verdict::ReleaseLeakedSlot { .. } => Some(Self::ReleaseSlot),
            Verdict::FailOrphan { .. }
            | Verdict::FailNeverLaunched { .. }
            | Verdict::FailBacklogExpired { .. }
            | Verdict::FailLease { .. } => Some(Self::FailRun),
            Verdict::RequeueLease { .. } => Some(Self::RequeueRun),
            Verdict::FinalizeSkipped { .. } => Some(Self::FinalizeSkipped),
            Verdict::Report(_) | Verdict::Healthy { .. } | Verdict::Alive { .. } => None,
        }
    }
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JobPayloadError {
    #[error("malformed job payload: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(
        "job payload version {found} is not supported (this build reads version {JOB_VERSION})"
    )]
    Version { found: u32 },
}

/// One cleanup job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CleanupJob {
    pub version: u32,
    pub kind: JobKind,
    pub agent: AgentName,
    pub execution_id: ExecutionId,
    /// The slot score the producer saw, for slot jobs (the compare-and-delete compares it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_score: Option<f64>,
    /// The deadline the producer judged against, when the verdict has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// The row status the producer saw, when there was a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_status: Option<Status>,
    /// When this job re-drives the same work after an earlier copy went dead: that copy's
    /// task id (left in the dead set for operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive_of: Option<String>,
}

impl CleanupJob {
    /// The job that applies `verdict` to this pair, or `None` when nothing is to change.
    pub fn for_verdict(
        verdict: &Verdict,
        slot: Option<&SlotObservation>,
        row: Option<&RowObservation>,
    ) -> Option<Self> {
        let kind = JobKind::for_verdict(verdict)?;
        let (agent, execution_id) = match (slot, row) {
            (Some(s), _) => (s.agent.clone(), s.execution_id.clone()),
            (None, Some(r)) => (r.agent.clone(), r.execution_id.clone()),
            (None, None) => return None,
        };
        let deadline = match verdict {
            Verdict::ReclaimStaleSlot { deadline, .. } | Verdict::FailOrphan { deadline } => {
                Some(*deadline)
            }
            // The lease's end: a re-delivered run's next expiry is new work.
            Verdict::RequeueLease { until } | Verdict::FailLease { until, .. } => Some(*until),
            _ => None,
        };
        Some(Self {
            version: JOB_VERSION,
            kind,
            agent,
            execution_id,
            observed_score: slot.map(|s| s.score),
            deadline,
            observed_status: row.map(|r| r.status.clone()),
            redrive_of: None,
        })
    }

    /// The deterministic task id: `{kind}:{agent}:{execution}:{evidence}`. Never numeric
    /// (numeric ids break the queue library's lease acquisition).
    pub fn task_id(&self) -> String {
        let evidence = match (self.observed_score, self.deadline) {
            (Some(score), _) => format!("s{score}"),
            (None, Some(deadline)) => format!("d{}", to_unix_seconds(deadline)),
            (None, None) => self
                .observed_status
                .as_ref()
                .map_or_else(|| "-".to_owned(), |s| s.as_str().to_owned()),
        };
        format!(
            "{}:{}:{}:{}",
            self.kind.as_str(),
            self.agent,
            self.execution_id,
            evidence
        )
    }

    /// The job that closes `activity` (rule 8), when its verdict says so.
    pub fn for_activity(
        verdict: &crate::ActivityVerdict,
        activity: &crate::ActivityObservation,
    ) -> Option<Self> {
        verdict.is_actionable().then(|| Self {
            version: JOB_VERSION,
            kind: JobKind::CloseActivity,
            agent: activity.agent.clone(),
            execution_id: activity.id.clone(),
            observed_score: None,
            deadline: None,
            observed_status: match &activity.run {
                crate::ActivityRun::Found(_, status) => Some(status.clone()),
                _ => None,
            },
            redrive_of: None,
        })
    }

    /// Reads a payload, rejecting unknown versions with a clear error.
    pub fn decode(bytes: &[u8]) -> Result<Self, JobPayloadError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes)?;
        if probe.version != JOB_VERSION {
            return Err(JobPayloadError::Version {
                found: probe.version,
            });
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Liveness;
    use crate::{decide, parse_timestamp, Policy, SlotTimeout};

    fn pair() -> (SlotObservation, RowObservation) {
        let started = parse_timestamp("2026-05-01T15:30:00Z").unwrap();
        let slot = SlotObservation {
            agent: AgentName::parse("team/a b:c").unwrap(),
            execution_id: ExecutionId::parse("e1").unwrap(),
            score: to_unix_seconds(started),
            timeout: SlotTimeout::Declared(60),
            sentinel: false,
        };
        let row = RowObservation {
            execution_id: ExecutionId::parse("e1").unwrap(),
            agent: AgentName::parse("team/a b:c").unwrap(),
            status: Status::Running,
            started_at: Ok(started),
            session: Some("dispatched".into()),
            session_tracked: true,
            started_at_raw: String::new(),
            effective_timeout: None,
            timeout_unread: false,
            lease: None,
            lease_raw: None,
            redelivery_count: 0,
            completed: false,
        };
        (slot, row)
    }

    #[test]
    fn task_id_changes_with_the_evidence() {
        let (mut slot, row) = pair();
        let now = parse_timestamp("2026-05-01T16:30:00Z").unwrap();
        let v = decide(
            Some(&slot),
            Some(&row),
            &Liveness::NONE,
            now,
            &Policy::default(),
        );
        let job = CleanupJob::for_verdict(&v, Some(&slot), Some(&row)).unwrap();
        assert_eq!(job.kind, JobKind::ReclaimSlot);
        let first = job.task_id();
        assert!(first.starts_with("reclaim_slot:team/a b:c:e1:s"), "{first}");
        assert_eq!(first, job.task_id());
        slot.score += 30.0; // renewed, then stale again
        let v = decide(
            Some(&slot),
            Some(&row),
            &Liveness::NONE,
            now,
            &Policy::default(),
        );
        let again = CleanupJob::for_verdict(&v, Some(&slot), Some(&row)).unwrap();
        assert_ne!(first, again.task_id());
    }

    #[test]
    fn healthy_pairs_make_no_job() {
        let (slot, row) = pair();
        let v = decide(
            Some(&slot),
            Some(&row),
            &Liveness::NONE,
            row.started_at.clone().unwrap(),
            &Policy::default(),
        );
        assert_eq!(CleanupJob::for_verdict(&v, Some(&slot), Some(&row)), None);
    }

    #[test]
    fn payloads_round_trip_and_bad_ones_are_errors() {
        let (slot, row) = pair();
        let now = parse_timestamp("2026-05-01T16:30:00Z").unwrap();
        let v = decide(
            Some(&slot),
            Some(&row),
            &Liveness::NONE,
            now,
            &Policy::default(),
        );
        let job = CleanupJob::for_verdict(&v, Some(&slot), Some(&row)).unwrap();
        let bytes = serde_json::to_vec(&job).unwrap();
        assert_eq!(CleanupJob::decode(&bytes).unwrap(), job);

        assert!(matches!(
            CleanupJob::decode(b"{not json"),
            Err(JobPayloadError::Malformed(_))
        ));
        let future = String::from_utf8(bytes)
            .unwrap()
            .replace("\"version\":1", "\"version\":9");
        assert!(matches!(
            CleanupJob::decode(future.as_bytes()),
            Err(JobPayloadError::Version { found: 9 })
        ));
        let bad_id = r#"{"version":1,"kind":"fail_run","agent":"a","execution_id":"x:y"}"#;
        assert!(CleanupJob::decode(bad_id.as_bytes()).is_err());
    }
}
