//! The reconciliation rule: one (slot?, row?) pair and `now` in, one [`Verdict`] out.
//!
//! The producer runs [`decide`] to choose jobs; the worker runs it again on fresh state
//! before acting. Both directions are covered in one place — Redis→SQL (a slot whose row is
//! gone or finished is leaked capacity) and SQL→Redis (a running row whose slot is gone is
//! an orphan) — and every slot is judged by its *own* deadline, never a global TTL: a sweep
//! that fails a live long-running task is worse than no sweep at all.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use crate::{
    from_unix_seconds, AgentName, ErrorStyle, ExecutionId, LeasePolicy, Policy, SkippedPolicy,
    Status, Timestamp, TimestampError, UnreachablePolicy, EARLIEST_PLAUSIBLE_SCORE,
    MAX_SCORE_AHEAD_SECS, MAX_TIMEOUT_SECS, PLATFORM_MAX_TIMEOUT_SECS,
};

/// The `timeout_seconds` field of a slot's metadata hash, as found.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", content = "value", rename_all = "snake_case")]
pub enum SlotTimeout {
    /// A usable timeout in seconds.
    Declared(i64),
    /// No hash, or no such field (the hash expires on its own; old platform versions
    /// never wrote it).
    Missing,
    /// The field holds something that is not a timeout (`"7200s"`, milliseconds, a negative
    /// number); the raw value is kept for the report. The deadline then takes the longest
    /// of every candidate timeout, never a shorter one: a guess must not reap a live run.
    Corrupt(String),
}

impl SlotTimeout {
    /// Reads the raw hash field.
    pub fn parse(raw: Option<&str>) -> Self {
        match raw {
            None => Self::Missing,
            Some(text) => match text.trim().parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs >= 1.0 && secs <= MAX_TIMEOUT_SECS as f64 => {
                    Self::Declared(secs.round() as i64)
                }
                _ => Self::Corrupt(text.to_owned()),
            },
        }
    }
}

/// One member of an agent's slot ZSET, with what its metadata hash says.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SlotObservation {
    pub agent: AgentName,
    pub execution_id: ExecutionId,
    /// The ZSET score exactly as read (unix seconds at acquire or last renewal). Kept raw
    /// because the reclaim compare-and-delete compares it for equality.
    pub score: f64,
    pub timeout: SlotTimeout,
    /// The member is one of the platform's own backlog sentinels (`drain-…`): a
    /// placeholder its backlog drain holds while it swaps a queued run in, with no row by
    /// design. Never released or reclaimed; reported when it outlives
    /// [`Policy::sentinel_report_after_secs`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sentinel: bool,
}

/// One `schedule_executions` row, as the rules need it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RowObservation {
    pub execution_id: ExecutionId,
    pub agent: AgentName,
    pub status: Status,
    #[serde(serialize_with = "serialize_started_at")]
    #[schema(value_type = String)]
    pub started_at: Result<Timestamp, TimestampError>,
    /// `started_at` exactly as stored: every compare-and-set on the row names it, so a
    /// row rewritten since it was read (a re-queued run) is never changed on old evidence.
    #[serde(skip)]
    pub started_at_raw: String,
    /// `claude_session_id`: NULL right after creation, `dispatched` once handed over,
    /// later the real session id.
    pub session: Option<String>,
    /// Whether the database records sessions at all: platforms before spring 2026 have no
    /// `claude_session_id` column, and there the never-launched rule does not apply.
    #[serde(skip_serializing_if = "is_true")]
    pub session_tracked: bool,
    /// The schedule's `timeout_seconds`, else the agent's `execution_timeout_seconds`.
    /// `None` when neither declares one; the policy default applies then.
    pub effective_timeout: Option<i64>,
    /// The row was read without its effective timeout (a sweep's page of open rows reads
    /// it only for the runs whose deadline needs it). Deadlines then take the longest
    /// timeout janitor accepts: a timeout not read can delay a reap, never cause one.
    #[serde(skip)]
    pub timeout_unread: bool,
    /// `lease_expires_at` of a pull-mode run (claimed by a worker, holding a lease instead
    /// of a slot). `None` when NULL, empty, or the database predates the column. A leased
    /// run is the platform's lease reaper's: judged by its lease, never by slot rules.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_lease"
    )]
    #[schema(value_type = Option<String>)]
    pub lease: Option<Result<Timestamp, TimestampError>>,
    /// `lease_expires_at` exactly as stored: a lease write names it.
    #[serde(skip)]
    pub lease_raw: Option<String>,
    /// `redelivery_count`: how often the platform's lease reaper re-queued the run (0 when
    /// NULL or absent).
    #[serde(skip_serializing_if = "is_zero")]
    pub redelivery_count: i64,
    /// Whether `completed_at` is set (under [`SkippedPolicy::Platform`] a `skipped` row
    /// with it is terminal).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub completed: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn serialize_lease<S: serde::Serializer>(
    value: &Option<Result<Timestamp, TimestampError>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => serialize_started_at(v, serializer),
        None => serializer.serialize_none(),
    }
}

/// Evidence of life that lives outside the slot and the row, gathered per batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// The platform's in-flight marker (`execution:inflight:{id}`, a 60 s key refreshed
    /// every 15 s while a dispatch is alive in a backend process) exists.
    pub in_flight: bool,
    /// What the agent's container said about the run, when it was asked (the optional
    /// liveness probe; `None` when off or not asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSays>,
}

impl Liveness {
    /// No evidence beyond the stores.
    pub const NONE: Self = Self {
        in_flight: false,
        agent: None,
    };
}

/// The agent's answer about one run (`GET …/api/executions/running`: `executions`,
/// `recently_completed_ids`, `pending_ids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentSays {
    /// Listed among its running executions.
    Running,
    /// Accepted, not yet spawned.
    Pending,
    /// Finished moments ago: the agent has the result, the platform is writing it.
    RecentlyCompleted,
    /// The agent answered and does not know the run.
    Absent,
    /// No usable answer (down, slow, malformed).
    Unreachable,
}

impl AgentSays {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Pending => "pending",
            Self::RecentlyCompleted => "recently_completed",
            Self::Absent => "absent",
            Self::Unreachable => "unreachable",
        }
    }
}

/// What proves a pair alive although a slot or row rule alone would act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum AliveBy {
    /// The platform's in-flight marker for the run exists.
    InFlightMarker,
    /// A pull-mode run whose lease is valid until `until`.
    Lease { until: Timestamp },
    /// The platform's own backlog sentinel, younger than the report bound.
    Sentinel,
    /// The agent lists the run as running (or accepted, `pending`).
    Agent { says: AgentSays },
}

impl AliveBy {
    /// A few words for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::InFlightMarker => "in-flight marker".to_owned(),
            Self::Lease { until } => {
                format!("lease valid until {}", crate::format_timestamp(*until))
            }
            Self::Sentinel => "the platform's backlog sentinel".to_owned(),
            Self::Agent { says } => format!("the agent lists it as {}", says.as_str()),
        }
    }
}

pub(crate) fn serialize_timestamp_result<S: serde::Serializer>(
    value: &Result<Timestamp, TimestampError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serialize_started_at(value, serializer)
}

fn serialize_started_at<S: serde::Serializer>(
    value: &Result<Timestamp, TimestampError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Ok(ts) => serializer.serialize_str(&crate::format_timestamp(*ts)),
        Err(err) => serializer.serialize_str(&err.value),
    }
}

impl RowObservation {
    /// Whether the run ever got a session. `dispatched` is a session, not a failure.
    pub fn has_session(&self) -> bool {
        self.session
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty())
    }
}

/// Where the TTL behind a deadline came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutSource {
    /// The slot hash's own `timeout_seconds`.
    Slot,
    /// The run's schedule or agent.
    Row,
    /// The configured default.
    Default,
    /// The slot's own timeout was corrupt: the longest of the row's, the default and the
    /// platform's maximum.
    Longest,
}

/// Why a live slot is leaked capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "reason", content = "status", rename_all = "snake_case")]
pub enum LeakReason {
    /// The run already finished; its slot should have been released.
    RowTerminal(Status),
    /// No row has existed for longer than the grace window.
    RowMissing,
}

/// Something an operator should see that janitor will not change.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "concern", content = "detail", rename_all = "snake_case")]
pub enum Concern {
    /// `queued` / `pending_retry` rows hold no slot by design.
    AwaitingSlot(Status),
    /// A status this version does not know; preserved and left alone.
    UnknownStatus(String),
    /// `started_at` is unreadable, so no age-based rule can be applied.
    UnparseableStartedAt(String),
    /// The slot's score is not a usable instant (e.g. `inf`).
    CorruptSlotScore(f64),
    /// A pull-mode run's lease ended at this instant: the platform's lease reaper
    /// re-queues it (or parks it at its re-delivery cap).
    LeaseExpired(Timestamp),
    /// `lease_expires_at` is set but unreadable: the run is leased, so no slot rule
    /// applies, and its lease cannot be judged.
    UnparseableLease(String),
    /// A backlog sentinel (`drain-…`) held since this instant, longer than a backlog swap
    /// takes: left to the platform, reported.
    StaleSentinel(Timestamp),
    /// The agent finished the run moments ago: it has the result and the platform is
    /// writing it, so the row is left to the platform.
    AgentHasResult,
    /// The agent could not be asked and the policy is to act only on its answer.
    AgentUnreachable,
}

/// What the rules say about one (slot?, row?) pair.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Rule 1: the slot is past its own deadline. Reclaim it; fail its row if that row is
    /// still in progress.
    ReclaimStaleSlot { deadline: Timestamp, fail_row: bool },
    /// Rule 2: the slot is alive but nothing runs in it. Release it; the row is not touched.
    ReleaseLeakedSlot { reason: LeakReason },
    /// Rule 3: a `running` row with no slot, past its deadline.
    FailOrphan { deadline: Timestamp },
    /// Rule 4: a `running` row that never got a session. Its slot, if any, is leaked.
    FailNeverLaunched {
        since: Timestamp,
        release_slot: bool,
    },
    /// A pull-mode run's lease expired under [`LeasePolicy::Requeue`], below the cap:
    /// back to `queued` with `redelivery_count + 1`, as the platform's lease reaper does.
    RequeueLease { until: Timestamp },
    /// A pull-mode run's lease expired under [`LeasePolicy::Fail`], or under
    /// [`LeasePolicy::Requeue`] at the re-delivery cap (`poison`): `failed`.
    FailLease { until: Timestamp, poison: bool },
    /// Rule 7: a `queued` row with no slot has waited longer than the backlog's expiry
    /// (from `started_at`, its creation): `failed`, as the platform's own backlog sweep does.
    FailBacklogExpired { since: Timestamp },
    /// Rule 5: a `skipped` row older than the threshold becomes `cancelled` (`failed`,
    /// `as_failed`, under [`SkippedPolicy::Platform`]).
    FinalizeSkipped { since: Timestamp, as_failed: bool },
    /// Nothing to change, but worth reporting.
    Report(Concern),
    /// A slot or row rule would act, but evidence beyond the stores shows the run alive.
    Alive {
        #[serde(flatten)]
        by: AliveBy,
        recheck_at: Option<Timestamp>,
    },
    /// Rule 6: nothing to do; `recheck_at` is when this verdict can next change by itself.
    Healthy { recheck_at: Option<Timestamp> },
}

impl Verdict {
    /// Whether applying this verdict changes anything.
    pub fn is_actionable(&self) -> bool {
        !matches!(
            self,
            Self::Report(_) | Self::Healthy { .. } | Self::Alive { .. }
        )
    }

    /// The status the row is moved to, if the verdict changes the row.
    pub fn row_target(&self) -> Option<Status> {
        match self {
            Self::ReclaimStaleSlot { fail_row: true, .. }
            | Self::FailOrphan { .. }
            | Self::FailNeverLaunched { .. }
            | Self::FailBacklogExpired { .. }
            | Self::FailLease { .. }
            | Self::FinalizeSkipped {
                as_failed: true, ..
            } => Some(Status::Failed),
            Self::RequeueLease { .. } => Some(Status::Queued),
            Self::FinalizeSkipped { .. } => Some(Status::Cancelled),
            _ => None,
        }
    }

    /// Whether the verdict removes the slot.
    pub fn removes_slot(&self) -> bool {
        matches!(
            self,
            Self::ReclaimStaleSlot { .. }
                | Self::ReleaseLeakedSlot { .. }
                | Self::FailNeverLaunched {
                    release_slot: true,
                    ..
                }
        )
    }

    /// Whether the verdict removes a slot or fails a run on evidence a wrong view of the
    /// world could fake (a stale slot, a missing row, a missing slot, a missing session):
    /// the effects the blast-radius breaker guards. Releasing the slot of a finished run and
    /// finalizing a skipped one are not (a terminal row stays terminal).
    pub fn is_guarded(&self) -> bool {
        matches!(
            self,
            Self::ReclaimStaleSlot { .. }
                | Self::ReleaseLeakedSlot {
                    reason: LeakReason::RowMissing
                }
                | Self::FailOrphan { .. }
                | Self::FailNeverLaunched { .. }
                | Self::RequeueLease { .. }
                | Self::FailLease { .. }
        )
    }

    /// The instant this verdict became actionable: the deadline or grace end that passed.
    pub fn due_since(&self, slot: Option<&SlotObservation>, policy: &Policy) -> Option<Timestamp> {
        match self {
            Self::ReclaimStaleSlot { deadline, .. } | Self::FailOrphan { deadline } => {
                Some(*deadline)
            }
            Self::FailNeverLaunched { since, .. } => plus(*since, policy.session_grace_secs),
            Self::ReleaseLeakedSlot {
                reason: LeakReason::RowMissing,
            } => slot
                .and_then(|s| from_unix_seconds(s.score))
                .and_then(|at| plus(at, policy.missing_row_grace_secs)),
            Self::FinalizeSkipped { since, .. } => plus(*since, policy.skipped_after_secs),
            Self::FailBacklogExpired { since } => plus(*since, policy.queued_expire_after_secs),
            Self::RequeueLease { until } | Self::FailLease { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// A short stable name, for reports, metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ReclaimStaleSlot { .. } => "reclaim_stale_slot",
            Self::ReleaseLeakedSlot { .. } => "release_leaked_slot",
            Self::FailOrphan { .. } => "fail_orphan",
            Self::FailNeverLaunched { .. } => "fail_never_launched",
            Self::FinalizeSkipped { .. } => "finalize_skipped",
            Self::FailBacklogExpired { .. } => "fail_backlog_expired",
            Self::RequeueLease { .. } => "requeue_lease",
            Self::FailLease { .. } => "fail_lease",
            Self::Report(_) => "report",
            Self::Alive { .. } => "alive",
            Self::Healthy { .. } => "healthy",
        }
    }

    /// The `error` text written to a row this verdict fails or cancels, in the words of
    /// `policy.error_style`.
    pub fn row_error(&self, slot: Option<&SlotObservation>, policy: &Policy) -> Option<String> {
        let platform = policy.error_style == ErrorStyle::Platform;
        match self {
            Self::ReclaimStaleSlot {
                fail_row: true,
                ..
            } if platform => Some(match slot {
                Some(slot) => format!(
                    "lease_expired: Stale execution — slot TTL expired for agent '{}', cleaned by cleanup service",
                    slot.agent
                ),
                None => "lease_expired: Stale execution — slot TTL expired, cleaned by cleanup service"
                    .to_owned(),
            }),
            Self::ReclaimStaleSlot {
                deadline,
                fail_row: true,
            } => Some(match slot {
                Some(slot) => format!(
                    "Stale execution — slot agent:slots:{} member {} (score {}) passed its deadline {}; reclaimed by janitor",
                    slot.agent,
                    slot.execution_id,
                    slot.score,
                    crate::format_timestamp(*deadline)
                ),
                None => format!(
                    "Stale execution — slot passed its deadline {}; reclaimed by janitor",
                    crate::format_timestamp(*deadline)
                ),
            }),
            Self::FailOrphan { .. } if platform => Some(
                "lease_expired: Stale execution — no slot held past its timeout, cleaned by cleanup service"
                    .to_owned(),
            ),
            Self::FailOrphan { deadline } => Some(format!(
                "Orphaned execution — running without a slot past its deadline {}; failed by janitor",
                crate::format_timestamp(*deadline)
            )),
            Self::FailNeverLaunched { .. } => Some(format!(
                "Silent launch failure: no Claude session created within {} seconds",
                policy.session_grace_secs
            )),
            Self::FinalizeSkipped {
                as_failed: true, ..
            } => Some("Finalized by cleanup: skipped execution".to_owned()),
            Self::FailLease { poison: true, .. } => Some(format!(
                "poison_lease: pull lease expired and re-delivery cap ({}) reached — failed by janitor",
                policy.lease_max_redelivery
            )),
            Self::FailLease { until, .. } => Some(format!(
                "lease_expired: pull lease expired at {}; failed by janitor",
                crate::format_timestamp(*until)
            )),
            Self::FailBacklogExpired { .. } => Some(match policy.queued_expire_after_secs {
                secs if secs % 3600 == 0 => {
                    format!("Backlog expired: queued longer than {} hours", secs / 3600)
                }
                secs => format!("Backlog expired: queued longer than {secs} seconds"),
            }),
            Self::FinalizeSkipped { .. } => Some("Skipped — agent was busy".to_owned()),
            _ => None,
        }
    }
}

/// The slot's deadline: its score plus its TTL plus the buffer. The TTL is the slot hash's
/// own `timeout_seconds`, else the row's effective timeout, else the policy default; when
/// the slot's own value is corrupt, the longest of those and the platform's maximum.
/// `None` when the score is not a usable instant.
pub fn slot_deadline(
    slot: &SlotObservation,
    row: Option<&RowObservation>,
    policy: &Policy,
) -> Option<(Timestamp, TimeoutSource)> {
    let acquired = from_unix_seconds(slot.score)?;
    let from_row = row.and_then(row_timeout);
    let (ttl, source) = match (&slot.timeout, from_row) {
        (SlotTimeout::Declared(secs), _) => (*secs, TimeoutSource::Slot),
        (SlotTimeout::Corrupt(_), row_secs) => (
            row_secs
                .unwrap_or(0)
                .max(policy.default_timeout_secs)
                .max(PLATFORM_MAX_TIMEOUT_SECS),
            TimeoutSource::Longest,
        ),
        (SlotTimeout::Missing, Some(secs)) => (secs, TimeoutSource::Row),
        (SlotTimeout::Missing, None) => (policy.default_timeout_secs, TimeoutSource::Default),
    };
    let deadline = acquired.checked_add_signed(TimeDelta::seconds(ttl) + policy.buffer())?;
    Some((deadline, source))
}

/// A slotless `running` row's deadline: `started_at` + effective timeout + buffer.
/// `None` when `started_at` is unreadable.
pub fn row_deadline(row: &RowObservation, policy: &Policy) -> Option<Timestamp> {
    let started = row.started_at.as_ref().ok()?;
    let ttl = row_timeout(row).unwrap_or(policy.default_timeout_secs);
    started.checked_add_signed(TimeDelta::seconds(ttl) + policy.buffer())
}

/// The row's timeout as a deadline may use it: the effective timeout when usable, the
/// longest accepted when it was not read.
fn row_timeout(row: &RowObservation) -> Option<i64> {
    if row.timeout_unread {
        Some(MAX_TIMEOUT_SECS)
    } else {
        usable(row.effective_timeout)
    }
}

fn usable(timeout: Option<i64>) -> Option<i64> {
    timeout.filter(|t| (1..=MAX_TIMEOUT_SECS).contains(t))
}

/// Whether a slot score can be an acquire or renewal time the platform wrote: finite, not
/// before 2000, and at most a day ahead of Redis' clock. A score in milliseconds would
/// otherwise be an instant in the year 55,000 (never reclaimed) and a tiny one an instant
/// reclaim: both are corrupt, reported and never judged.
pub fn plausible_score(score: f64, now: Timestamp) -> bool {
    score.is_finite()
        && score >= EARLIEST_PLAUSIBLE_SCORE
        && score <= crate::to_unix_seconds(now) + MAX_SCORE_AHEAD_SECS as f64
}

/// `at + secs`, or `None` past chrono's range (only corrupt data gets there).
fn plus(at: Timestamp, secs: i64) -> Option<Timestamp> {
    at.checked_add_signed(TimeDelta::try_seconds(secs)?)
}

/// Decides what to do about one pair, given the evidence of life found outside the stores
/// (`live`). At least one side should be present; with neither, the pair is healthy by
/// definition.
///
/// Before any slot or row rule: a finished run stays finished (its leaked slot is
/// released whatever else says); a backlog sentinel is the platform's own; an in-flight
/// marker proves the run alive; a leased run is judged by its lease alone.
pub fn decide(
    slot: Option<&SlotObservation>,
    row: Option<&RowObservation>,
    live: &Liveness,
    now: Timestamp,
    policy: &Policy,
) -> Verdict {
    let finished = row.is_some_and(|r| is_final(r, policy));
    if let Some(slot) = slot.filter(|s| s.sentinel) {
        return decide_sentinel(slot, now, policy);
    }
    // A slot score that is no acquire time: neither the slot nor its row is judged, by any
    // rule.
    if let Some(slot) = slot.filter(|s| !plausible_score(s.score, now)) {
        return Verdict::Report(Concern::CorruptSlotScore(slot.score));
    }
    if !finished {
        if live.in_flight {
            return Verdict::Alive {
                by: AliveBy::InFlightMarker,
                recheck_at: None,
            };
        }
        match live.agent {
            Some(says @ (AgentSays::Running | AgentSays::Pending)) => {
                return Verdict::Alive {
                    by: AliveBy::Agent { says },
                    recheck_at: None,
                }
            }
            Some(AgentSays::RecentlyCompleted) => return Verdict::Report(Concern::AgentHasResult),
            Some(AgentSays::Unreachable) if policy.agent_unreachable == UnreachablePolicy::Hold => {
                return Verdict::Report(Concern::AgentUnreachable)
            }
            // Absent, or unreachable under `skip`: the stores alone decide.
            _ => {}
        }
        if let Some((row, lease)) = row.and_then(|r| r.lease.as_ref().map(|l| (r, l))) {
            return match lease {
                Err(err) => Verdict::Report(Concern::UnparseableLease(err.value.clone())),
                Ok(until) if now > *until => match policy.lease {
                    // Only a `running` row is the reaper's to act on, as on the platform.
                    _ if row.status != Status::Running => {
                        Verdict::Report(Concern::LeaseExpired(*until))
                    }
                    LeasePolicy::Platform => Verdict::Report(Concern::LeaseExpired(*until)),
                    LeasePolicy::Requeue if row.redelivery_count < policy.lease_max_redelivery => {
                        Verdict::RequeueLease { until: *until }
                    }
                    LeasePolicy::Requeue => Verdict::FailLease {
                        until: *until,
                        poison: true,
                    },
                    LeasePolicy::Fail => Verdict::FailLease {
                        until: *until,
                        poison: false,
                    },
                },
                Ok(until) => Verdict::Alive {
                    by: AliveBy::Lease { until: *until },
                    recheck_at: Some(*until),
                },
            };
        }
    }
    match slot {
        Some(slot) => decide_with_slot(slot, row, now, policy),
        None => match row {
            Some(row) => decide_without_slot(row, now, policy),
            None => Verdict::Healthy { recheck_at: None },
        },
    }
}

/// A backlog sentinel is never touched: alive while younger than the report bound, then
/// reported. A score that is no instant is reported like any corrupt score.
fn decide_sentinel(slot: &SlotObservation, now: Timestamp, policy: &Policy) -> Verdict {
    let bound = from_unix_seconds(slot.score)
        .filter(|_| plausible_score(slot.score, now))
        .and_then(|at| plus(at, policy.sentinel_report_after_secs).map(|end| (at, end)));
    match bound {
        None => Verdict::Report(Concern::CorruptSlotScore(slot.score)),
        Some((since, end)) if now > end => Verdict::Report(Concern::StaleSentinel(since)),
        Some((_, end)) => Verdict::Alive {
            by: AliveBy::Sentinel,
            recheck_at: Some(end),
        },
    }
}

/// Terminal rows never change; under [`SkippedPolicy::Terminal`] neither do `skipped` ones,
/// and under [`SkippedPolicy::Platform`] neither do `skipped` ones with `completed_at` set.
fn is_final(row: &RowObservation, policy: &Policy) -> bool {
    row.status.is_terminal()
        || (row.status == Status::Skipped
            && match policy.skipped {
                SkippedPolicy::Finalize => false,
                SkippedPolicy::Terminal => true,
                SkippedPolicy::Platform => row.completed,
            })
}

/// Statuses that claim a run is in progress: the ones a stale slot's row is failed from.
fn in_progress(status: &Status) -> bool {
    matches!(
        status,
        Status::Running | Status::Queued | Status::PendingRetry
    )
}

fn decide_with_slot(
    slot: &SlotObservation,
    row: Option<&RowObservation>,
    now: Timestamp,
    policy: &Policy,
) -> Verdict {
    let (true, Some(acquired), Some((deadline, _))) = (
        plausible_score(slot.score, now),
        from_unix_seconds(slot.score),
        slot_deadline(slot, row, policy),
    ) else {
        return Verdict::Report(Concern::CorruptSlotScore(slot.score));
    };
    if now > deadline {
        let fail_row = row.is_some_and(|r| in_progress(&r.status) && !is_final(r, policy));
        return Verdict::ReclaimStaleSlot { deadline, fail_row };
    }
    let Some(row) = row else {
        let Some(grace_end) = plus(acquired, policy.missing_row_grace_secs) else {
            return Verdict::Report(Concern::CorruptSlotScore(slot.score));
        };
        return if now > grace_end {
            Verdict::ReleaseLeakedSlot {
                reason: LeakReason::RowMissing,
            }
        } else {
            Verdict::Healthy {
                recheck_at: Some(grace_end.min(deadline)),
            }
        };
    };
    if is_final(row, policy) {
        return Verdict::ReleaseLeakedSlot {
            reason: LeakReason::RowTerminal(row.status.clone()),
        };
    }
    match &row.status {
        Status::Running => match session_check(row, Some(acquired), now, policy) {
            SessionCheck::Missing(since) => Verdict::FailNeverLaunched {
                since,
                release_slot: true,
            },
            SessionCheck::Unknowable(concern) => Verdict::Report(concern),
            SessionCheck::Pending(at) => Verdict::Healthy {
                recheck_at: Some(at.min(deadline)),
            },
            SessionCheck::Present => Verdict::Healthy {
                recheck_at: Some(deadline),
            },
        },
        Status::Skipped => decide_skipped(row, now, policy, Some(deadline)),
        Status::Other(value) => Verdict::Report(Concern::UnknownStatus(value.clone())),
        // Queued / pending_retry rows holding a live slot are being dispatched right now.
        _ => Verdict::Healthy {
            recheck_at: Some(deadline),
        },
    }
}

fn decide_without_slot(row: &RowObservation, now: Timestamp, policy: &Policy) -> Verdict {
    if is_final(row, policy) {
        return Verdict::Healthy { recheck_at: None };
    }
    match &row.status {
        Status::Running => {
            let recheck = match session_check(row, None, now, policy) {
                SessionCheck::Missing(since) => {
                    return Verdict::FailNeverLaunched {
                        since,
                        release_slot: false,
                    }
                }
                SessionCheck::Unknowable(concern) => return Verdict::Report(concern),
                SessionCheck::Pending(at) => Some(at),
                SessionCheck::Present => None,
            };
            let Some(deadline) = row_deadline(row, policy) else {
                return unparseable(row);
            };
            if now > deadline {
                Verdict::FailOrphan { deadline }
            } else {
                Verdict::Healthy {
                    recheck_at: Some(recheck.map_or(deadline, |at| at.min(deadline))),
                }
            }
        }
        Status::Skipped => decide_skipped(row, now, policy, None),
        Status::Other(value) => Verdict::Report(Concern::UnknownStatus(value.clone())),
        Status::Queued => {
            let Ok(created) = row.started_at.as_ref() else {
                return unparseable(row);
            };
            match plus(*created, policy.queued_expire_after_secs) {
                Some(expiry) if now > expiry => Verdict::FailBacklogExpired { since: *created },
                _ => Verdict::Report(Concern::AwaitingSlot(Status::Queued)),
            }
        }
        status => Verdict::Report(Concern::AwaitingSlot(status.clone())),
    }
}

fn decide_skipped(
    row: &RowObservation,
    now: Timestamp,
    policy: &Policy,
    slot_deadline: Option<Timestamp>,
) -> Verdict {
    let Ok(started) = row.started_at.as_ref() else {
        return unparseable(row);
    };
    let Some(due) = plus(*started, policy.skipped_after_secs) else {
        return unparseable(row);
    };
    if now > due {
        Verdict::FinalizeSkipped {
            since: *started,
            as_failed: policy.skipped == SkippedPolicy::Platform,
        }
    } else {
        Verdict::Healthy {
            recheck_at: Some(slot_deadline.map_or(due, |d| d.min(due))),
        }
    }
}

fn unparseable(row: &RowObservation) -> Verdict {
    Verdict::Report(Concern::UnparseableStartedAt(row_started_text(row)))
}

enum SessionCheck {
    Present,
    /// No session yet, but still inside the grace window that ends at this instant.
    Pending(Timestamp),
    /// No session for longer than the grace window, which ran from this instant.
    Missing(Timestamp),
    Unknowable(Concern),
}

/// Whether a `running` row's session is overdue. The grace runs from the later of
/// `started_at` and the slot's acquire (`acquired`): a run that waited in a queue longer
/// than the grace gets the whole grace once it holds its slot, not none.
fn session_check(
    row: &RowObservation,
    acquired: Option<Timestamp>,
    now: Timestamp,
    policy: &Policy,
) -> SessionCheck {
    if row.has_session() || !row.session_tracked {
        return SessionCheck::Present;
    }
    let started = match &row.started_at {
        Ok(started) => *started,
        Err(err) => {
            return SessionCheck::Unknowable(Concern::UnparseableStartedAt(err.value.clone()))
        }
    };
    let anchor = acquired.map_or(started, |a| a.max(started));
    let Some(grace_end) = plus(anchor, policy.session_grace_secs) else {
        return SessionCheck::Unknowable(Concern::UnparseableStartedAt(row_started_text(row)));
    };
    if now > grace_end {
        SessionCheck::Missing(anchor)
    } else {
        SessionCheck::Pending(grace_end)
    }
}

fn row_started_text(row: &RowObservation) -> String {
    match &row.started_at {
        Err(err) => err.value.clone(),
        Ok(ts) => crate::format_timestamp(*ts),
    }
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
