//! The SQL execution store: one suite, run against a fresh SQLite file and a fresh
#![allow(clippy::unwrap_used)]
//! PostgreSQL database per test.

use std::sync::Arc;

use janitor_core::{parse_timestamp, ExecutionId, RowObservation, Status};
use janitor_store::{
    sql::audit, ActivityEntry, AuditFilter, CasOutcome, Database, Evidence, ExecutionStore,
    RowEntry, Transition,
};
use janitor_testkit::{Kind, TestDb};

janitor_testkit::both_backends!(
    migrate_is_idempotent,
    open_rows_paginate_over_non_terminal_rows_only,
    every_closable_started_activity_is_paged_once,
    mixed_timestamp_formats_are_all_read,
    effective_timeout_prefers_schedule_then_agent,
    fail_run_closes_the_activity_and_audits_once,
    a_late_success_is_never_overwritten,
    conflicts_and_missing_rows_write_nothing,
    skipped_runs_are_cancelled_only_from_skipped,
    concurrent_fails_apply_exactly_once,
    odd_ids_are_reported_not_changed,
    audit_filters,
    leases_are_read_and_a_run_claimed_since_the_read_is_never_failed,
    the_platforms_skipped_finalize_writes_what_the_platform_writes,
    every_schema_generation_is_read_and_written,
);

struct Fixture {
    _db: TestDb,
    store: ExecutionStore,
}

impl Fixture {
    async fn new(kind: Kind) -> Self {
        let db = TestDb::new(kind).await.unwrap();
        let database = Database::connect(&db.url, true).await.unwrap();
        database.migrate(true).await.unwrap();
        let store = ExecutionStore::open(database).await.unwrap();
        Self { _db: db, store }
    }

    fn db(&self) -> &Database {
        self.store.database()
    }

    async fn exec(&self, sql: &str) {
        match self.db() {
            Database::Sqlite(p) => {
                sqlx::raw_sql(sql).execute(p).await.unwrap();
            }
            Database::Postgres(p) => {
                sqlx::raw_sql(sql).execute(p).await.unwrap();
            }
        }
    }

    async fn scalar(&self, sql: &str) -> Option<String> {
        match self.db() {
            Database::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
            Database::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        match self.db() {
            Database::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
            Database::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        }
    }

    async fn insert_run(
        &self,
        id: &str,
        agent: &str,
        status: &str,
        started: &str,
        session: Option<&str>,
    ) {
        let session = session.map_or("NULL".to_owned(), |s| format!("'{s}'"));
        self.exec(&format!(
            "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, claude_session_id) \
             VALUES ('{id}', 'sched-1', '{agent}', '{status}', '{started}', 'do it', 'schedule', {session})"
        ))
        .await;
    }

    async fn insert_activity(&self, id: &str, execution: &str, state: &str, started: &str) {
        self.exec(&format!(
            "INSERT INTO agent_activities (id, agent_name, activity_type, activity_state, started_at, related_execution_id, created_at) \
             VALUES ('{id}', 'a', 'schedule_start', '{state}', '{started}', '{execution}', '{started}')"
        ))
        .await;
    }

    async fn status(&self, id: &str) -> String {
        self.scalar(&format!(
            "SELECT status FROM schedule_executions WHERE id = '{id}'"
        ))
        .await
        .unwrap()
    }
}

fn evidence() -> Evidence {
    Evidence {
        job_id: Some("fail_run:a:e1:d1".into()),
        job_kind: Some("fail_run".into()),
        worker: "test-worker".into(),
        slot_score: Some(1_777_649_400.25),
        deadline: Some(parse_timestamp("2026-05-01T16:35:00Z").unwrap()),
        detail: Some("{\"why\":\"test\"}".into()),
    }
}

fn started() -> janitor_core::Timestamp {
    parse_timestamp("2026-05-01T15:30:00Z").unwrap()
}

fn now() -> janitor_core::Timestamp {
    parse_timestamp("2026-05-01T17:00:00Z").unwrap()
}

fn id(s: &str) -> ExecutionId {
    ExecutionId::parse(s).unwrap()
}

fn rows(entries: &[RowEntry]) -> Vec<&janitor_core::RowObservation> {
    entries
        .iter()
        .map(|e| match e {
            RowEntry::Row(r) => r,
            RowEntry::Corrupt(c) => panic!("corrupt: {c:?}"),
        })
        .collect()
}

async fn migrate_is_idempotent(kind: Kind) {
    let f = Fixture::new(kind).await;
    f.insert_run(
        "e1",
        "a",
        "running",
        "2026-05-01T15:30:00",
        Some("dispatched"),
    )
    .await;
    let again = f.db().migrate(true).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.latest, 7);
    assert_eq!(f.count("SELECT COUNT(*) FROM schedule_executions").await, 1);
    // janitor's partial indexes on the activities: one on SQLite (each is a page written
    // per closed activity there), the two earlier ones on PostgreSQL.
    let indexes = match kind {
        Kind::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'agent_activities'"
        }
        Kind::Postgres => "SELECT indexname FROM pg_indexes WHERE tablename = 'agent_activities'",
    };
    let mut janitors: Vec<String> = match f.db() {
        Database::Sqlite(p) => sqlx::query_scalar(indexes).fetch_all(p).await.unwrap(),
        Database::Postgres(p) => sqlx::query_scalar(indexes).fetch_all(p).await.unwrap(),
    };
    janitors.retain(|name| name.starts_with("janitor_"));
    janitors.sort();
    let want: &[&str] = match kind {
        Kind::Sqlite => &["janitor_activities_started"],
        Kind::Postgres => &[
            "janitor_activities_open",
            "janitor_activities_started_by_id",
        ],
    };
    assert_eq!(janitors, want);
}

async fn open_rows_paginate_over_non_terminal_rows_only(kind: Kind) {
    let f = Fixture::new(kind).await;
    let statuses = [
        "running",
        "success",
        "queued",
        "failed",
        "skipped",
        "cancelled",
        "pending_retry",
        "completed",
        "mystery",
    ];
    let mut want = Vec::new();
    for i in 0..45 {
        let status = statuses[i % statuses.len()];
        let run = format!("r{i:03}");
        // Several agents, interleaved: pages follow (agent, id), across agents.
        let agent = ["b", "a", "c"][i % 3];
        f.insert_run(&run, agent, status, "2026-05-01T15:30:00Z", None)
            .await;
        if !Status::parse(status).is_terminal() {
            want.push((agent, run));
        }
    }
    want.sort();
    let want: Vec<String> = want.into_iter().map(|(_, run)| run).collect();
    let mut got = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = f.store.open_rows(cursor.as_ref(), 7).await.unwrap();
        pages += 1;
        assert!(page.rows.len() <= 7);
        got.extend(page.rows.iter().map(|r| r.id().to_owned()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(got, want);
    assert!(pages >= 4, "{pages}");
}

/// Rule 8's read of every `started` activity pages those without a run by id, then the
/// others by run and id: each closable one exactly once, whatever the page size, and none
/// of an open run, none already closed.
async fn every_closable_started_activity_is_paged_once(kind: Kind) {
    let f = Fixture::new(kind).await;
    let at = "2026-05-01T15:30:00Z";
    for (run, status) in [
        ("r-done", "success"),
        ("r-open", "running"),
        ("r-failed", "failed"),
    ] {
        f.insert_run(run, "a", status, at, None).await;
    }
    let mut want = Vec::new();
    for i in 0..23 {
        let id = format!("act{:02}", (i * 7) % 23);
        // No run, a blank run, a finished run, a run that is gone, an open run.
        let (run, closable) = match i % 5 {
            0 => (None, true),
            1 => (Some(""), true),
            2 => (Some(if i % 2 == 0 { "r-done" } else { "r-failed" }), true),
            3 => (Some("r-gone"), true),
            _ => (Some("r-open"), false),
        };
        let run = run.map_or("NULL".to_owned(), |r| format!("'{r}'"));
        let state = if i == 13 { "completed" } else { "started" };
        f.exec(&format!(
            "INSERT INTO agent_activities (id, agent_name, activity_type, activity_state, started_at, related_execution_id, created_at) \
             VALUES ('{id}', 'a', 'schedule_start', '{state}', '{at}', {run}, '{at}')"
        ))
        .await;
        if closable && state == "started" {
            want.push(id);
        }
    }
    want.sort();
    for size in [1, 3, 4, 100] {
        let mut got = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let (entries, next) = f
                .store
                .open_activities(cursor.as_ref(), size)
                .await
                .unwrap();
            pages += 1;
            assert!(entries.len() <= size as usize);
            got.extend(entries.into_iter().map(|e| match e {
                ActivityEntry::Activity(a) => a.id.to_string(),
                ActivityEntry::Corrupt(c) => panic!("corrupt: {c:?}"),
            }));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(pages < 100, "no end");
        }
        got.sort();
        assert_eq!(got, want, "pages of {size}");
    }
}

async fn mixed_timestamp_formats_are_all_read(kind: Kind) {
    let f = Fixture::new(kind).await;
    let formats = [
        ("t1", "2026-05-01T15:30:00.123456Z"),
        ("t2", "2026-05-01T15:30:00.123456"),
        ("t3", "2026-05-01 15:30:00"),
        ("t4", "2026-05-01T15:30:00+00:00"),
        ("t5", "not a time"),
    ];
    for (run, started) in formats {
        f.insert_run(run, "a", "running", started, Some("dispatched"))
            .await;
    }
    let page = f.store.open_rows(None, 100).await.unwrap();
    let got = rows(&page.rows);
    assert_eq!(got.len(), 5);
    let base = parse_timestamp("2026-05-01T15:30:00Z").unwrap();
    for row in &got[..4] {
        let started = row.started_at.clone().unwrap();
        assert!((started - base).num_milliseconds().abs() < 200, "{row:?}");
    }
    assert_eq!(got[4].started_at.clone().unwrap_err().value, "not a time");
}

async fn effective_timeout_prefers_schedule_then_agent(kind: Kind) {
    let f = Fixture::new(kind).await;
    f.exec("INSERT INTO agent_ownership (agent_name, execution_timeout_seconds) VALUES ('agent-a', 900)").await;
    f.exec("INSERT INTO agent_schedules (id, agent_name, timeout_seconds) VALUES ('sched-1', 'agent-a', 3900)").await;
    f.exec("INSERT INTO agent_schedules (id, agent_name, timeout_seconds) VALUES ('sched-2', 'agent-a', NULL)").await;
    f.insert_run("s1", "agent-a", "running", "2026-05-01T15:30:00Z", None)
        .await;
    f.insert_run("s2", "agent-a", "running", "2026-05-01T15:30:00Z", None)
        .await;
    f.exec("UPDATE schedule_executions SET schedule_id = 'sched-2' WHERE id = 's2'")
        .await;
    f.insert_run("s3", "agent-b", "running", "2026-05-01T15:30:00Z", None)
        .await;
    f.exec("UPDATE schedule_executions SET schedule_id = '__manual__' WHERE id = 's3'")
        .await;
    let entries = f
        .store
        .rows_by_ids(&[id("s1"), id("s2"), id("s3"), id("absent")])
        .await
        .unwrap();
    let mut got: Vec<_> = rows(&entries)
        .into_iter()
        .map(|r| (r.execution_id.to_string(), r.effective_timeout))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("s1".into(), Some(3900)),
            ("s2".into(), Some(900)),
            ("s3".into(), None)
        ]
    );

    // A sweep's page of open rows comes without them, saying so; they are read for the
    // rows that need one, and a row gone meanwhile keeps its timeout unread.
    let page = f.store.open_rows(None, 10).await.unwrap();
    let mut open: Vec<RowObservation> = rows(&page.rows).into_iter().cloned().collect();
    assert!(
        open.iter()
            .all(|r| r.timeout_unread && r.effective_timeout.is_none()),
        "{open:?}"
    );
    f.exec("DELETE FROM schedule_executions WHERE id = 's3'")
        .await;
    let mut needed: Vec<&mut RowObservation> = open.iter_mut().collect();
    f.store.read_timeouts(&mut needed).await.unwrap();
    let mut got: Vec<_> = open
        .iter()
        .map(|r| {
            (
                r.execution_id.to_string(),
                r.timeout_unread,
                r.effective_timeout,
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("s1".into(), false, Some(3900)),
            ("s2".into(), false, Some(900)),
            ("s3".into(), true, None)
        ]
    );
}

async fn fail_run_closes_the_activity_and_audits_once(kind: Kind) {
    let f = Fixture::new(kind).await;
    f.insert_run(
        "e1",
        "agent:one",
        "running",
        "2026-05-01T15:30:00.000000",
        Some("dispatched"),
    )
    .await;
    f.insert_activity("act1", "e1", "started", "2026-05-01T15:30:00Z")
        .await;
    f.insert_activity("act0", "e1", "completed", "2026-05-01T15:00:00Z")
        .await;
    let ev = evidence();
    let run = id("e1");
    let change = Transition {
        error: "Stale execution — slot expired",
        started_at_raw: "2026-05-01T15:30:00.000000",
        ..fail(&run, &ev)
    };
    let outcome = f.store.fail_run(&change).await.unwrap();
    assert_eq!(
        outcome,
        CasOutcome::Applied {
            agent: "agent:one".into(),
            activities_closed: 1
        }
    );
    assert_eq!(f.status("e1").await, "failed");
    assert_eq!(
        f.scalar("SELECT completed_at FROM schedule_executions WHERE id = 'e1'")
            .await
            .as_deref(),
        Some("2026-05-01T17:00:00.000000Z")
    );
    assert_eq!(
        f.scalar("SELECT error FROM schedule_executions WHERE id = 'e1'")
            .await
            .as_deref(),
        Some("Stale execution — slot expired")
    );
    assert_eq!(
        f.count("SELECT CAST(duration_ms AS BIGINT) FROM schedule_executions WHERE id = 'e1'")
            .await,
        5_400_000
    );
    assert_eq!(
        f.scalar("SELECT activity_state FROM agent_activities WHERE id = 'act1'")
            .await
            .as_deref(),
        Some("failed")
    );
    assert_eq!(
        f.count("SELECT CAST(duration_ms AS BIGINT) FROM agent_activities WHERE id = 'act1'")
            .await,
        5_400_000
    );
    assert_eq!(
        f.scalar("SELECT activity_state FROM agent_activities WHERE id = 'act0'")
            .await
            .as_deref(),
        Some("completed")
    );

    // A retry of the same change applies nothing.
    let again = f.store.fail_run(&change).await.unwrap();
    assert_eq!(again, CasOutcome::AlreadyTerminal(Status::Failed));
    let trail = audit::query(
        f.db(),
        &AuditFilter {
            execution_id: Some("e1".into()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(trail.len(), 1);
    let row = &trail[0];
    assert_eq!(row.action, "run_failed");
    assert_eq!(row.status_before.as_deref(), Some("running"));
    assert_eq!(row.status_after.as_deref(), Some("failed"));
    assert_eq!(row.agent_name, "agent:one");
    assert_eq!(row.worker, "test-worker");
    assert_eq!(row.job_kind.as_deref(), Some("fail_run"));
    assert_eq!(row.slot_score, Some(1_777_649_400.25));
    assert_eq!(row.deadline.as_deref(), Some("2026-05-01T16:35:00.000000Z"));
    assert_eq!(row.at, "2026-05-01T17:00:00.000000Z");
}

async fn a_late_success_is_never_overwritten(kind: Kind) {
    let f = Fixture::new(kind).await;
    f.insert_run(
        "e1",
        "a",
        "running",
        "2026-05-01T15:30:00Z",
        Some("dispatched"),
    )
    .await;
    // The run finishes between the producer's read and the worker's write.
    f.exec("UPDATE schedule_executions SET status = 'success', response = 'done' WHERE id = 'e1'")
        .await;
    let ev = evidence();
    let outcome = f
        .store
        .fail_run(&Transition {
            error: "stale",
            ..fail(&id("e1"), &ev)
        })
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::AlreadyTerminal(Status::Success));
    assert_eq!(f.status("e1").await, "success");
    assert_eq!(
        f.scalar("SELECT error FROM schedule_executions WHERE id = 'e1'")
            .await,
        None
    );
    assert_eq!(f.count("SELECT COUNT(*) FROM janitor_audit").await, 0);
    // Asking to move a terminal status is refused without touching the database.
    let outcome = f
        .store
        .fail_run(&Transition {
            expected: &Status::Success,
            ..fail(&id("e1"), &ev)
        })
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::AlreadyTerminal(Status::Success));
}

async fn conflicts_and_missing_rows_write_nothing(kind: Kind) {
    let f = Fixture::new(kind).await;
    f.insert_run("e1", "a", "pending_retry", "2026-05-01T15:30:00Z", None)
        .await;
    f.insert_run("e2", "a", "paused", "2026-05-01T15:30:00Z", None)
        .await;
    let ev = evidence();
    let t = |run: &'static str, expected: &'static Status| Transition {
        execution_id: Box::leak(Box::new(id(run))),
        expected,
        error: "x",
        now: now(),
        started_at: Some(started()),
        started_at_raw: "2026-05-01T15:30:00Z",
        require_no_session: false,
        platform_skipped: false,
        expected_lease: None,
        evidence: Box::leak(Box::new(ev.clone())),
    };
    assert_eq!(
        f.store.fail_run(&t("e1", &Status::Running)).await.unwrap(),
        CasOutcome::Conflict(Status::PendingRetry)
    );
    assert_eq!(
        f.store
            .fail_run(&t("missing", &Status::Running))
            .await
            .unwrap(),
        CasOutcome::NotFound
    );
    // Unknown statuses are never a CAS source.
    static PAUSED: std::sync::LazyLock<Status> =
        std::sync::LazyLock::new(|| Status::parse("paused"));
    assert!(matches!(
        f.store.fail_run(&t("e2", &PAUSED)).await.unwrap(),
        CasOutcome::Conflict(_)
    ));
    assert_eq!(f.status("e1").await, "pending_retry");
    assert_eq!(f.status("e2").await, "paused");
    assert_eq!(f.count("SELECT COUNT(*) FROM janitor_audit").await, 0);
}

async fn skipped_runs_are_cancelled_only_from_skipped(kind: Kind) {
    let f = Fixture::new(kind).await;
    f.insert_run("k1", "a", "skipped", "garbage-time", None)
        .await;
    f.insert_run("k2", "a", "running", "2026-05-01T15:30:00Z", None)
        .await;
    let ev = evidence();
    let change = Transition {
        execution_id: &id("k1"),
        expected: &Status::Skipped,
        error: "Skipped — agent was busy",
        now: now(),
        // Its started_at is unreadable: the caller passes none.
        started_at: None,
        started_at_raw: "garbage-time",
        require_no_session: false,
        platform_skipped: false,
        expected_lease: None,
        evidence: &ev,
    };
    assert!(matches!(
        f.store.cancel_skipped(&change).await.unwrap(),
        CasOutcome::Applied { .. }
    ));
    assert_eq!(f.status("k1").await, "cancelled");
    assert_eq!(
        f.scalar("SELECT error FROM schedule_executions WHERE id = 'k1'")
            .await
            .as_deref(),
        Some("Skipped — agent was busy")
    );
    // Unparseable start: duration is NULL rather than invented.
    assert_eq!(
        f.count("SELECT COUNT(*) FROM schedule_executions WHERE id = 'k1' AND duration_ms IS NULL")
            .await,
        1
    );
    let k2 = id("k2");
    let wrong = fail(&k2, &ev);
    assert!(matches!(
        f.store.cancel_skipped(&wrong).await.unwrap(),
        CasOutcome::Conflict(_)
    ));
    assert_eq!(f.status("k2").await, "running");
    let trail = audit::query(
        f.db(),
        &AuditFilter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].action, "run_cancelled");
    assert_eq!(trail[0].status_after.as_deref(), Some("cancelled"));
}

async fn concurrent_fails_apply_exactly_once(kind: Kind) {
    let f = Arc::new(Fixture::new(kind).await);
    f.insert_run(
        "e1",
        "a",
        "running",
        "2026-05-01T15:30:00Z",
        Some("dispatched"),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            let ev = Evidence {
                worker: format!("w{i}"),
                ..Evidence::default()
            };
            f.store
                .fail_run(&Transition {
                    error: "stale",
                    ..fail(&id("e1"), &ev)
                })
                .await
                .unwrap()
        }));
    }
    let mut applied = 0;
    for task in tasks {
        match task.await.unwrap() {
            CasOutcome::Applied { .. } => applied += 1,
            CasOutcome::AlreadyTerminal(Status::Failed) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(f.count("SELECT COUNT(*) FROM janitor_audit").await, 1);
}

async fn odd_ids_are_reported_not_changed(kind: Kind) {
    let f = Fixture::new(kind).await;
    f.insert_run("has:colon", "a", "running", "2026-05-01T15:30:00Z", None)
        .await;
    f.insert_run("fine", "", "running", "2026-05-01T15:30:00Z", None)
        .await;
    f.insert_run(
        "ok",
        "agent with spaces/ü:x",
        "running",
        "2026-05-01T15:30:00Z",
        None,
    )
    .await;
    // Characters JSON must escape (SQLite pages travel as JSON) come back as they were.
    let quoted = "q\"uote\\back 😀";
    f.insert_run(
        "zjson",
        quoted,
        "running",
        "2026-05-01T15:30:00Z",
        Some("line\nbreak\t\"x\""),
    )
    .await;
    let page = f.store.open_rows(None, 10).await.unwrap();
    let mut corrupt = 0;
    for entry in &page.rows {
        match entry {
            RowEntry::Corrupt(c) => {
                corrupt += 1;
                assert!(c.id == "has:colon" || c.id == "fine", "{c:?}");
                assert!(!c.reason.is_empty());
            }
            RowEntry::Row(r) if r.execution_id.as_str() == "zjson" => {
                assert_eq!(r.agent.as_str(), quoted);
                assert_eq!(r.session.as_deref(), Some("line\nbreak\t\"x\""));
            }
            RowEntry::Row(r) => assert_eq!(r.agent.as_str(), "agent with spaces/ü:x"),
        }
    }
    assert_eq!(corrupt, 2);
    assert_eq!(page.rows.len(), 4);
}

async fn audit_filters(kind: Kind) {
    let f = Fixture::new(kind).await;
    for (run, agent) in [("e1", "a"), ("e2", "a"), ("e3", "b")] {
        f.insert_run(run, agent, "running", "2026-05-01T15:30:00Z", None)
            .await;
    }
    let ev = evidence();
    for (run, minutes) in [("e1", 0), ("e2", 10), ("e3", 20)] {
        let at = now() + chrono::TimeDelta::minutes(minutes);
        f.store
            .fail_run(&Transition {
                now: at,
                ..fail(&id(run), &ev)
            })
            .await
            .unwrap();
    }
    let f = &f;
    let q = |filter: AuditFilter| async move { audit::query(f.db(), &filter).await.unwrap() };
    let all = q(AuditFilter {
        limit: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(
        all.iter()
            .map(|r| r.execution_id.as_str())
            .collect::<Vec<_>>(),
        ["e3", "e2", "e1"]
    );
    assert_eq!(
        q(AuditFilter {
            agent: Some("a".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    let since = Some(now() + chrono::TimeDelta::minutes(5));
    assert_eq!(
        q(AuditFilter {
            since,
            limit: 10,
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        q(AuditFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .len(),
        1
    );
}

/// PostgreSQL made read-only for new transactions (a failover, an operator's switch) and
/// back: the sessions a pool opened meanwhile stay read-only for their whole lives. After
/// the database is writable again a write may be refused once more (by a session opened
/// after the last refusal), never again: before the fix the pool kept handing out its
/// read-only sessions and every write failed for as long as they lived (up to 30 minutes).
#[tokio::test]
async fn sessions_opened_while_read_only_are_replaced_once_the_database_is_writable() {
    use sqlx::Connection as _;
    let f = Fixture::new(Kind::Postgres).await;
    for run in ["e1", "e2", "e3", "e4"] {
        f.insert_run(run, "a", "running", "2026-05-01T15:30:00Z", None)
            .await;
    }
    let name = f._db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&f._db.url).await.unwrap();
    let set = |on: bool| {
        format!(
            "ALTER DATABASE \"{name}\" {}",
            if on {
                "SET default_transaction_read_only = on"
            } else {
                "RESET default_transaction_read_only"
            }
        )
    };
    sqlx::raw_sql(&set(true)).execute(&mut admin).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&name)
    .execute(&mut admin)
    .await
    .unwrap();
    let ev = evidence();
    let runs: Vec<ExecutionId> = ["e1", "e2", "e3", "e4"].into_iter().map(id).collect();
    let change = |i: usize| fail(&runs[i], &ev);
    let refused = f.store.fail_run(&change(0)).await.unwrap_err();
    assert!(refused.is_transient(), "{refused}");
    assert!(refused.to_string().contains("read-only"), "{refused}");
    // Reads still work during the outage, and fill the pool with read-only sessions.
    let Database::Postgres(pool) = f.db() else {
        unreachable!()
    };
    let reads = (0..6).map(|_| sqlx::query("SELECT pg_sleep(0.05)").execute(pool));
    for read in futures::future::join_all(reads).await {
        read.unwrap();
    }

    sqlx::raw_sql(&set(false))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut refusals = 0;
    for i in 0..runs.len() {
        let mut outcome = f.store.fail_run(&change(i)).await;
        if outcome.is_err() {
            refusals += 1;
            outcome = f.store.fail_run(&change(i)).await;
        }
        assert!(
            matches!(outcome, Ok(CasOutcome::Applied { .. })),
            "{i}: {outcome:?}"
        );
    }
    assert!(
        refusals <= 1,
        "{refusals} refusals after the database was writable"
    );
}

/// The change that fails `run` from `running`, as the worker would apply it (tests change
/// the fields they are about with `..fail(…)`).
fn fail<'a>(run: &'a ExecutionId, evidence: &'a Evidence) -> Transition<'a> {
    Transition {
        execution_id: run,
        expected: &Status::Running,
        error: "x",
        now: now(),
        started_at: Some(started()),
        started_at_raw: "2026-05-01T15:30:00Z",
        require_no_session: false,
        platform_skipped: false,
        expected_lease: None,
        evidence,
    }
}

async fn leases_are_read_and_a_run_claimed_since_the_read_is_never_failed(kind: Kind) {
    let f = Fixture::new(kind).await;
    f.insert_run(
        "p1",
        "a",
        "running",
        "2026-05-01T15:30:00Z",
        Some("dispatched"),
    )
    .await;
    f.insert_run(
        "p2",
        "a",
        "running",
        "2026-05-01T15:30:00Z",
        Some("dispatched"),
    )
    .await;
    f.exec(
        "UPDATE schedule_executions SET lease_expires_at = '2026-05-01T18:00:00Z', \
         claim_token = 't', claimed_by_worker = 'w1', redelivery_count = 2 WHERE id = 'p1'",
    )
    .await;
    let read = f.store.rows_by_ids(&[id("p1"), id("p2")]).await.unwrap();
    let mut read = rows(&read);
    read.sort_by_key(|r| r.execution_id.to_string());
    assert_eq!(
        read[0].lease,
        Some(Ok(parse_timestamp("2026-05-01T18:00:00Z").unwrap()))
    );
    assert_eq!(read[0].redelivery_count, 2);
    assert_eq!(read[1].lease, None);
    assert_eq!(read[1].redelivery_count, 0);
    let page = f.store.open_rows(None, 10).await.unwrap();
    assert!(rows(&page.rows).iter().any(|r| r.lease.is_some()));

    // p2 was read without a lease; a pull worker claims it before the write lands.
    f.exec(
        "UPDATE schedule_executions SET lease_expires_at = '2026-05-01T18:00:00Z' WHERE id = 'p2'",
    )
    .await;
    let ev = evidence();
    let outcome = f.store.fail_run(&fail(&id("p2"), &ev)).await.unwrap();
    assert_eq!(outcome, CasOutcome::Conflict(Status::Running));
    assert_eq!(f.status("p2").await, "running");
    // An empty lease is no lease.
    f.exec("UPDATE schedule_executions SET lease_expires_at = '' WHERE id = 'p2'")
        .await;
    let read = f.store.rows_by_ids(&[id("p2")]).await.unwrap();
    assert_eq!(rows(&read)[0].lease, None);
    let outcome = f.store.fail_run(&fail(&id("p2"), &ev)).await.unwrap();
    assert!(matches!(outcome, CasOutcome::Applied { .. }), "{outcome:?}");
}

async fn the_platforms_skipped_finalize_writes_what_the_platform_writes(kind: Kind) {
    let f = Fixture::new(kind).await;
    f.insert_run("k1", "a", "skipped", "2026-05-01T15:30:00Z", None)
        .await;
    f.insert_run("k2", "a", "skipped", "2026-05-01T15:30:00Z", None)
        .await;
    f.exec("UPDATE schedule_executions SET completed_at = '2026-05-01T15:30:01Z' WHERE id = 'k2'")
        .await;
    let read = f.store.rows_by_ids(&[id("k1"), id("k2")]).await.unwrap();
    let mut read = rows(&read);
    read.sort_by_key(|r| r.execution_id.to_string());
    assert!(!read[0].completed);
    assert!(read[1].completed);
    let ev = evidence();
    let change = |run: &'static str| Transition {
        expected: &Status::Skipped,
        error: "Finalized by cleanup: skipped execution",
        platform_skipped: true,
        ..fail(Box::leak(Box::new(id(run))), &ev)
    };
    assert!(matches!(
        f.store.fail_run(&change("k1")).await.unwrap(),
        CasOutcome::Applied { .. }
    ));
    assert_eq!(f.status("k1").await, "failed");
    assert_eq!(
        f.scalar("SELECT completed_at FROM schedule_executions WHERE id = 'k1'")
            .await
            .as_deref(),
        Some("2026-05-01T15:30:00Z")
    );
    assert_eq!(
        f.count("SELECT CAST(duration_ms AS BIGINT) FROM schedule_executions WHERE id = 'k1'")
            .await,
        0
    );
    // completed_at set since the read: the platform counts it terminal; nothing written.
    assert_eq!(
        f.store.fail_run(&change("k2")).await.unwrap(),
        CasOutcome::Conflict(Status::Skipped)
    );
    assert_eq!(f.status("k2").await, "skipped");
}

async fn every_schema_generation_is_read_and_written(kind: Kind) {
    for generation in janitor_testkit::Generation::ALL {
        let db = TestDb::new(kind).await.unwrap();
        janitor_testkit::run_sql(kind, &db.url, generation.ddl())
            .await
            .unwrap();
        let database = Database::connect(&db.url, false).await.unwrap();
        database.migrate(false).await.unwrap();
        let store = ExecutionStore::open(database).await.unwrap();
        let schema = store.schema();
        assert_eq!(schema.session, generation.has_sessions(), "{generation:?}");
        assert_eq!(schema.lease, generation.has_leases(), "{generation:?}");
        assert_eq!(
            schema.schedule_timeout && schema.agent_timeout,
            generation != janitor_testkit::Generation::Late2025
        );
        let off: Vec<&str> = schema.rules_off().iter().map(|r| r.rule).collect();
        assert_eq!(
            off.iter().any(|r| r.contains("never-launched")),
            !generation.has_sessions(),
            "{off:?}"
        );
        janitor_testkit::run_sql(
            kind,
            &db.url,
            "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by) \
             VALUES ('g1', 's', 'a', 'running', '2026-05-01T15:30:00Z', 'm', 'schedule')",
        )
        .await
        .unwrap();
        let page = store.open_rows(None, 10).await.unwrap();
        let read = rows(&page.rows);
        assert_eq!(read.len(), 1, "{generation:?}");
        assert_eq!(read[0].session_tracked, generation.has_sessions());
        let ev = evidence();
        let outcome = store.fail_run(&fail(&id("g1"), &ev)).await.unwrap();
        assert!(
            matches!(outcome, CasOutcome::Applied { .. }),
            "{generation:?}: {outcome:?}"
        );
        store.database().close().await;
    }
}
