//! Applying jobs against real Redis and both databases: the fresh verdict decides, every
//! effect is a compare-and-set, and a duplicate delivery applies nothing twice.
#![allow(clippy::unwrap_used)]

mod common;

use common::World;

use janitor_core::{AgentName, CleanupJob, ExecutionId, JobKind};
use janitor_testkit::{ts_ago, Kind};
use janitor_worker::{Effect, Moot, Outcome};

janitor_testkit::both_backends!(
    the_incident_ends_with_slot_gone_row_failed_activity_closed,
    a_live_21_minute_slot_is_untouched,
    a_late_success_wins_but_the_dead_slot_is_still_reclaimed,
    a_crash_between_effects_is_repaired_by_the_retry,
    duplicate_deliveries_apply_exactly_once,
    a_session_written_between_recheck_and_write_keeps_the_run_and_its_slot,
    a_batch_reads_before_its_turn_and_writes_only_with_it,
);

/// A worker overlaps its batches: one reads both stores and decides while the one before
/// it writes. The reads need no turn, no write happens without it, and two batches that
/// decided on the same state before either wrote apply their change once between them.
async fn a_batch_reads_before_its_turn_and_writes_only_with_it(kind: Kind) {
    let w = World::new(kind).await;
    w.seed_dead_run("agent:one", "dead", "naive").await;
    let job = w.job("agent:one", "dead").await;
    let turn = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let held = turn.clone().lock_owned().await;
    // The same job twice, as two batches (a duplicate delivery, or the reclaim job of one
    // sweep and the retry of another), both deciding while another batch holds the turn.
    let mut batches = Vec::new();
    for copy in ["first", "second"] {
        let (decided, read) = tokio::sync::oneshot::channel();
        let (applier, turn, jobs) = (
            w.applier(copy),
            turn.clone(),
            vec![(job.clone(), job.task_id())],
        );
        batches.push(tokio::spawn(async move {
            applier
                .apply_batch_in_turn(&jobs, &turn, move || {
                    let _ = decided.send(());
                })
                .await
        }));
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .expect("a batch waited for the turn before reading")
            .unwrap();
    }
    assert_eq!(
        w.sandbox.slot_members("agent:one").await.unwrap(),
        vec!["dead".to_owned()],
        "a batch removed a slot without the turn"
    );
    assert_eq!(
        w.sandbox.status("dead").await.unwrap().as_deref(),
        Some("running"),
        "a batch wrote a row without the turn"
    );
    drop(held);
    let mut outcomes = Vec::new();
    for batch in batches {
        outcomes.extend(batch.await.unwrap().unwrap());
    }
    let applied: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Applied { .. }))
        .collect();
    assert_eq!(
        applied,
        vec![&Outcome::Applied {
            effects: vec![Effect::SlotReclaimed, Effect::RunFailed]
        }],
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&Outcome::NoLongerNeeded {
            why: Moot::SlotAlreadyGone
        }),
        "{outcomes:?}"
    );
    assert_eq!(
        w.sandbox.status("dead").await.unwrap().as_deref(),
        Some("failed")
    );
    assert_eq!(w.audit_count("slot_reclaimed").await, 1);
    assert_eq!(w.audit_count("run_failed").await, 1);
}

/// Safety issue item 4: the row's compare-and-set named only its status, and a
/// never-launched run's slot went first. A run that got its session between the worker's
/// re-check and its write was failed and its slot freed. Now the write names every fact the
/// verdict used (no session, `started_at`), and the slot goes only once the row is failed.
async fn a_session_written_between_recheck_and_write_keeps_the_run_and_its_slot(kind: Kind) {
    let w = World::new(kind).await;
    let now = w.now().await;
    w.sandbox
        .seed_slot("agent:one", "mute", 120.0, Some(3600))
        .await
        .unwrap();
    w.sandbox
        .seed_run(
            "mute",
            "agent:one",
            "running",
            &ts_ago(now, 120.0, "naive"),
            None,
        )
        .await
        .unwrap();
    let job = w.job("agent:one", "mute").await;
    assert_eq!(job.kind, JobKind::FailRun);
    // The platform hands the run over right between janitor's read and its write.
    let (db_kind, url) = w.sandbox.db_handle();
    let hook: janitor_worker::Hook = std::sync::Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            // On a thread of its own: sqlx's connection futures are not `Send` for every
            // lifetime, which a boxed hook needs.
            tokio::task::spawn_blocking(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(janitor_testkit::run_sql(
                    db_kind,
                    &url,
                    "UPDATE schedule_executions SET claude_session_id = 'dispatched' WHERE id = 'mute'",
                ))
                .unwrap();
            })
            .await
            .unwrap();
        })
    });
    let racing = w.applier.clone().with_before_write(hook);
    let outcome = racing.apply(&job, &job.task_id()).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::NoLongerNeeded {
            why: Moot::StatusChanged("running".into())
        }
    );
    assert_eq!(
        w.sandbox.status("mute").await.unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        w.sandbox.slot_members("agent:one").await.unwrap(),
        vec!["mute".to_owned()],
        "the live run's slot was freed"
    );
    assert_eq!(w.audit_count("run_failed").await, 0);
    assert_eq!(w.audit_count("slot_released").await, 0);

    // Without the race the same job fails the run, then frees its slot, both audited.
    w.sandbox
        .sql("UPDATE schedule_executions SET claude_session_id = NULL WHERE id = 'mute'")
        .await
        .unwrap();
    let outcome = w.applier.apply(&job, &job.task_id()).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Applied {
            effects: vec![Effect::RunFailed, Effect::SlotReleased]
        }
    );
    assert!(w
        .sandbox
        .slot_members("agent:one")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(w.audit_count("run_failed").await, 1);
    assert_eq!(w.audit_count("slot_released").await, 1);
}

async fn the_incident_ends_with_slot_gone_row_failed_activity_closed(kind: Kind) {
    let w = World::new(kind).await;
    let now = w.now().await;
    // Acquired 70 minutes ago with its own 3600 s timeout: past 3600 + 300.
    w.sandbox
        .seed_slot("agent:one", "exec-1", 70.0 * 60.0, Some(3600))
        .await
        .unwrap();
    let started = ts_ago(now, 70.0 * 60.0, "naive");
    w.sandbox
        .seed_run(
            "exec-1",
            "agent:one",
            "running",
            &started,
            Some("dispatched"),
        )
        .await
        .unwrap();
    w.sandbox
        .seed_activity("act-1", "exec-1", &started)
        .await
        .unwrap();

    let job = w.job("agent:one", "exec-1").await;
    assert_eq!(job.kind, JobKind::ReclaimSlot);
    let outcome = w.applier.apply(&job, &job.task_id()).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Applied {
            effects: vec![Effect::SlotReclaimed, Effect::RunFailed]
        }
    );

    assert!(w
        .sandbox
        .slot_members("agent:one")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        w.sandbox.status("exec-1").await.unwrap().as_deref(),
        Some("failed")
    );
    let error = w
        .sandbox
        .sql_text("SELECT error FROM schedule_executions WHERE id = 'exec-1'")
        .await
        .unwrap()
        .unwrap();
    assert!(
        error.starts_with("Stale execution")
            && error.contains("agent:one")
            && error.contains("exec-1"),
        "{error}"
    );
    assert_eq!(
        w.sandbox
            .sql_text("SELECT activity_state FROM agent_activities WHERE id = 'act-1'")
            .await
            .unwrap()
            .as_deref(),
        Some("failed")
    );
    let worker = w
        .sandbox
        .sql_text("SELECT worker FROM janitor_audit WHERE action = 'run_failed'")
        .await
        .unwrap();
    assert_eq!(worker.as_deref(), Some("test-worker-1"));
    let job_id = w
        .sandbox
        .sql_text("SELECT job_id FROM janitor_audit WHERE action = 'slot_reclaimed'")
        .await
        .unwrap();
    assert_eq!(job_id, Some(job.task_id()));
}

async fn a_live_21_minute_slot_is_untouched(kind: Kind) {
    let w = World::new(kind).await;
    let now = w.now().await;
    w.sandbox
        .seed_slot("agent:one", "long", 21.0 * 60.0, Some(3600))
        .await
        .unwrap();
    w.sandbox
        .seed_run(
            "long",
            "agent:one",
            "running",
            &ts_ago(now, 21.0 * 60.0, "zulu"),
            Some("dispatched"),
        )
        .await
        .unwrap();
    // A job made from wrong evidence (say, by an old producer with a global 20-minute TTL).
    let job = CleanupJob {
        version: janitor_core::JOB_VERSION,
        kind: JobKind::ReclaimSlot,
        agent: AgentName::parse("agent:one").unwrap(),
        execution_id: ExecutionId::parse("long").unwrap(),
        observed_score: Some(now - 21.0 * 60.0),
        deadline: janitor_core::from_unix_seconds(now - 60.0),
        observed_status: Some(janitor_core::Status::Running),
        redrive_of: None,
    };
    let outcome = w.applier.apply(&job, &job.task_id()).await.unwrap();
    assert_eq!(outcome, Outcome::NoLongerNeeded { why: Moot::Healthy });
    assert_eq!(
        w.sandbox.slot_members("agent:one").await.unwrap(),
        vec!["long".to_owned()]
    );
    assert_eq!(
        w.sandbox.status("long").await.unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(w.audit_count("slot_reclaimed").await, 0);
}

async fn a_late_success_wins_but_the_dead_slot_is_still_reclaimed(kind: Kind) {
    let w = World::new(kind).await;
    w.seed_dead_run("a", "e", "naive").await;
    let job = w.job("a", "e").await;
    // The run reports success after the producer enqueued the job.
    w.sandbox
        .sql("UPDATE schedule_executions SET status = 'success' WHERE id = 'e'")
        .await
        .unwrap();
    let outcome = w.applier.apply(&job, &job.task_id()).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Applied {
            effects: vec![Effect::SlotReclaimed]
        }
    );
    assert_eq!(
        w.sandbox.status("e").await.unwrap().as_deref(),
        Some("success")
    );
    assert_eq!(w.audit_count("run_failed").await, 0);
}

async fn a_crash_between_effects_is_repaired_by_the_retry(kind: Kind) {
    let w = World::new(kind).await;
    w.seed_dead_run("a", "e", "sqlite").await;
    let job = w.job("a", "e").await;
    assert_eq!(job.kind, JobKind::ReclaimSlot);
    // The first attempt removed the slot and died before the row update.
    let mut redis = w.sandbox.redis().await.unwrap();
    redis::cmd("ZREM")
        .arg(format!("{}a", w.sandbox.slot_prefix))
        .arg("e")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    // The retry finds the slot gone and still fails the row: it is past its deadline.
    let outcome = w.applier.apply(&job, &job.task_id()).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Applied {
            effects: vec![Effect::RunFailed]
        }
    );
    assert_eq!(
        w.sandbox.status("e").await.unwrap().as_deref(),
        Some("failed")
    );
}

async fn duplicate_deliveries_apply_exactly_once(kind: Kind) {
    let w = std::sync::Arc::new(World::new(kind).await);
    let now = w.now().await;
    let mut jobs = Vec::new();
    for i in 0..5 {
        let id = format!("e{i}");
        w.sandbox
            .seed_slot("dup agent", &id, 2.0 * 3600.0, Some(600))
            .await
            .unwrap();
        w.sandbox
            .seed_run(
                &id,
                "dup agent",
                "running",
                &ts_ago(now, 2.0 * 3600.0, "naive"),
                Some("dispatched"),
            )
            .await
            .unwrap();
        jobs.push(w.job("dup agent", &id).await);
    }
    // Every job delivered four times, all at once.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        for job in &jobs {
            let (w, job) = (w.clone(), job.clone());
            tasks.push(tokio::spawn(async move {
                w.applier.apply(&job, &job.task_id()).await.unwrap()
            }));
        }
    }
    let outcomes = futures::future::join_all(tasks).await;
    let applied = outcomes
        .iter()
        .filter(|o| matches!(o.as_ref().unwrap(), Outcome::Applied { .. }))
        .count();
    assert!(applied >= 5, "{outcomes:?}");
    assert_eq!(w.audit_count("slot_reclaimed").await, 5);
    assert_eq!(w.audit_count("run_failed").await, 5);
    for i in 0..5 {
        assert_eq!(
            w.sandbox.status(&format!("e{i}")).await.unwrap().as_deref(),
            Some("failed")
        );
    }
}

#[tokio::test]
async fn each_rule_applies_its_own_effects() {
    let w = World::new(Kind::Sqlite).await;
    let now = w.now().await;
    // Rule 2: a live slot whose run already finished.
    w.sandbox
        .seed_slot("a", "leaked", 60.0, Some(3600))
        .await
        .unwrap();
    w.sandbox
        .seed_run(
            "leaked",
            "a",
            "success",
            &ts_ago(now, 60.0, "naive"),
            Some("s"),
        )
        .await
        .unwrap();
    // Rule 4: never got a session, holding a live slot.
    w.sandbox
        .seed_slot("a", "mute", 300.0, Some(3600))
        .await
        .unwrap();
    w.sandbox
        .seed_run("mute", "a", "running", &ts_ago(now, 300.0, "naive"), None)
        .await
        .unwrap();
    // Rule 5: skipped long ago.
    w.sandbox
        .seed_run("skip", "a", "skipped", &ts_ago(now, 3600.0, "naive"), None)
        .await
        .unwrap();
    let cases = [
        (
            "leaked",
            JobKind::ReleaseSlot,
            vec![Effect::SlotReleased],
            Some("success"),
        ),
        (
            "mute",
            JobKind::FailRun,
            vec![Effect::RunFailed, Effect::SlotReleased],
            Some("failed"),
        ),
        (
            "skip",
            JobKind::FinalizeSkipped,
            vec![Effect::RunCancelled],
            Some("cancelled"),
        ),
    ];
    for (id, kind, effects, status) in cases {
        let job = w.job("a", id).await;
        assert_eq!(job.kind, kind, "{id}");
        let outcome = w.applier.apply(&job, &job.task_id()).await.unwrap();
        assert_eq!(outcome, Outcome::Applied { effects }, "{id}");
        assert_eq!(
            w.sandbox.status(id).await.unwrap().as_deref(),
            status,
            "{id}"
        );
        // Applying it again finds nothing to do.
        let again = w.applier.apply(&job, &job.task_id()).await.unwrap();
        assert!(
            matches!(again, Outcome::NoLongerNeeded { .. }),
            "{id}: {again:?}"
        );
    }
    assert!(w.sandbox.slot_members("a").await.unwrap().is_empty());
    let error = w
        .sandbox
        .sql_text("SELECT error FROM schedule_executions WHERE id = 'skip'")
        .await
        .unwrap();
    assert_eq!(error.as_deref(), Some("Skipped — agent was busy"));
}

#[tokio::test]
async fn a_renewed_slot_survives_its_job() {
    let w = World::new(Kind::Sqlite).await;
    w.seed_dead_run("a", "e", "naive").await;
    let job = w.job("a", "e").await;
    // The run heartbeats after the sweep saw it stale.
    w.slots
        .renew(
            &AgentName::parse("a").unwrap(),
            &ExecutionId::parse("e").unwrap(),
            None,
        )
        .await
        .unwrap();
    let outcome = w.applier.apply(&job, &job.task_id()).await.unwrap();
    assert_eq!(outcome, Outcome::NoLongerNeeded { why: Moot::Healthy });
    assert_eq!(
        w.sandbox.slot_members("a").await.unwrap(),
        vec!["e".to_owned()]
    );
    assert_eq!(
        w.sandbox.status("e").await.unwrap().as_deref(),
        Some("running")
    );
}

/// Safety issue item 7: a slot removal's audit row rode the batch's SQL transaction, so when
/// that transaction failed after the Redis change the removal was never audited. The Lua
/// script that removes the slot now records it in the outbox; the row is written from there
/// (by the batch, or by any replica's drain), exactly once.
#[tokio::test]
async fn a_removal_whose_row_write_fails_is_audited_from_the_outbox_exactly_once() {
    let w = World::new(Kind::Sqlite).await;
    w.seed_dead_run("agent:one", "dead", "naive").await;
    let job = w.job("agent:one", "dead").await;
    assert_eq!(job.kind, JobKind::ReclaimSlot);
    // The database refuses the row's write, after the slot is gone.
    w.sandbox
        .sql("CREATE TRIGGER boom BEFORE UPDATE ON schedule_executions BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;")
        .await
        .unwrap();
    let err = w.applier.apply(&job, &job.task_id()).await.unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert!(w
        .sandbox
        .slot_members("agent:one")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(w.audit_count("slot_reclaimed").await, 0);

    // Any replica writes it from the outbox, once however often it drains.
    assert_eq!(
        w.applier
            .drain_outbox(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        w.applier
            .drain_outbox(std::time::Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    assert_eq!(w.audit_count("slot_reclaimed").await, 1);
    let worker = w
        .sandbox
        .sql_text("SELECT worker || ' ' || job_id || ' ' || CAST(slot_score AS TEXT) FROM janitor_audit WHERE action = 'slot_reclaimed'")
        .await
        .unwrap()
        .unwrap();
    assert!(
        worker.starts_with(&format!("test-worker-1 {}", job.task_id())),
        "{worker}"
    );

    // The retry, with the database healthy, finishes the row half; still one slot row.
    w.sandbox.sql("DROP TRIGGER boom").await.unwrap();
    let outcome = w.applier.apply(&job, &job.task_id()).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Applied {
            effects: vec![Effect::RunFailed]
        }
    );
    assert_eq!(w.audit_count("slot_reclaimed").await, 1);
    assert_eq!(w.audit_count("run_failed").await, 1);
}

/// The table's unique `change_key` makes one row per change the database's promise: the
/// same change written twice is one row.
async fn the_same_change_written_twice_is_one_audit_row(kind: Kind) {
    let w = World::new(kind).await;
    let row = janitor_store::AuditRow {
        action: janitor_store::AuditAction::SlotReleased,
        execution_id: "e1".into(),
        agent: "a".into(),
        status_before: None,
        status_after: None,
        evidence: janitor_store::Evidence {
            worker: "w".into(),
            ..Default::default()
        },
        change_key: Some("outbox:1-0".into()),
        at: None,
    };
    let now = w.slots.server_time().await.unwrap();
    for _ in 0..2 {
        janitor_store::sql::audit::record(w.rows.database(), std::slice::from_ref(&row), now)
            .await
            .unwrap();
    }
    assert_eq!(w.audit_count("slot_released").await, 1);
}

mod unique_change {
    janitor_testkit::both_backends!(the_same_change_written_twice_is_one_audit_row);
    use super::the_same_change_written_twice_is_one_audit_row;
}
