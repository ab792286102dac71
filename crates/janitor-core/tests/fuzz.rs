//! Property fuzzing of everything janitor reads from outside and of the verdict, with the
//! safety invariants as properties: no input panics; a slot within its own deadline is
//! never reclaimed; a terminal row never changes; an implausible slot score changes
//! nothing. `make test` runs a short pass (`JANITOR_FUZZ_CASES`, default 2,000 per target);
//! `make fuzz` runs a million cases per target in a release build. A failing input is
//! shrunk by proptest and written to `tests/fuzz.proptest-regressions`, which is committed
//! so it is replayed first on every later run.
#![allow(clippy::unwrap_used)]

use chrono::{TimeDelta, TimeZone, Utc};
use janitor_core::{
    decide, from_unix_seconds, parse_timestamp, plausible_score, slot_deadline, to_unix_seconds,
    AgentName, AgentSays, CleanupJob, ExecutionId, Liveness, Policy, RowObservation, SkippedPolicy,
    SlotObservation, SlotTimeout, Status, Timestamp, Verdict, MAX_TIMEOUT_SECS,
};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("JANITOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Shrinking a failure fully matters more than speed when one is found.
        max_shrink_iters: 100_000,
        ..ProptestConfig::default()
    }
}

/// Text shaped like a timestamp, with every part liable to be wrong.
fn timestampish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9+-]{1,7}-[0-9]{1,3}-[0-9]{1,3}[T t][0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}(\\.[0-9]{0,12})?(Z|z|[+-][0-9]{2}:?[0-9]{2}|[^0-9]{0,3})?",
        "\\PC{0,40}",
    ]
}

/// A slot score from anywhere: plausible, milliseconds, tiny, negative, NaN, infinite.
fn score(base: f64) -> impl Strategy<Value = f64> {
    prop_oneof![
        (-200_000i64..200_000).prop_map(move |d| base + d as f64),
        Just(base * 1000.0),
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        0.0..2e9f64,
    ]
}

fn timeout() -> impl Strategy<Value = SlotTimeout> {
    prop_oneof![
        any::<Option<String>>().prop_map(|raw| SlotTimeout::parse(raw.as_deref())),
        (-10i64..20_000).prop_map(|t| SlotTimeout::parse(Some(&t.to_string()))),
        Just(SlotTimeout::Missing),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Running),
        Just(Status::Queued),
        Just(Status::PendingRetry),
        Just(Status::Skipped),
        Just(Status::Success),
        Just(Status::Failed),
        Just(Status::Cancelled),
        Just(Status::Completed),
        "\\PC{0,12}".prop_map(|s| Status::parse(&s)),
    ]
}

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 1, 15, 30, 0).unwrap()
}

fn started() -> impl Strategy<Value = (Result<Timestamp, janitor_core::TimestampError>, String)> {
    prop_oneof![
        (-200_000i64..200_000).prop_map(|d| {
            let ts = t0() + TimeDelta::seconds(d);
            (Ok(ts), janitor_core::format_timestamp(ts))
        }),
        timestampish().prop_map(|raw| (parse_timestamp(&raw), raw)),
        Just((
            Ok(chrono::DateTime::<Utc>::MAX_UTC),
            "+262143-12-31T23:59:59.999999999Z".to_owned()
        )),
        Just((
            Ok(chrono::DateTime::<Utc>::MIN_UTC),
            "-262144-01-01T00:00:00Z".to_owned()
        )),
    ]
}

fn pair() -> impl Strategy<
    Value = (
        Option<SlotObservation>,
        Option<RowObservation>,
        Timestamp,
        Policy,
        Liveness,
    ),
> {
    let base = to_unix_seconds(t0());
    let slot = proptest::option::of(
        (score(base), timeout(), proptest::bool::weighted(0.1)).prop_map(
            |(score, timeout, sentinel)| SlotObservation {
                agent: AgentName::parse("a").unwrap(),
                execution_id: ExecutionId::parse("e").unwrap(),
                score,
                timeout,
                sentinel,
            },
        ),
    );
    let row = proptest::option::of(
        (
            status(),
            started(),
            proptest::option::of(prop_oneof![
                Just(String::new()),
                Just("dispatched".to_owned()),
                "\\PC{0,8}"
            ]),
            proptest::option::of(any::<i64>()),
            proptest::option::weighted(0.2, started()),
            any::<bool>(),
        )
            .prop_map(
                |(status, (started_at, raw), session, timeout, lease, completed)| RowObservation {
                    execution_id: ExecutionId::parse("e").unwrap(),
                    agent: AgentName::parse("a").unwrap(),
                    status,
                    started_at,
                    started_at_raw: raw,
                    session,
                    session_tracked: true,
                    effective_timeout: timeout,
                    timeout_unread: false,
                    lease: lease.map(|(lease, _)| lease),
                    lease_raw: None,
                    redelivery_count: 0,
                    completed,
                },
            ),
    );
    let now = prop_oneof![
        (-400_000i64..400_000).prop_map(|d| t0() + TimeDelta::seconds(d)),
        Just(chrono::DateTime::<Utc>::MAX_UTC),
        Just(chrono::DateTime::<Utc>::MIN_UTC),
    ];
    let policy = (
        1i64..MAX_TIMEOUT_SECS,
        0i64..100_000,
        0i64..100_000,
        0i64..100_000,
        0i64..100_000,
        0u8..3,
        0i64..100_000,
    )
        .prop_map(|(d, b, m, s, k, skipped, sentinel)| Policy {
            default_timeout_secs: d,
            ttl_buffer_secs: b,
            missing_row_grace_secs: m,
            session_grace_secs: s,
            skipped_after_secs: k,
            skipped: match skipped {
                0 => SkippedPolicy::Finalize,
                1 => SkippedPolicy::Terminal,
                _ => SkippedPolicy::Platform,
            },
            sentinel_report_after_secs: sentinel,
            error_style: janitor_core::ErrorStyle::Janitor,
            agent_unreachable: janitor_core::UnreachablePolicy::Hold,
            // Shares the skipped threshold's range: expiry before or after every deadline.
            queued_expire_after_secs: k,
            activity_stale_after_secs: s,
            lease: match sentinel % 3 {
                0 => janitor_core::LeasePolicy::Platform,
                1 => janitor_core::LeasePolicy::Requeue,
                _ => janitor_core::LeasePolicy::Fail,
            },
            lease_max_redelivery: 3,
        });
    let live =
        (any::<bool>(), proptest::option::of(0u8..5)).prop_map(|(in_flight, agent)| Liveness {
            in_flight,
            agent: agent.map(|a| match a {
                0 => AgentSays::Running,
                1 => AgentSays::Pending,
                2 => AgentSays::RecentlyCompleted,
                3 => AgentSays::Absent,
                _ => AgentSays::Unreachable,
            }),
        });
    (slot, row, now, policy, live)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_timestamp_parser_never_panics_and_round_trips(raw in timestampish()) {
        if let Ok(ts) = parse_timestamp(&raw) {
            let text = janitor_core::format_timestamp(ts);
            // What janitor writes it reads back to the microsecond.
            let back = parse_timestamp(&text).unwrap();
            prop_assert_eq!(back.timestamp_micros(), ts.timestamp_micros());
        }
    }

    #[test]
    fn the_slot_timeout_parser_never_panics_and_declares_only_usable_timeouts(raw in any::<Option<String>>()) {
        if let SlotTimeout::Declared(secs) = SlotTimeout::parse(raw.as_deref()) {
            prop_assert!((1..=MAX_TIMEOUT_SECS).contains(&secs));
        }
    }

    #[test]
    fn scores_never_panic(score in any::<f64>(), now in -400_000i64..400_000) {
        let now = t0() + TimeDelta::seconds(now);
        let _ = from_unix_seconds(score);
        if plausible_score(score, now) {
            prop_assert!(from_unix_seconds(score).is_some());
        }
    }

    #[test]
    fn the_payload_decoder_never_panics(bytes in any::<Vec<u8>>(), text in "\\{\"version\":[0-9]{1,3},\"kind\":\"\\PC{0,20}\",\"agent\":\"\\PC{0,10}\",\"execution_id\":\"\\PC{0,10}\"(,\"observed_score\":\\PC{0,10})?\\}") {
        let _ = CleanupJob::decode(&bytes);
        if let Ok(job) = CleanupJob::decode(text.as_bytes()) {
            // What decodes re-encodes to the same job.
            let again = CleanupJob::decode(&serde_json::to_vec(&job).unwrap()).unwrap();
            prop_assert_eq!(again, job);
        }
    }

    #[test]
    fn the_verdict_keeps_its_invariants((slot, row, now, policy, live) in pair()) {
        let verdict = decide(slot.as_ref(), row.as_ref(), &live, now, &policy);
        // A backlog sentinel is never touched.
        if slot.as_ref().is_some_and(|s| s.sentinel) {
            prop_assert!(!verdict.is_actionable(), "{:?}", verdict);
        }
        // Proof of life or a lease: nothing is failed and no slot is removed, but the
        // slot of a finished run.
        let finished = row.as_ref().is_some_and(|r| r.status.is_terminal()
            || (r.status == janitor_core::Status::Skipped
                && (policy.skipped == SkippedPolicy::Terminal
                    || (policy.skipped == SkippedPolicy::Platform && r.completed))));
        let agent_knows = matches!(
            live.agent,
            Some(AgentSays::Running | AgentSays::Pending | AgentSays::RecentlyCompleted)
        );
        let leased = row.as_ref().is_some_and(|r| r.lease.is_some());
        if !finished
            && (live.in_flight
                || agent_knows
                || (leased && policy.lease == janitor_core::LeasePolicy::Platform))
        {
            prop_assert!(!verdict.is_actionable(), "{:?}", verdict);
        }
        // A terminal row never changes.
        if let Some(r) = &row {
            if r.status.is_terminal() || !r.status.is_known() {
                prop_assert_eq!(verdict.row_target(), None, "{:?}", verdict);
            }
        }
        if let Some(s) = &slot {
            // An implausible score changes nothing, on either side.
            if !plausible_score(s.score, now) {
                prop_assert!(!verdict.is_actionable(), "{:?}", verdict);
            }
            // A slot within its own deadline is never reclaimed.
            if let Some((deadline, _)) = slot_deadline(s, row.as_ref(), &policy) {
                if now <= deadline {
                    let reclaimed = matches!(verdict, Verdict::ReclaimStaleSlot { .. });
                    prop_assert!(!reclaimed, "{:?}", verdict);
                }
            }
        }
        // A leased run is acted on only past its lease, and only by the lease rules.
        if leased && !finished && !live.in_flight && !agent_knows {
            let lease_rule = matches!(
                verdict,
                Verdict::RequeueLease { .. } | Verdict::FailLease { .. }
            );
            prop_assert!(lease_rule || !verdict.is_actionable(), "{:?}", verdict);
            if let (true, Some(Ok(until))) = (lease_rule, row.as_ref().and_then(|r| r.lease.clone())) {
                prop_assert!(now > until);
            }
        }
        // Nothing is healthy in the past.
        if let Verdict::Healthy { recheck_at: Some(at) } = verdict {
            prop_assert!(at >= now);
        }
    }
}
