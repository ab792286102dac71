//! janitor's metrics: every name, its help text and its labels in one table, and the typed
//! events the other crates call to record them.
//!
//! Recording goes through the [`metrics`] facade, so library code never holds a registry:
//! without an installed recorder (a one-shot CLI command) every event is a no-op; `janitor
//! run` and `janitor serve` install the Prometheus exporter and serve it at `GET /metrics`.
//! Label values are closed sets (job kinds, outcomes, effects, stores), never ids or names,
//! so the number of series stays fixed however many agents and runs there are.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

/// Sweeps finished, by `result` (`ok` | `error`).
pub const SWEEPS: &str = "janitor_sweeps_total";
/// How long one sweep took.
pub const SWEEP_DURATION: &str = "janitor_sweep_duration_seconds";
/// Items a sweep judged, by `item` (`slot` | `row`).
pub const SWEEP_ITEMS: &str = "janitor_sweep_items_scanned_total";
/// Unix time of the last sweep that finished without an error.
pub const LAST_SWEEP: &str = "janitor_last_sweep_timestamp_seconds";
/// Violations found, by job `kind` (each sweep counts what it finds, queued or not).
pub const VIOLATIONS: &str = "janitor_violations_found_total";
/// Items a sweep could not read, by `store` (`redis`: slot metadata; `sql`: rows).
pub const CORRUPT_ITEMS: &str = "janitor_corrupt_items_found_total";
/// Jobs pushed to the queue, by `kind`.
pub const ENQUEUED: &str = "janitor_jobs_enqueued_total";
/// Jobs not pushed because the same job already exists, by `kind` and `existing`
/// (`queued` | `dead`).
pub const DEDUPLICATED: &str = "janitor_jobs_deduplicated_total";
/// Dead jobs' work pushed again under a new id after the cool-off, by `kind`.
pub const REDRIVEN: &str = "janitor_jobs_redriven_total";
/// Jobs not pushed because the queue was at its backlog cap, by `kind`.
pub const DEFERRED: &str = "janitor_jobs_deferred_total";
/// 1 while the last sweep's blast-radius breaker held guarded work back (holding, draining
/// or refused), else 0.
pub const BREAKER_TRIPPED: &str = "janitor_breaker_tripped";
/// 1 for the breaker's state after the last sweep, by `state` (`closed` | `holding` |
/// `draining` | `refused`), 0 for the others.
pub const BREAKER_STATE: &str = "janitor_breaker_state";
/// Times the breaker tripped.
pub const BREAKER_TRIPS: &str = "janitor_breaker_trips_total";
/// The breaker's states, as [`BREAKER_STATE`] labels them.
pub const BREAKER_STATES: [&str; 4] = ["closed", "holding", "draining", "refused"];
/// Job deliveries handled, by `kind` and `outcome` (`applied` | `no_longer_needed` | `error`).
pub const ACTIONS: &str = "janitor_actions_total";
/// Changes made, by `effect` (`slot_reclaimed` | `slot_released` | `run_failed` |
/// `run_cancelled`).
pub const EFFECTS: &str = "janitor_effects_total";
/// Compare-and-sets that found the state changed, by `store` (`redis` | `sql`) and `reason`.
pub const CAS_CONFLICTS: &str = "janitor_cas_conflicts_total";
/// Runs janitor was about to fail that finished first (a late `success` beat the fail).
pub const LATE_COMPLETIONS: &str = "janitor_late_completions_total";
/// From a run's deadline to janitor applying its reclaim or fail, by `kind`.
pub const REAP_LATENCY: &str = "janitor_reap_latency_seconds";
/// Jobs that went dead, by `kind` and `reason` (`gave_up` | `malformed`).
pub const DEAD: &str = "janitor_jobs_dead_total";
/// Worker streams restarted after a Redis error.
pub const WORKER_RESTARTS: &str = "janitor_worker_restarts_total";
/// Jobs in the queue, by `state` (read from Redis at scrape time).
pub const QUEUE_JOBS: &str = "janitor_queue_jobs";
/// Seconds the oldest due job has waited (0 when none is due; read at scrape time).
pub const OLDEST_DUE: &str = "janitor_queue_oldest_due_age_seconds";
/// 1 when the last scrape could read the queue from Redis, else 0.
pub const QUEUE_UP: &str = "janitor_queue_up";
/// Worker replicas whose heartbeat is fresh (read from Redis at scrape time).
pub const QUEUE_WORKERS: &str = "janitor_queue_workers_alive";

/// Due passes finished, by `result` (`ok` | `error`).
pub const DUE_PASSES: &str = "janitor_due_passes_total";
/// How long one due pass took.
pub const DUE_PASS_DURATION: &str = "janitor_due_pass_duration_seconds";
/// Deadline-index members due passes handled, by `outcome` (`rescheduled`: still waiting,
/// put back at its next instant; `dropped`: gone or only reportable; `handed_back`: its row
/// vanished, left to the full sweep; `acted`: a job was found).
pub const DUE_PAIRS: &str = "janitor_due_pairs_total";
/// Pairs in the deadline index after the last full sweep rebuilt it.
pub const DUE_INDEX_SIZE: &str = "janitor_due_index_pairs";
/// Runs whose declared timeout a long-running producer's sweeps reuse.
pub const TIMEOUT_CACHE_SIZE: &str = "janitor_sweep_timeout_cache_entries";

/// Always 1, labelled with the running `version`.
pub const BUILD_INFO: &str = "janitor_build_info";
/// Gauge: runs janitor failed in the last 24 h that the platform has since completed.
pub const COMPLETED_AFTER_FAILED: &str = "janitor_runs_completed_after_failed";
/// Counter: agent liveness probe requests, by outcome.
pub const AGENT_PROBES: &str = "janitor_agent_probes_total";
/// Histogram: agent liveness probe request latency, by outcome.
pub const AGENT_PROBE_LATENCY: &str = "janitor_agent_probe_duration_seconds";

/// Histogram buckets for [`SWEEP_DURATION`], in seconds.
pub const SWEEP_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Histogram buckets for [`DUE_PASS_DURATION`], in seconds.
pub const DUE_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Histogram buckets for [`REAP_LATENCY`], in seconds: a due pass's second up to hours.
pub const REAP_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_800.0, 3_600.0, 7_200.0,
];

/// Gives every metric its help text and unit (call once, after installing a recorder).
pub fn describe() {
    describe_counter!(SWEEPS, "Sweeps finished, by result (ok, error).");
    describe_histogram!(SWEEP_DURATION, Unit::Seconds, "How long one sweep took.");
    describe_counter!(DUE_PASSES, "Due passes finished, by result (ok, error).");
    describe_histogram!(
        DUE_PASS_DURATION,
        Unit::Seconds,
        "How long one due pass took."
    );
    describe_counter!(
        DUE_PAIRS,
        "Deadline-index pairs due passes handled, by outcome (rescheduled, dropped, handed_back, acted)."
    );
    describe_gauge!(
        DUE_INDEX_SIZE,
        "Pairs in the deadline index after the last full sweep rebuilt it."
    );
    describe_gauge!(
        TIMEOUT_CACHE_SIZE,
        "Runs whose declared timeout this producer's sweeps reuse while their slot's score is unchanged."
    );
    describe_counter!(SWEEP_ITEMS, "Items sweeps judged, by item (slot, row).");
    describe_gauge!(
        LAST_SWEEP,
        Unit::Seconds,
        "Unix time of the last sweep that finished without an error."
    );
    describe_counter!(
        VIOLATIONS,
        "Violations sweeps found, by job kind (counted by every sweep that sees them)."
    );
    describe_counter!(
        CORRUPT_ITEMS,
        "Items a sweep could not read, by store (redis: slot metadata, sql: rows)."
    );
    describe_counter!(ENQUEUED, "Cleanup jobs pushed to the queue, by kind.");
    describe_counter!(
        DEDUPLICATED,
        "Jobs not pushed because the same job exists, by kind and existing (queued, dead)."
    );
    describe_counter!(
        REDRIVEN,
        "Dead jobs' work pushed again under a new id after the cool-off, by kind."
    );
    describe_counter!(
        DEFERRED,
        "Jobs not pushed because the queue was at its backlog cap, by kind."
    );
    describe_gauge!(
        BREAKER_TRIPPED,
        "1 while the last sweep's blast-radius breaker held guarded work back."
    );
    describe_gauge!(
        BREAKER_STATE,
        "The breaker's state after the last sweep (1 for the current state)."
    );
    describe_counter!(BREAKER_TRIPS, "Times the blast-radius breaker tripped.");
    describe_counter!(
        ACTIONS,
        "Job deliveries handled, by kind and outcome (applied, no_longer_needed, error)."
    );
    describe_counter!(
        EFFECTS,
        "Changes applied, by effect (slot_reclaimed, slot_released, run_failed, run_cancelled)."
    );
    describe_counter!(
        CAS_CONFLICTS,
        "Compare-and-sets that found the state changed, by store and reason."
    );
    describe_counter!(
        LATE_COMPLETIONS,
        "Runs about to be failed that reached a terminal status first."
    );
    describe_histogram!(
        REAP_LATENCY,
        Unit::Seconds,
        "From a run's deadline to janitor applying its reclaim or fail, by kind."
    );
    describe_counter!(
        DEAD,
        "Jobs that went dead, by kind and reason (gave_up, malformed)."
    );
    describe_counter!(
        WORKER_RESTARTS,
        "Worker streams restarted after a Redis error."
    );
    describe_gauge!(
        QUEUE_JOBS,
        "Jobs in the queue, by state (read at scrape time)."
    );
    describe_gauge!(
        OLDEST_DUE,
        Unit::Seconds,
        "How long the oldest due job has waited (read at scrape time)."
    );
    describe_gauge!(
        COMPLETED_AFTER_FAILED,
        "Runs janitor failed in the last 24 hours that the platform has since completed (a late success wins; janitor never writes them again)."
    );
    describe_counter!(
        AGENT_PROBES,
        "Agent liveness probe requests, by outcome (answered, unreachable, timeout, malformed)."
    );
    describe_histogram!(
        AGENT_PROBE_LATENCY,
        Unit::Seconds,
        "How long an agent liveness probe request took, by outcome."
    );
    describe_gauge!(
        QUEUE_WORKERS,
        "Worker replicas whose queue heartbeat is fresh (read at scrape time)."
    );
    describe_gauge!(BUILD_INFO, "Always 1, labelled with the running version.");
    describe_gauge!(
        QUEUE_UP,
        "1 when the last scrape could read the queue from Redis."
    );
}

/// Every compare-and-set conflict, as [`cas_conflict`] records it.
pub const CAS_REASONS: [(&str, &str); 7] = [
    ("redis", "renewed"),
    ("redis", "not_yet_due"),
    ("redis", "slot_already_gone"),
    ("sql", "already_terminal"),
    ("sql", "status_changed"),
    ("sql", "row_changed"),
    ("sql", "not_found"),
];

/// Creates every counter at 0 for every label value it can take (`kinds`: the job kinds;
/// `effects`: the effects' names),
/// so a dashboard's `rate()` and an alert's `increase()` see a series from the first
/// scrape instead of none until the first event.
pub fn register(kinds: &[&'static str], effects: &[&'static str]) {
    for result in ["ok", "error"] {
        counter!(SWEEPS, "result" => result).absolute(0);
    }
    for item in ["slot", "row"] {
        counter!(SWEEP_ITEMS, "item" => item).absolute(0);
    }
    for store in ["redis", "sql"] {
        counter!(CORRUPT_ITEMS, "store" => store).absolute(0);
    }
    counter!(BREAKER_TRIPS).absolute(0);
    for result in ["ok", "error"] {
        counter!(DUE_PASSES, "result" => result).absolute(0);
    }
    for outcome in ["rescheduled", "dropped", "handed_back", "acted"] {
        counter!(DUE_PAIRS, "outcome" => outcome).absolute(0);
    }
    for &kind in kinds {
        sweep_kind(kind, &KindFigures::default());
        for outcome in [
            ActionOutcome::Applied,
            ActionOutcome::NoLongerNeeded,
            ActionOutcome::Error,
        ] {
            counter!(ACTIONS, "kind" => kind, "outcome" => outcome.as_str()).absolute(0);
        }
        counter!(DEAD, "kind" => kind, "reason" => "gave_up").absolute(0);
    }
    counter!(DEAD, "kind" => "unknown", "reason" => "malformed").absolute(0);
    for &name in effects {
        counter!(EFFECTS, "effect" => name).absolute(0);
    }
    for (store, reason) in CAS_REASONS {
        counter!(CAS_CONFLICTS, "store" => store, "reason" => reason).absolute(0);
    }
    counter!(LATE_COMPLETIONS).absolute(0);
    counter!(WORKER_RESTARTS).absolute(0);
    for outcome in ["answered", "unreachable", "timeout", "malformed"] {
        counter!(AGENT_PROBES, "outcome" => outcome).absolute(0);
    }
}

/// What one sweep saw and did, for [`sweep_finished`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SweepFigures {
    pub elapsed: Duration,
    pub slots: u64,
    pub rows: u64,
    pub corrupt_slots: u64,
    pub corrupt_rows: u64,
    pub breaker_tripped: bool,
    /// The breaker's state after the sweep (one of [`BREAKER_STATES`]).
    pub breaker_state: &'static str,
    /// Whether it tripped on this sweep.
    pub breaker_trip: bool,
    /// Unix time the sweep judged at.
    pub at_unix: f64,
}

/// A sweep finished without an error.
pub fn sweep_finished(f: &SweepFigures) {
    counter!(SWEEPS, "result" => "ok").increment(1);
    histogram!(SWEEP_DURATION).record(f.elapsed.as_secs_f64());
    counter!(SWEEP_ITEMS, "item" => "slot").increment(f.slots);
    counter!(SWEEP_ITEMS, "item" => "row").increment(f.rows);
    counter!(CORRUPT_ITEMS, "store" => "redis").increment(f.corrupt_slots);
    counter!(CORRUPT_ITEMS, "store" => "sql").increment(f.corrupt_rows);
    gauge!(LAST_SWEEP).set(f.at_unix);
    gauge!(BREAKER_TRIPPED).set(if f.breaker_tripped { 1.0 } else { 0.0 });
    for state in BREAKER_STATES {
        let on = if state == f.breaker_state { 1.0 } else { 0.0 };
        gauge!(BREAKER_STATE, "state" => state).set(on);
    }
    if f.breaker_trip {
        counter!(BREAKER_TRIPS).increment(1);
    }
}

/// What one due pass did.
#[derive(Debug, Clone, Copy, Default)]
pub struct DueFigures {
    pub elapsed: Duration,
    pub due: u64,
    pub rescheduled: u64,
    pub dropped: u64,
    pub handed_back: u64,
}

/// A due pass finished without an error.
pub fn due_pass_finished(f: &DueFigures) {
    counter!(DUE_PASSES, "result" => "ok").increment(1);
    histogram!(DUE_PASS_DURATION).record(f.elapsed.as_secs_f64());
    let acted = f
        .due
        .saturating_sub(f.rescheduled + f.dropped + f.handed_back);
    counter!(DUE_PAIRS, "outcome" => "rescheduled").increment(f.rescheduled);
    counter!(DUE_PAIRS, "outcome" => "dropped").increment(f.dropped);
    counter!(DUE_PAIRS, "outcome" => "handed_back").increment(f.handed_back);
    counter!(DUE_PAIRS, "outcome" => "acted").increment(acted);
}

/// A due pass stopped on an error.
pub fn due_pass_failed() {
    counter!(DUE_PASSES, "result" => "error").increment(1);
}

/// The deadline index a full sweep rebuilt holds `n` pairs.
pub fn due_index_size(n: u64) {
    gauge!(DUE_INDEX_SIZE).set(n as f64);
}

/// A long-running producer's sweeps remember the declared timeouts of `n` runs.
pub fn timeout_cache_size(n: usize) {
    gauge!(TIMEOUT_CACHE_SIZE).set(n as f64);
}

/// The breaker tripped outside a sweep (in a due pass).
pub fn breaker_tripped() {
    counter!(BREAKER_TRIPS).increment(1);
}

/// A sweep stopped on an error.
pub fn sweep_failed() {
    counter!(SWEEPS, "result" => "error").increment(1);
}

/// What a sweep found and pushed for one job kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct KindFigures {
    pub found: u64,
    pub enqueued: u64,
    pub already_queued: u64,
    pub dead: u64,
    pub redriven: u64,
    pub deferred: u64,
}

/// A sweep's findings for `kind`.
pub fn sweep_kind(kind: &'static str, f: &KindFigures) {
    counter!(VIOLATIONS, "kind" => kind).increment(f.found);
    counter!(ENQUEUED, "kind" => kind).increment(f.enqueued);
    counter!(DEDUPLICATED, "kind" => kind, "existing" => "queued").increment(f.already_queued);
    counter!(DEDUPLICATED, "kind" => kind, "existing" => "dead").increment(f.dead);
    counter!(DEFERRED, "kind" => kind).increment(f.deferred);
    counter!(REDRIVEN, "kind" => kind).increment(f.redriven);
}

/// How a job delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    Applied,
    NoLongerNeeded,
    Error,
}

impl ActionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::NoLongerNeeded => "no_longer_needed",
            Self::Error => "error",
        }
    }
}

/// A job delivery of `kind` ended with `outcome`.
pub fn action(kind: &'static str, outcome: ActionOutcome) {
    counter!(ACTIONS, "kind" => kind, "outcome" => outcome.as_str()).increment(1);
}

/// A change was applied (`effect` is the effect's stable name).
pub fn effect(effect: &'static str) {
    counter!(EFFECTS, "effect" => effect).increment(1);
}

/// A compare-and-set in `store` (`redis` | `sql`) found the state changed (`reason`).
pub fn cas_conflict(store: &'static str, reason: &'static str) {
    counter!(CAS_CONFLICTS, "store" => store, "reason" => reason).increment(1);
}

/// A run janitor was about to fail reached a terminal status first.
pub fn late_completion() {
    counter!(LATE_COMPLETIONS).increment(1);
}

/// A job of `kind` applied `late` after the run's deadline.
pub fn reaped(kind: &'static str, late: Duration) {
    histogram!(REAP_LATENCY, "kind" => kind).record(late.as_secs_f64());
}

/// Runs janitor failed in the last 24 h that are `success` now (read by every sweep).
pub fn completed_after_failed(n: u64) {
    gauge!(COMPLETED_AFTER_FAILED).set(n as f64);
}

/// The agent liveness probe asked an agent: `outcome` is `answered`, `unreachable`,
/// `timeout` or `malformed`; `took` how long the request took.
pub fn agent_probe(outcome: &'static str, took: Duration) {
    counter!(AGENT_PROBES, "outcome" => outcome).increment(1);
    histogram!(AGENT_PROBE_LATENCY, "outcome" => outcome).record(took.as_secs_f64());
}

/// A job went dead: `reason` is `gave_up` or `malformed` (whose kind is `unknown`).
pub fn dead(kind: &'static str, reason: &'static str) {
    counter!(DEAD, "kind" => kind, "reason" => reason).increment(1);
}

/// A worker stream was restarted.
pub fn worker_restarted() {
    counter!(WORKER_RESTARTS).increment(1);
}

/// The queue as read at scrape time: `(state, jobs)` pairs, the oldest due job's wait and
/// the workers with a fresh heartbeat.
pub fn queue_depth(
    states: impl IntoIterator<Item = (&'static str, u64)>,
    oldest_due: Option<f64>,
    workers_alive: u64,
) {
    for (state, jobs) in states {
        gauge!(QUEUE_JOBS, "state" => state).set(jobs as f64);
    }
    gauge!(OLDEST_DUE).set(oldest_due.unwrap_or(0.0));
    gauge!(QUEUE_WORKERS).set(workers_alive as f64);
    gauge!(QUEUE_UP).set(1.0);
}

/// The queue could not be read at scrape time.
pub fn queue_unreadable() {
    gauge!(QUEUE_UP).set(0.0);
}

/// The running version, as `janitor_build_info{version} 1`.
pub fn build_info(version: &'static str) {
    gauge!(BUILD_INFO, "version" => version).set(1.0);
}
