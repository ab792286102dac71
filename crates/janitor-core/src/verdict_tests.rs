//! Table-driven tests for every branch of [`decide`], and property tests for the invariants.

use chrono::{TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::{parse_timestamp, to_unix_seconds, JobKind};

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 1, 15, 30, 0).unwrap()
}

fn mins(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

fn slot(acquired: Timestamp, timeout: SlotTimeout) -> SlotObservation {
    SlotObservation {
        agent: AgentName::parse("agent:one").unwrap(),
        execution_id: ExecutionId::parse("exec1").unwrap(),
        score: to_unix_seconds(acquired),
        timeout,
        sentinel: false,
    }
}

fn row(status: &str, started: Timestamp, session: Option<&str>) -> RowObservation {
    RowObservation {
        execution_id: ExecutionId::parse("exec1").unwrap(),
        agent: AgentName::parse("agent:one").unwrap(),
        status: Status::parse(status),
        started_at: Ok(started),
        session: session.map(str::to_owned),
        session_tracked: true,
        started_at_raw: String::new(),
        effective_timeout: None,
        timeout_unread: false,
        lease: None,
        lease_raw: None,
        redelivery_count: 0,
        completed: false,
    }
}

fn policy() -> Policy {
    Policy::default()
}

#[test]
fn the_incident_slot_with_its_own_long_timeout_is_alive_at_21_minutes() {
    // Acquired 15:30 with TTL 3900 s; the platform's 15:51 sweep reclaimed it using 1200 s.
    let s = slot(t0(), SlotTimeout::Declared(3900));
    let r = row("running", t0(), Some("dispatched"));
    let v = decide(
        Some(&s),
        Some(&r),
        &Liveness::NONE,
        t0() + mins(21),
        &policy(),
    );
    let deadline = t0() + TimeDelta::seconds(3900 + 300);
    assert_eq!(
        v,
        Verdict::Healthy {
            recheck_at: Some(deadline)
        }
    );
    // One second past its own deadline it is reclaimed, and its row failed.
    let v = decide(
        Some(&s),
        Some(&r),
        &Liveness::NONE,
        deadline + TimeDelta::seconds(1),
        &policy(),
    );
    assert_eq!(
        v,
        Verdict::ReclaimStaleSlot {
            deadline,
            fail_row: true
        }
    );
    let error = v.row_error(Some(&s), &policy()).unwrap();
    assert!(error.contains("agent:slots:agent:one"), "{error}");
    assert!(error.contains("exec1"), "{error}");
}

#[test]
fn slot_ttl_falls_back_to_row_then_default() {
    let now = t0() + mins(30);
    let mut r = row("running", t0(), Some("dispatched"));
    // Missing metadata, row declares 900 s: deadline 15:30 + 20 min → stale at 15:60.
    r.effective_timeout = Some(900);
    let s = slot(t0(), SlotTimeout::Missing);
    let (deadline, source) = slot_deadline(&s, Some(&r), &policy()).unwrap();
    assert_eq!(source, TimeoutSource::Row);
    assert_eq!(deadline, t0() + mins(20));
    assert!(matches!(
        decide(Some(&s), Some(&r), &Liveness::NONE, now, &policy()),
        Verdict::ReclaimStaleSlot { fail_row: true, .. }
    ));
    // Neither: the policy default (3600 s).
    r.effective_timeout = None;
    let (deadline, source) = slot_deadline(&s, Some(&r), &policy()).unwrap();
    assert_eq!(source, TimeoutSource::Default);
    assert_eq!(deadline, t0() + TimeDelta::seconds(3900));
    // Absurd row timeouts are ignored.
    r.effective_timeout = Some(-5);
    assert_eq!(
        slot_deadline(&s, Some(&r), &policy()).unwrap().1,
        TimeoutSource::Default
    );
}

/// A row read without its effective timeout (a sweep's page of open rows) never makes a
/// deadline earlier: where the row's timeout would count — a slot declaring none, a corrupt
/// one, no slot at all — the longest accepted timeout stands in until it is read. A slot's
/// own declared timeout is unaffected.
#[test]
fn an_unread_row_timeout_never_shortens_a_deadline() {
    let mut r = row("running", t0(), Some("dispatched"));
    r.timeout_unread = true;
    let longest = t0() + TimeDelta::seconds(MAX_TIMEOUT_SECS + 300);
    for timeout in [SlotTimeout::Missing, SlotTimeout::parse(Some("soon"))] {
        let s = slot(t0(), timeout);
        assert_eq!(slot_deadline(&s, Some(&r), &policy()).unwrap().0, longest);
        // Two days on, past any default: still alive.
        let v = decide(
            Some(&s),
            Some(&r),
            &Liveness::NONE,
            t0() + mins(2880),
            &policy(),
        );
        assert!(matches!(v, Verdict::Healthy { .. }), "{v:?}");
    }
    assert_eq!(row_deadline(&r, &policy()), Some(longest));
    let v = decide(
        None,
        Some(&r),
        &Liveness::NONE,
        t0() + mins(2880),
        &policy(),
    );
    assert!(!v.is_actionable(), "{v:?}");
    let declared = slot(t0(), SlotTimeout::Declared(900));
    assert_eq!(
        slot_deadline(&declared, Some(&r), &policy()).unwrap(),
        (t0() + mins(20), TimeoutSource::Slot)
    );
}

/// Safety issue item 5: a 2-hour run whose slot says `"7200s"` was reclaimed at 65 minutes
/// (the corrupt value fell back to the row's 3600 s). Corrupt metadata now takes the longest
/// candidate, never a shorter one.
#[test]
fn a_corrupt_slot_timeout_never_shortens_the_deadline() {
    for raw in ["7200s", "7200000", "-1", "0", "soon", "nan", "1e300"] {
        let s = slot(t0(), SlotTimeout::parse(Some(raw)));
        assert!(matches!(s.timeout, SlotTimeout::Corrupt(_)), "{raw}");
        let mut r = row("running", t0(), Some("dispatched"));
        for row_timeout in [None, Some(60), Some(3600), Some(9000)] {
            r.effective_timeout = row_timeout;
            let (deadline, source) = slot_deadline(&s, Some(&r), &policy()).unwrap();
            assert_eq!(source, TimeoutSource::Longest);
            let longest = row_timeout
                .unwrap_or(0)
                .max(3600)
                .max(PLATFORM_MAX_TIMEOUT_SECS);
            assert_eq!(deadline, t0() + TimeDelta::seconds(longest + 300), "{raw}");
            // Alive at 65 minutes and at two hours, whatever the row says.
            for at in [mins(65), mins(120)] {
                let v = decide(Some(&s), Some(&r), &Liveness::NONE, t0() + at, &policy());
                assert!(!v.removes_slot() && v.row_target().is_none(), "{raw} {v:?}");
            }
        }
        // Rowless, too.
        let (deadline, _) = slot_deadline(&s, None, &policy()).unwrap();
        assert_eq!(deadline, t0() + TimeDelta::seconds(7200 + 300));
    }
}

#[test]
fn slot_timeout_parsing() {
    assert_eq!(SlotTimeout::parse(None), SlotTimeout::Missing);
    assert_eq!(
        SlotTimeout::parse(Some("3900")),
        SlotTimeout::Declared(3900)
    );
    assert_eq!(
        SlotTimeout::parse(Some("3900.0")),
        SlotTimeout::Declared(3900)
    );
    for bad in ["", "0", "-1", "NaN", "inf", "1e12", "twenty"] {
        assert_eq!(
            SlotTimeout::parse(Some(bad)),
            SlotTimeout::Corrupt(bad.into()),
            "{bad}"
        );
    }
}

/// One row of the branch table: (name, slot?, row?, minutes after t0, expected verdict name).
type Case = (
    &'static str,
    Option<SlotObservation>,
    Option<RowObservation>,
    i64,
    &'static str,
);

#[test]
fn every_branch() {
    let live = || Some(slot(t0(), SlotTimeout::Declared(3600)));
    let s = |status: &str, session: Option<&str>| Some(row(status, t0(), session));
    let d = Some("dispatched");
    let cases: Vec<Case> = vec![
        // Rule 1: stale slot.
        (
            "stale, running",
            live(),
            s("running", d),
            70,
            "reclaim_stale_slot",
        ),
        ("stale, no row", live(), None, 70, "reclaim_stale_slot"),
        (
            "stale, terminal row",
            live(),
            s("success", d),
            70,
            "reclaim_stale_slot",
        ),
        (
            "stale, unknown status",
            live(),
            s("paused", d),
            70,
            "reclaim_stale_slot",
        ),
        // Rule 2: leaked.
        (
            "live, terminal row",
            live(),
            s("failed", d),
            5,
            "release_leaked_slot",
        ),
        (
            "live, completed row",
            live(),
            s("completed", d),
            5,
            "release_leaked_slot",
        ),
        (
            "live, row missing past grace",
            live(),
            None,
            1,
            "release_leaked_slot",
        ),
        ("live, row missing within grace", live(), None, 0, "healthy"),
        // Rule 3: orphan.
        (
            "orphan past deadline",
            None,
            s("running", d),
            70,
            "fail_orphan",
        ),
        (
            "orphan before deadline",
            None,
            s("running", d),
            30,
            "healthy",
        ),
        (
            "queued without slot",
            None,
            s("queued", None),
            500,
            "report",
        ),
        (
            "pending_retry without slot",
            None,
            s("pending_retry", None),
            500,
            "report",
        ),
        // Rule 4: never launched.
        (
            "no session, slotless",
            None,
            s("running", None),
            2,
            "fail_never_launched",
        ),
        (
            "empty session, live slot",
            live(),
            s("running", Some("  ")),
            2,
            "fail_never_launched",
        ),
        (
            "no session within 60 s",
            live(),
            s("running", None),
            0,
            "healthy",
        ),
        (
            "dispatched is a session",
            None,
            s("running", d),
            2,
            "healthy",
        ),
        // Rule 5: skipped.
        (
            "skipped old",
            None,
            s("skipped", None),
            11,
            "finalize_skipped",
        ),
        ("skipped young", None, s("skipped", None), 9, "healthy"),
        (
            "skipped old with live slot",
            live(),
            s("skipped", None),
            11,
            "finalize_skipped",
        ),
        // Rule 6 and reports.
        (
            "live slot, running row",
            live(),
            s("running", d),
            30,
            "healthy",
        ),
        (
            "live slot, queued row",
            live(),
            s("queued", None),
            30,
            "healthy",
        ),
        (
            "terminal row alone",
            None,
            s("cancelled", None),
            500,
            "healthy",
        ),
        (
            "unknown status alone",
            None,
            s("paused", None),
            500,
            "report",
        ),
        (
            "unknown status, live slot",
            live(),
            s("paused", None),
            5,
            "report",
        ),
        ("nothing", None, None, 0, "healthy"),
    ];
    for (name, slot, row, minutes, want) in cases {
        let now = t0() + mins(minutes) + TimeDelta::seconds(1);
        let v = decide(slot.as_ref(), row.as_ref(), &Liveness::NONE, now, &policy());
        assert_eq!(v.name(), want, "{name}: {v:?}");
    }
}

#[test]
fn stale_slot_fails_only_in_progress_rows() {
    let s = slot(t0(), SlotTimeout::Declared(600));
    let now = t0() + mins(20);
    for (status, fail) in [
        ("running", true),
        ("queued", true),
        ("pending_retry", true),
        ("skipped", false),
        ("success", false),
        ("cancelled", false),
        ("weird", false),
    ] {
        let r = row(status, t0(), Some("x"));
        match decide(Some(&s), Some(&r), &Liveness::NONE, now, &policy()) {
            Verdict::ReclaimStaleSlot { fail_row, .. } => assert_eq!(fail_row, fail, "{status}"),
            other => panic!("{status}: {other:?}"),
        }
    }
}

#[test]
fn skipped_policy_terminal_never_finalizes() {
    let p = Policy {
        skipped: SkippedPolicy::Terminal,
        ..Policy::default()
    };
    let r = row("skipped", t0(), None);
    assert_eq!(
        decide(None, Some(&r), &Liveness::NONE, t0() + mins(60), &p),
        Verdict::Healthy { recheck_at: None }
    );
    // A live slot whose row counts as terminal is leaked capacity.
    let s = slot(t0(), SlotTimeout::Declared(3600));
    assert_eq!(
        decide(Some(&s), Some(&r), &Liveness::NONE, t0() + mins(5), &p).name(),
        "release_leaked_slot"
    );
}

#[test]
fn unparseable_timestamps_are_reported_never_guessed() {
    let mut r = row("running", t0(), None);
    r.started_at = parse_timestamp("last tuesday");
    let now = t0() + mins(600);
    assert_eq!(
        decide(None, Some(&r), &Liveness::NONE, now, &policy()),
        Verdict::Report(Concern::UnparseableStartedAt("last tuesday".into()))
    );
    r.session = Some("dispatched".into());
    assert_eq!(
        decide(None, Some(&r), &Liveness::NONE, now, &policy()).name(),
        "report"
    );
    r.status = Status::Skipped;
    assert_eq!(
        decide(None, Some(&r), &Liveness::NONE, now, &policy()).name(),
        "report"
    );
    // A stale slot is still judged by its own deadline; the row is left alone only if it is
    // not in progress. Here it is running, so it is failed: the slot proves it is dead.
    r.status = Status::Running;
    let s = slot(t0(), SlotTimeout::Declared(60));
    assert!(matches!(
        decide(Some(&s), Some(&r), &Liveness::NONE, now, &policy()),
        Verdict::ReclaimStaleSlot { fail_row: true, .. }
    ));
}

#[test]
fn corrupt_scores_are_reported() {
    let mut s = slot(t0(), SlotTimeout::Missing);
    s.score = f64::INFINITY;
    assert_eq!(
        decide(Some(&s), None, &Liveness::NONE, t0(), &policy()),
        Verdict::Report(Concern::CorruptSlotScore(f64::INFINITY))
    );
    s.score = 1e15;
    assert_eq!(
        decide(Some(&s), None, &Liveness::NONE, t0(), &policy()).name(),
        "report"
    );
}

/// Safety issue item 5: a score in milliseconds was an instant in the year 55,000 (never
/// reclaimed) and a tiny score an instant reclaim. Both are corrupt now, with or without a
/// row, and neither side is judged.
#[test]
fn implausible_scores_are_corrupt_and_never_judged() {
    let now = t0();
    let millis = to_unix_seconds(now - mins(90)) * 1000.0;
    let r = row("running", now - mins(90), Some("dispatched"));
    for score in [
        millis,
        5.0,
        0.0,
        -1.0,
        EARLIEST_PLAUSIBLE_SCORE - 1.0,
        to_unix_seconds(now) + 86_401.0,
        f64::NAN,
        f64::NEG_INFINITY,
    ] {
        let mut s = slot(now, SlotTimeout::Declared(600));
        s.score = score;
        for r in [None, Some(&r)] {
            let v = decide(Some(&s), r, &Liveness::NONE, now, &policy());
            assert!(
                matches!(v, Verdict::Report(Concern::CorruptSlotScore(_))),
                "{score}: {v:?}"
            );
        }
    }
    // The edges themselves are plausible.
    assert!(plausible_score(EARLIEST_PLAUSIBLE_SCORE, now));
    assert!(plausible_score(to_unix_seconds(now) + 86_400.0, now));
}

/// Safety issue item 4: the session grace ran from `started_at` alone, so a run that waited
/// in a queue longer than the grace was failed the instant it took its slot.
#[test]
fn the_session_grace_runs_from_the_later_of_start_and_slot() {
    let started = t0();
    let r = row("running", started, None);
    // Queued for an hour, slot taken 10 s ago: still in its grace.
    let acquired = started + mins(60);
    let now = acquired + TimeDelta::seconds(10);
    let s = slot(acquired, SlotTimeout::Declared(3600));
    assert_eq!(
        decide(Some(&s), Some(&r), &Liveness::NONE, now, &policy()),
        Verdict::Healthy {
            recheck_at: Some(acquired + TimeDelta::seconds(60))
        }
    );
    // Past the grace from the slot: failed, the grace's start reported.
    let later = acquired + TimeDelta::seconds(61);
    assert_eq!(
        decide(Some(&s), Some(&r), &Liveness::NONE, later, &policy()),
        Verdict::FailNeverLaunched {
            since: acquired,
            release_slot: true
        }
    );
    // A slot older than the row changes nothing: the row's start counts.
    let s = slot(started - mins(5), SlotTimeout::Declared(3600));
    assert!(matches!(
        decide(
            Some(&s),
            Some(&r),
            &Liveness::NONE,
            started + TimeDelta::seconds(30),
            &policy()
        ),
        Verdict::Healthy { .. }
    ));
}

#[test]
fn timestamps_at_the_edge_of_time_never_panic() {
    let far = chrono::DateTime::<Utc>::MAX_UTC - TimeDelta::seconds(1);
    for status in ["running", "skipped"] {
        for session in [None, Some("dispatched")] {
            let r = row(status, far, session);
            let _ = decide(None, Some(&r), &Liveness::NONE, far, &policy());
        }
    }
}

#[test]
fn row_targets_and_errors() {
    let d = t0();
    assert_eq!(
        Verdict::FinalizeSkipped {
            since: d,
            as_failed: false
        }
        .row_error(None, &policy())
        .as_deref(),
        Some("Skipped — agent was busy")
    );
    assert_eq!(
        Verdict::FinalizeSkipped {
            since: d,
            as_failed: false
        }
        .row_target(),
        Some(Status::Cancelled)
    );
    assert_eq!(
        Verdict::ReclaimStaleSlot {
            deadline: d,
            fail_row: false
        }
        .row_target(),
        None
    );
    assert!(Verdict::FailNeverLaunched {
        since: d,
        release_slot: true
    }
    .removes_slot());
    assert!(!Verdict::FailOrphan { deadline: d }.removes_slot());
    assert!(!Verdict::Report(Concern::AwaitingSlot(Status::Queued)).is_actionable());
}

// ---- properties -------------------------------------------------------------------------

fn status_strategy() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Queued),
        Just(Status::Running),
        Just(Status::Success),
        Just(Status::Failed),
        Just(Status::Cancelled),
        Just(Status::Skipped),
        Just(Status::PendingRetry),
        Just(Status::Completed),
        "[a-z]{1,8}".prop_map(|s| Status::parse(&s)),
    ]
}

fn slot_strategy() -> impl Strategy<Value = Option<SlotObservation>> {
    let timeout = prop_oneof![
        (1i64..10_000).prop_map(SlotTimeout::Declared),
        Just(SlotTimeout::Missing),
        Just(SlotTimeout::Corrupt("x".into())),
    ];
    proptest::option::of(
        (-20_000i64..20_000, timeout)
            .prop_map(|(offset, timeout)| slot(t0() + TimeDelta::seconds(offset), timeout)),
    )
}

fn row_strategy() -> impl Strategy<Value = Option<RowObservation>> {
    let session = prop_oneof![
        Just(None),
        Just(Some(String::new())),
        Just(Some("dispatched".to_owned())),
        Just(Some("sess-1".to_owned())),
    ];
    proptest::option::of(
        (
            status_strategy(),
            proptest::option::of(-20_000i64..20_000),
            session,
            proptest::option::of(-100i64..10_000),
        )
            .prop_map(|(status, started, session, timeout)| RowObservation {
                execution_id: ExecutionId::parse("exec1").unwrap(),
                agent: AgentName::parse("agent:one").unwrap(),
                status,
                started_at: match started {
                    Some(offset) => Ok(t0() + TimeDelta::seconds(offset)),
                    None => parse_timestamp("garbage"),
                },
                session,
                session_tracked: true,
                started_at_raw: String::new(),
                effective_timeout: timeout,
                timeout_unread: false,
                lease: None,
                lease_raw: None,
                redelivery_count: 0,
                completed: false,
            }),
    )
}

/// The slot's own deadline, computed independently of the code under test.
fn own_deadline(slot: &SlotObservation, row: Option<&RowObservation>, p: &Policy) -> Timestamp {
    let from_row = row
        .and_then(|r| r.effective_timeout)
        .filter(|t| (1..=MAX_TIMEOUT_SECS).contains(t));
    let ttl = match slot.timeout {
        SlotTimeout::Declared(t) => t,
        // Corrupt: never shorter than any candidate.
        SlotTimeout::Corrupt(_) => [from_row.unwrap_or(0), p.default_timeout_secs, 7200]
            .into_iter()
            .max()
            .unwrap(),
        SlotTimeout::Missing => from_row.unwrap_or(p.default_timeout_secs),
    };
    from_unix_seconds(slot.score).unwrap() + TimeDelta::seconds(ttl + p.ttl_buffer_secs)
}

proptest! {
    #[test]
    fn a_slot_before_its_own_deadline_is_never_reclaimed(
        slot in slot_strategy(), row in row_strategy(), now_offset in -20_000i64..40_000
    ) {
        let now = t0() + TimeDelta::seconds(now_offset);
        let p = policy();
        let v = decide(slot.as_ref(), row.as_ref(), &Liveness::NONE, now, &p);
        if let (Some(s), Verdict::ReclaimStaleSlot { deadline, .. }) = (slot.as_ref(), &v) {
            prop_assert_eq!(*deadline, own_deadline(s, row.as_ref(), &p));
            prop_assert!(now > *deadline);
        }
    }

    #[test]
    fn terminal_and_unknown_rows_never_change(
        slot in slot_strategy(), row in row_strategy(), now_offset in -20_000i64..40_000
    ) {
        let now = t0() + TimeDelta::seconds(now_offset);
        let v = decide(slot.as_ref(), row.as_ref(), &Liveness::NONE, now, &policy());
        if let Some(r) = row.as_ref() {
            if r.status.is_terminal() || !r.status.is_known() {
                prop_assert_eq!(v.row_target(), None, "{:?}", v);
            }
        }
    }

    #[test]
    fn a_live_slot_protects_its_row_except_a_never_launched_run(
        slot in slot_strategy(), row in row_strategy(), now_offset in -20_000i64..40_000
    ) {
        let now = t0() + TimeDelta::seconds(now_offset);
        let p = policy();
        let v = decide(slot.as_ref(), row.as_ref(), &Liveness::NONE, now, &p);
        if let (Some(s), Some(r)) = (slot.as_ref(), row.as_ref()) {
            let live = now <= own_deadline(s, Some(r), &p);
            if live && v.row_target() == Some(Status::Failed) {
                let launched = matches!(v, Verdict::FailNeverLaunched { release_slot: true, .. });
                prop_assert!(launched, "{:?}", v);
                prop_assert!(!r.has_session());
            }
        }
    }

    #[test]
    fn only_running_rows_are_failed_and_only_skipped_rows_cancelled(
        slot in slot_strategy(), row in row_strategy(), now_offset in -20_000i64..40_000
    ) {
        let now = t0() + TimeDelta::seconds(now_offset);
        let v = decide(slot.as_ref(), row.as_ref(), &Liveness::NONE, now, &policy());
        match (v.row_target(), row.as_ref()) {
            (Some(Status::Failed), Some(r)) => prop_assert!(matches!(
                r.status, Status::Running | Status::Queued | Status::PendingRetry)),
            (Some(Status::Cancelled), Some(r)) => prop_assert_eq!(&r.status, &Status::Skipped),
            (Some(other), r) => prop_assert!(false, "{:?} for {:?}", other, r),
            (None, _) => {}
        }
    }

    #[test]
    fn recheck_is_never_in_the_past(
        slot in slot_strategy(), row in row_strategy(), now_offset in -20_000i64..40_000
    ) {
        let now = t0() + TimeDelta::seconds(now_offset);
        if let Verdict::Healthy { recheck_at: Some(at) } = decide(slot.as_ref(), row.as_ref(), &Liveness::NONE, now, &policy()) {
            prop_assert!(at >= now);
        }
    }
}

fn in_flight() -> Liveness {
    Liveness {
        in_flight: true,
        agent: None,
    }
}

#[test]
fn an_in_flight_marker_keeps_a_run_alive_under_every_rule() {
    let p = policy();
    let late = t0() + TimeDelta::hours(3);
    let stale = slot(t0(), SlotTimeout::Declared(600));
    let running = row("running", t0(), Some("dispatched"));
    let no_session = row("running", t0(), None);
    let alive = Verdict::Alive {
        by: AliveBy::InFlightMarker,
        recheck_at: None,
    };
    // Without the marker: a stale slot, an orphan, a never-launched run, a rowless slot.
    for (s, r) in [
        (Some(&stale), Some(&running)),
        (None, Some(&running)),
        (None, Some(&no_session)),
        (Some(&stale), None),
    ] {
        assert!(decide(s, r, &Liveness::NONE, late, &p).is_actionable());
        assert_eq!(decide(s, r, &in_flight(), late, &p), alive);
    }
    // A finished run's slot is released whatever the marker says: terminal states win.
    let done = row("success", t0(), Some("sess"));
    let v = decide(Some(&stale), Some(&done), &in_flight(), late, &p);
    assert!(v.removes_slot() && v.row_target().is_none(), "{v:?}");
}

fn leased(status: &str, started: Timestamp, lease: &str) -> RowObservation {
    RowObservation {
        lease: Some(parse_timestamp(lease)),
        lease_raw: None,
        ..row(status, started, Some("dispatched"))
    }
}

#[test]
fn a_leased_run_is_judged_by_its_lease_not_by_slot_rules() {
    // Queued two hours ago, claimed a minute ago, lease valid for another hour, no slot:
    // the slot rules alone call it an orphan.
    let p = policy();
    let now = t0() + TimeDelta::hours(2);
    let plain = row("running", t0(), Some("dispatched"));
    assert!(matches!(
        decide(None, Some(&plain), &Liveness::NONE, now, &p),
        Verdict::FailOrphan { .. }
    ));
    let r = leased("running", t0(), "2026-05-01T18:30:00Z");
    let until = parse_timestamp("2026-05-01T18:30:00Z").unwrap();
    let alive = Verdict::Alive {
        by: AliveBy::Lease { until },
        recheck_at: Some(until),
    };
    assert_eq!(decide(None, Some(&r), &Liveness::NONE, now, &p), alive);
    // Not even a stale slot or a missing session fails it.
    let stale = slot(t0(), SlotTimeout::Declared(600));
    assert_eq!(
        decide(Some(&stale), Some(&r), &Liveness::NONE, now, &p),
        alive
    );
    let no_session = RowObservation {
        session: None,
        session_tracked: true,
        ..r.clone()
    };
    assert_eq!(
        decide(None, Some(&no_session), &Liveness::NONE, now, &p),
        alive
    );
    // Past its lease it is the platform's lease reaper's: reported, never failed.
    let after = until + TimeDelta::seconds(1);
    assert_eq!(
        decide(None, Some(&r), &Liveness::NONE, after, &p),
        Verdict::Report(Concern::LeaseExpired(until))
    );
    // A lease that cannot be read is still a lease.
    let garbage = leased("running", t0(), "tomorrow-ish");
    assert_eq!(
        decide(None, Some(&garbage), &Liveness::NONE, after, &p),
        Verdict::Report(Concern::UnparseableLease("tomorrow-ish".into()))
    );
    // A lease left on a finished run changes nothing: its slot is still released.
    let done = leased("success", t0(), "2026-05-01T18:30:00Z");
    let v = decide(Some(&stale), Some(&done), &Liveness::NONE, now, &p);
    assert!(v.removes_slot() && v.row_target().is_none(), "{v:?}");
}

#[test]
fn a_backlog_sentinel_is_never_released_and_is_reported_once_old() {
    let p = policy();
    let sentinel = SlotObservation {
        execution_id: ExecutionId::parse("drain-3f2a").unwrap(),
        sentinel: true,
        ..slot(t0(), SlotTimeout::Missing)
    };
    // Past the missing-row grace a plain member is leaked capacity; a sentinel is not.
    let now = t0() + TimeDelta::seconds(60);
    let plain = SlotObservation {
        sentinel: false,
        ..sentinel.clone()
    };
    assert!(matches!(
        decide(Some(&plain), None, &Liveness::NONE, now, &p),
        Verdict::ReleaseLeakedSlot {
            reason: LeakReason::RowMissing
        }
    ));
    let end = t0() + TimeDelta::seconds(p.sentinel_report_after_secs);
    assert_eq!(
        decide(Some(&sentinel), None, &Liveness::NONE, now, &p),
        Verdict::Alive {
            by: AliveBy::Sentinel,
            recheck_at: Some(end)
        }
    );
    // Older than the bound (even past any slot deadline) it is reported, not touched.
    for later in [end + TimeDelta::seconds(1), t0() + TimeDelta::days(1)] {
        assert_eq!(
            decide(Some(&sentinel), None, &Liveness::NONE, later, &p),
            Verdict::Report(Concern::StaleSentinel(t0()))
        );
    }
}

#[test]
fn dispatched_async_is_a_session_like_dispatched() {
    let p = policy();
    let r = row("running", t0(), Some("dispatched_async"));
    let s = slot(t0(), SlotTimeout::Declared(3600));
    let v = decide(Some(&s), Some(&r), &Liveness::NONE, t0() + mins(30), &p);
    assert!(matches!(v, Verdict::Healthy { .. }), "{v:?}");
}

#[test]
fn the_platforms_skipped_rule_finalizes_only_open_skipped_rows_as_failed() {
    let p = Policy {
        skipped: SkippedPolicy::Platform,
        ..policy()
    };
    let now = t0() + mins(11);
    let open = row("skipped", t0(), None);
    let v = decide(None, Some(&open), &Liveness::NONE, now, &p);
    assert_eq!(
        v,
        Verdict::FinalizeSkipped {
            since: t0(),
            as_failed: true
        }
    );
    assert_eq!(v.row_target(), Some(Status::Failed));
    assert_eq!(
        v.row_error(None, &p).as_deref(),
        Some("Finalized by cleanup: skipped execution")
    );
    // `completed_at` set: terminal by the platform's rule, and its slot is leaked.
    let done = RowObservation {
        completed: true,
        ..open.clone()
    };
    assert_eq!(
        decide(None, Some(&done), &Liveness::NONE, now, &p),
        Verdict::Healthy { recheck_at: None }
    );
    let s = slot(t0(), SlotTimeout::Declared(3600));
    assert_eq!(
        decide(Some(&s), Some(&done), &Liveness::NONE, now, &p),
        Verdict::ReleaseLeakedSlot {
            reason: LeakReason::RowTerminal(Status::Skipped)
        }
    );
    // The default policy cancels it, completed_at or not.
    let v = decide(None, Some(&done), &Liveness::NONE, now, &policy());
    assert_eq!(v.row_target(), Some(Status::Cancelled));
}

#[test]
fn error_texts_in_the_platforms_words() {
    let p = Policy {
        error_style: ErrorStyle::Platform,
        session_grace_secs: 90,
        ..policy()
    };
    let s = slot(t0(), SlotTimeout::Declared(600));
    let r = row("running", t0(), Some("dispatched"));
    let v = decide(Some(&s), Some(&r), &Liveness::NONE, t0() + mins(30), &p);
    assert_eq!(
        v.row_error(Some(&s), &p).as_deref(),
        Some("lease_expired: Stale execution — slot TTL expired for agent 'agent:one', cleaned by cleanup service")
    );
    let orphan = decide(None, Some(&r), &Liveness::NONE, t0() + mins(90), &p);
    assert!(orphan
        .row_error(None, &p)
        .unwrap()
        .starts_with("lease_expired: Stale execution"));
    // The never-launched text names the configured grace, in either style.
    let mute = row("running", t0(), None);
    let v = decide(None, Some(&mute), &Liveness::NONE, t0() + mins(2), &p);
    assert_eq!(
        v.row_error(None, &p).as_deref(),
        Some("Silent launch failure: no Claude session created within 90 seconds")
    );
}

#[test]
fn without_a_session_column_no_run_is_a_silent_launch_failure() {
    let untracked = RowObservation {
        session_tracked: false,
        ..row("running", t0(), None)
    };
    let v = decide(
        None,
        Some(&untracked),
        &Liveness::NONE,
        t0() + mins(5),
        &policy(),
    );
    assert!(matches!(v, Verdict::Healthy { .. }), "{v:?}");
    // Its deadline still applies.
    let v = decide(
        None,
        Some(&untracked),
        &Liveness::NONE,
        t0() + mins(70),
        &policy(),
    );
    assert!(matches!(v, Verdict::FailOrphan { .. }), "{v:?}");
}

#[test]
fn the_agents_answer_enters_the_verdict() {
    let stale = slot(t0(), SlotTimeout::Declared(600));
    let r = row("running", t0(), Some("dispatched"));
    let late = t0() + mins(30);
    let with = |says, unreachable| {
        let p = Policy {
            agent_unreachable: unreachable,
            ..policy()
        };
        let live = Liveness {
            in_flight: false,
            agent: Some(says),
        };
        decide(Some(&stale), Some(&r), &live, late, &p)
    };
    let skip = UnreachablePolicy::Skip;
    let hold = UnreachablePolicy::Hold;
    assert_eq!(
        with(AgentSays::Running, skip),
        Verdict::Alive {
            by: AliveBy::Agent {
                says: AgentSays::Running
            },
            recheck_at: None
        }
    );
    assert!(matches!(
        with(AgentSays::Pending, skip),
        Verdict::Alive { .. }
    ));
    assert_eq!(
        with(AgentSays::RecentlyCompleted, skip),
        Verdict::Report(Concern::AgentHasResult)
    );
    let stores_alone = decide(Some(&stale), Some(&r), &Liveness::NONE, late, &policy());
    assert_eq!(with(AgentSays::Absent, hold), stores_alone);
    assert_eq!(with(AgentSays::Unreachable, skip), stores_alone);
    assert_eq!(
        with(AgentSays::Unreachable, hold),
        Verdict::Report(Concern::AgentUnreachable)
    );
}

#[test]
fn a_queued_row_past_the_backlog_expiry_is_failed_in_the_platforms_words() {
    let p = policy();
    let r = row("queued", t0(), None);
    let day = TimeDelta::seconds(p.queued_expire_after_secs);
    assert_eq!(
        decide(None, Some(&r), &Liveness::NONE, t0() + day, &p),
        Verdict::Report(Concern::AwaitingSlot(Status::Queued))
    );
    let v = decide(None, Some(&r), &Liveness::NONE, t0() + day + mins(1), &p);
    assert_eq!(v, Verdict::FailBacklogExpired { since: t0() });
    assert_eq!(v.row_target(), Some(Status::Failed));
    assert_eq!(
        v.row_error(None, &p).as_deref(),
        Some("Backlog expired: queued longer than 24 hours")
    );
    assert_eq!(JobKind::for_verdict(&v), Some(JobKind::FailRun));
    // Holding a live slot it is being dispatched right now; leased, it is the lease's.
    let s = slot(t0() + day, SlotTimeout::Declared(600));
    assert!(matches!(
        decide(
            Some(&s),
            Some(&r),
            &Liveness::NONE,
            t0() + day + mins(1),
            &p
        ),
        Verdict::Healthy { .. }
    ));
    let leased = RowObservation {
        lease: Some(Ok(t0() + day + mins(30))),
        lease_raw: None,
        ..r.clone()
    };
    assert!(!decide(
        None,
        Some(&leased),
        &Liveness::NONE,
        t0() + day + mins(1),
        &p
    )
    .is_actionable());
    // `pending_retry` rows are waiting for their retry, not a backlog slot.
    let retry = row("pending_retry", t0(), None);
    assert!(!decide(None, Some(&retry), &Liveness::NONE, t0() + day * 2, &p).is_actionable());
}

#[test]
fn an_expired_lease_is_the_platforms_unless_the_policy_takes_it() {
    let until = parse_timestamp("2026-05-01T16:00:00Z").unwrap();
    let r = |count: i64| RowObservation {
        redelivery_count: count,
        ..leased("running", t0(), "2026-05-01T16:00:00Z")
    };
    let after = until + TimeDelta::seconds(1);
    let with = |lease, row: &RowObservation, now| {
        let p = Policy { lease, ..policy() };
        decide(None, Some(row), &Liveness::NONE, now, &p)
    };
    assert_eq!(
        with(LeasePolicy::Platform, &r(0), after),
        Verdict::Report(Concern::LeaseExpired(until))
    );
    assert_eq!(
        with(LeasePolicy::Requeue, &r(2), after),
        Verdict::RequeueLease { until }
    );
    let poison = with(LeasePolicy::Requeue, &r(3), after);
    assert_eq!(
        poison,
        Verdict::FailLease {
            until,
            poison: true
        }
    );
    assert_eq!(
        poison.row_error(None, &policy()).as_deref(),
        Some(
            "poison_lease: pull lease expired and re-delivery cap (3) reached — failed by janitor"
        )
    );
    assert_eq!(
        with(LeasePolicy::Fail, &r(0), after),
        Verdict::FailLease {
            until,
            poison: false
        }
    );
    assert_eq!(
        JobKind::for_verdict(&Verdict::RequeueLease { until }),
        Some(JobKind::RequeueRun)
    );
    // Within the lease every policy leaves it alone; a leased row that is not running is
    // only reported.
    for lease in [LeasePolicy::Requeue, LeasePolicy::Fail] {
        assert!(!with(lease, &r(0), until).is_actionable());
        let queued = RowObservation {
            status: Status::Queued,
            ..r(0)
        };
        assert!(!with(lease, &queued, after).is_actionable());
    }
}
