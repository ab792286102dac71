//! A forced catch-up's passes: each stops at the backlog cap and the next goes on where it
//! stopped, instead of reading again every row the last ones queued.
#![allow(clippy::unwrap_used)]

use janitor_core::Policy;
use janitor_producer::{observe, sweep, Breaker, Finding, Scope, SweepOptions, SweepReport};
use janitor_queue::{Queue, QueueSettings};
use janitor_store::{Database, ExecutionStore, SlotKeys, SlotStore};
use janitor_testkit::{redis_url, ts_ago, Kind, Sandbox};

struct Stage {
    sandbox: Sandbox,
    slots: SlotStore,
    rows: ExecutionStore,
}

impl Stage {
    /// `n` orphaned runs of one agent (launched, `running` for two hours, no slot): each
    /// one `fail_run` job. Their ids sort in the order they are numbered.
    async fn new(kind: Kind, n: usize) -> Stage {
        let sandbox = Sandbox::new(kind).await.unwrap();
        let db = Database::connect(&sandbox.db.url, true).await.unwrap();
        db.migrate(true).await.unwrap();
        let now = sandbox.redis_now().await.unwrap();
        let started = ts_ago(now, 7_200.0, "naive");
        let values: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "('o{i:04}', '__manual__', 'agent', 'running', '{started}', 'run', 'schedule', 'sess')"
                )
            })
            .collect();
        sandbox
            .sql(&format!(
                "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, claude_session_id) VALUES {}",
                values.join(",")
            ))
            .await
            .unwrap();
        let rows = ExecutionStore::open(db).await.unwrap();
        let keys = SlotKeys::new(sandbox.slot_prefix.clone(), sandbox.meta_prefix.clone());
        let slots = SlotStore::connect(&redis_url(), keys, 300).await.unwrap();
        Stage {
            sandbox,
            slots,
            rows,
        }
    }

    fn queue(&self, backlog_cap: u64) -> Queue {
        Queue::new(
            self.slots.connection(),
            QueueSettings {
                name: self.sandbox.queue.clone(),
                backlog_cap,
                ..QueueSettings::default()
            },
        )
    }

    /// One forced pass (rows read 100 at a time) with the queue capped at `cap`.
    async fn pass(&self, cap: u64, resume: Option<&SweepReport>) -> SweepReport {
        self.pass_by(400, cap, resume).await
    }

    /// One forced pass, rows read `batch / 4` at a time.
    async fn pass_by(&self, batch: usize, cap: u64, resume: Option<&SweepReport>) -> SweepReport {
        let options = SweepOptions {
            force: true,
            batch,
            breaker: Breaker::default(),
            resume: resume.and_then(SweepReport::resume),
            ..SweepOptions::default()
        };
        sweep(
            &self.slots,
            &self.rows,
            &self.queue(cap),
            &Policy::default(),
            None,
            &options,
        )
        .await
        .unwrap()
    }
}

fn fail_run(report: &SweepReport) -> janitor_queue::EnqueueReport {
    report.kinds["fail_run"].queue
}

async fn passes_resume_where_the_last_stopped(kind: Kind) {
    let stage = Stage::new(kind, 300).await;
    // Room for 100: the first pass queues runs 0–99 and stops on its second page.
    let first = stage.pass(100, None).await;
    assert_eq!(fail_run(&first).enqueued, 100, "{first:#?}");
    assert!(first.stats.truncated && first.has_more());
    assert!(first.resume().is_some(), "stopped in the row pass");
    // Room for 100 more, nothing applied meanwhile: the next pass starts at the page it
    // stopped on (runs 100–199), not at run 0, so it reads none of the 100 it queued.
    let second = stage.pass(200, Some(&first)).await;
    let kind_report = fail_run(&second);
    assert_eq!(kind_report.enqueued, 100, "{second:#?}");
    assert_eq!(
        kind_report.already_queued, 0,
        "a resumed pass met again the jobs the last one queued: {second:#?}"
    );
    assert_eq!(second.stats.rows_scanned, 200, "{second:#?}");
    // The third reaches the end of the rows: nothing to resume, the next starts over.
    let third = stage.pass(400, Some(&second)).await;
    assert_eq!(fail_run(&third).enqueued, 100, "{third:#?}");
    assert!(!third.stats.truncated && !third.has_more(), "{third:#?}");
    assert_eq!(third.resume(), None);
    let fourth = stage.pass(400, Some(&third)).await;
    assert_eq!(fail_run(&fourth).enqueued, 0, "{fourth:#?}");
    assert_eq!(fail_run(&fourth).already_queued, 300, "{fourth:#?}");
    assert_eq!(fourth.stats.rows_scanned, 300);
    // An unforced pass never resumes: it sees everything.
    let unforced = sweep(
        &stage.slots,
        &stage.rows,
        &stage.queue(400),
        &Policy::default(),
        None,
        &SweepOptions {
            batch: 400,
            resume: first.resume(),
            ..SweepOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(unforced.stats.rows_scanned, 300, "{unforced:#?}");
    stage.sandbox.clear_redis().await.unwrap();
}

/// A push bigger than the room defers jobs found before the stop: the next pass must not
/// resume past them (it did, and they waited for a pass from the start).
async fn no_pass_resumes_past_jobs_its_push_deferred(kind: Kind) {
    let stage = Stage::new(kind, 300).await;
    // Room for 10, rows 10 a page: 64 jobs are held and pushed at once, 54 deferred, and the
    // pass stops on its seventh page.
    let first = stage.pass_by(40, 10, None).await;
    assert_eq!(fail_run(&first).enqueued, 10, "{first:#?}");
    assert!(fail_run(&first).deferred >= 54, "{first:#?}");
    assert_eq!(first.resume(), None, "a resume would skip runs 10–59");
    let second = stage.pass_by(40, 100, Some(&first)).await;
    let kind_report = fail_run(&second);
    assert_eq!(kind_report.already_queued, 10, "{second:#?}");
    assert_eq!(kind_report.enqueued, 90, "{second:#?}");
    stage.sandbox.clear_redis().await.unwrap();
}

/// The end of the row pass is announced before the slot pass starts (a forced pass hands
/// the jobs it holds to the queue there, instead of holding them through the census's walk
/// of the keyspace: the last pass of a catch-up kept the workers waiting for it).
async fn the_row_pass_ends_before_the_slot_pass(kind: Kind) {
    let stage = Stage::new(kind, 3).await;
    // A finished run's leaked slot, on an agent with no open run: only the slot pass finds it.
    let now = stage.sandbox.redis_now().await.unwrap();
    let started = ts_ago(now, 600.0, "naive");
    stage
        .sandbox
        .sql(&format!(
            "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, claude_session_id) \
             VALUES ('leak', '__manual__', 'other', 'success', '{started}', 'run', 'schedule', 'sess')"
        ))
        .await
        .unwrap();
    redis::cmd("ZADD")
        .arg(format!("{}other", stage.sandbox.slot_prefix))
        .arg(now - 600.0)
        .arg("leak")
        .query_async::<()>(&mut stage.sandbox.redis().await.unwrap())
        .await
        .unwrap();
    for may_stop_early in [false, true] {
        let mut seen = Vec::new();
        observe::<janitor_store::StoreError>(
            &stage.slots,
            &stage.rows,
            &Policy::default(),
            stage.slots.server_time().await.unwrap(),
            &Scope {
                batch: 2,
                may_stop_early,
                ..Scope::default()
            },
            async |finding| {
                seen.push(match finding {
                    Finding::Pair(pair) => format!(
                        "{}:{}",
                        pair.verdict.name(),
                        pair.row
                            .map(|r| r.execution_id.to_string())
                            .unwrap_or_default()
                    ),
                    Finding::RowsDone => "rows done".into(),
                    Finding::End => "end".into(),
                    other => format!("{other:?}"),
                });
                Ok(std::ops::ControlFlow::Continue(()))
            },
        )
        .await
        .unwrap();
        assert_eq!(
            seen,
            [
                "fail_orphan:o0000",
                "fail_orphan:o0001",
                "fail_orphan:o0002",
                "rows done",
                "release_leaked_slot:leak",
                "end"
            ],
            "may stop early: {may_stop_early}"
        );
    }
    stage.sandbox.clear_redis().await.unwrap();
}

#[tokio::test]
async fn the_row_pass_ends_before_the_slot_pass_on_sqlite() {
    the_row_pass_ends_before_the_slot_pass(Kind::Sqlite).await;
}

#[tokio::test]
async fn the_row_pass_ends_before_the_slot_pass_on_postgres() {
    the_row_pass_ends_before_the_slot_pass(Kind::Postgres).await;
}

#[tokio::test]
async fn no_pass_resumes_past_jobs_its_push_deferred_on_sqlite() {
    no_pass_resumes_past_jobs_its_push_deferred(Kind::Sqlite).await;
}

#[tokio::test]
async fn no_pass_resumes_past_jobs_its_push_deferred_on_postgres() {
    no_pass_resumes_past_jobs_its_push_deferred(Kind::Postgres).await;
}

#[tokio::test]
async fn a_catch_up_pass_resumes_where_the_last_stopped_on_sqlite() {
    passes_resume_where_the_last_stopped(Kind::Sqlite).await;
}

#[tokio::test]
async fn a_catch_up_pass_resumes_where_the_last_stopped_on_postgres() {
    passes_resume_where_the_last_stopped(Kind::Postgres).await;
}
