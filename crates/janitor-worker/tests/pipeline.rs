//! Jobs through the real queue: enqueue, apalis workers, exit when idle.
#![allow(clippy::unwrap_used)]

mod common;

use common::World;

use std::time::Duration;

use janitor_core::{AgentName, CleanupJob, ExecutionId};
use janitor_testkit::{ts_ago, Kind};
use janitor_worker::{runner, WorkerOptions};

#[tokio::test]
async fn enqueued_jobs_are_applied_and_the_worker_exits_when_idle() {
    let w = World::new(Kind::Sqlite).await;
    let now = w.sandbox.redis_now().await.unwrap();
    let mut jobs = Vec::new();
    for i in 0..20 {
        let id = format!("e{i}");
        w.sandbox
            .seed_slot("agent/q", &id, 7200.0, Some(600))
            .await
            .unwrap();
        w.sandbox
            .seed_run(
                &id,
                "agent/q",
                "running",
                &ts_ago(now, 7200.0, "naive"),
                Some("dispatched"),
            )
            .await
            .unwrap();
        jobs.push(w.job("agent/q", &id).await);
    }
    let report = w.queue.enqueue(&jobs, Duration::ZERO).await.unwrap();
    assert_eq!(report.enqueued, 20);
    // A second sweep's push of the same jobs adds nothing.
    let again = w.queue.enqueue(&jobs, Duration::ZERO).await.unwrap();
    assert_eq!((again.enqueued, again.already_queued), (0, 20));

    let tally = w.work("w1").await;
    let reclaim = tally.kinds["reclaim_slot"];
    assert_eq!(
        (
            reclaim.applied,
            reclaim.slots_reclaimed,
            reclaim.runs_failed
        ),
        (20, 20, 20)
    );
    assert!(w.sandbox.slot_members("agent/q").await.unwrap().is_empty());
    for i in 0..20 {
        assert_eq!(
            w.sandbox.status(&format!("e{i}")).await.unwrap().as_deref(),
            Some("failed")
        );
    }
    // A finished id whose work is needed again (say, the row was reset) is recycled.
    let after = w.queue.enqueue(&jobs[..1], Duration::ZERO).await.unwrap();
    assert_eq!(
        (after.enqueued, after.recycled),
        (1, 1),
        "finished ids are recycled when pushed again"
    );
}

#[tokio::test]
async fn a_malformed_payload_is_dead_at_once_and_the_worker_survives() {
    let w = World::new(Kind::Sqlite).await;
    let now = w.sandbox.redis_now().await.unwrap();
    w.sandbox
        .seed_run("skip1", "a", "skipped", &ts_ago(now, 3600.0, "naive"), None)
        .await
        .unwrap();
    let good = w.job("a", "skip1").await;
    // Garbage bytes and a well-formed payload of an unknown version, pushed straight in.
    let mut conn = w.queue.connection();
    let bad = ["not json at all {", r#"{"version":99,"kind":"fail_run"}"#];
    let tasks: Vec<_> = bad
        .iter()
        .enumerate()
        .map(|(i, p)| {
            apalis_core::task::builder::TaskBuilder::new(p.as_bytes().to_vec())
                .task_id(apalis_core::task::task_id::TaskId::from_string(format!(
                    "bad:{i}"
                )))
                .build()
        })
        .collect();
    apalis_redis::queries::push_tasks(&mut conn, w.queue.config(), &tasks)
        .await
        .unwrap();
    w.queue.enqueue(&[good], Duration::ZERO).await.unwrap();

    let tally = w.work("w1").await;
    assert_eq!(tally.malformed, 2);
    assert_eq!(
        tally.restarts, 0,
        "a bad payload must not end the worker's stream"
    );
    assert_eq!(tally.kinds["finalize_skipped"].runs_cancelled, 1);
    assert_eq!(
        w.sandbox.status("skip1").await.unwrap().as_deref(),
        Some("cancelled")
    );
    // Both are in the dead set with their raw payload kept and the reason recorded.
    let keys = w.queue.keys();
    for (i, payload) in bad.iter().enumerate() {
        let id = format!("bad:{i}");
        let dead: bool = redis::cmd("SISMEMBER")
            .arg(keys.dead())
            .arg(&id)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(dead, "{id} not dead");
        let kept: Vec<u8> = redis::cmd("HGET")
            .arg(keys.data())
            .arg(&id)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(kept, payload.as_bytes());
        let result: String = redis::cmd("HGET")
            .arg(keys.meta(&id))
            .arg("result")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(result.contains("malformed job payload"), "{result}");
    }
}

/// apalis-redis defect 1: with ≳8,000 due ids, `fetch_next.lua` fails on every fetch and all
/// workers exit. The bounded promotion guard keeps the library under that limit.
#[tokio::test]
async fn nine_thousand_due_jobs_do_not_wedge_the_workers() {
    let w = World::new(Kind::Sqlite).await;
    let mut conn = w.queue.connection();
    // Pushed straight into the library, past janitor's own backlog cap.
    for chunk in 0..18 {
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let job = CleanupJob {
                    version: janitor_core::JOB_VERSION,
                    kind: janitor_core::JobKind::FinalizeSkipped,
                    agent: AgentName::parse("nobody").unwrap(),
                    execution_id: ExecutionId::parse(format!("gone{chunk}_{i}")).unwrap(),
                    observed_score: None,
                    deadline: None,
                    observed_status: Some(janitor_core::Status::Skipped),
                    redrive_of: None,
                };
                apalis_core::task::builder::TaskBuilder::new(serde_json::to_vec(&job).unwrap())
                    .task_id(apalis_core::task::task_id::TaskId::from_string(
                        job.task_id(),
                    ))
                    .build()
            })
            .collect();
        apalis_redis::queries::push_tasks(&mut conn, w.queue.config(), &tasks)
            .await
            .unwrap();
    }
    let scheduled: u64 = redis::cmd("ZCARD")
        .arg(w.queue.keys().scheduled())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(scheduled, 9_000);

    let tally = w.work("w1").await;
    assert_eq!(
        tally.restarts, 0,
        "the library wedged and the worker had to restart"
    );
    assert_eq!(tally.kinds["finalize_skipped"].no_longer_needed, 9_000);
    let done: u64 = redis::cmd("SCARD")
        .arg(w.queue.keys().done())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(done, 9_000);
}

/// apalis-redis defect 6: `max_attempts` is ignored (hard-coded 25). janitor enforces its own.
#[tokio::test]
async fn a_job_that_keeps_failing_is_dead_after_max_attempts_with_its_reason() {
    let w = World::new(Kind::Sqlite).await;
    w.seed_orphan("a", "o1").await;
    let job = w.job("a", "o1").await;
    // Every write to the table now fails, as a broken database would.
    w.sandbox
        .sql("CREATE TRIGGER boom BEFORE UPDATE ON schedule_executions BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;")
        .await
        .unwrap();
    w.queue
        .enqueue(std::slice::from_ref(&job), Duration::ZERO)
        .await
        .unwrap();

    let applier = w.applier("w-cap");
    let options = WorkerOptions {
        exit_when_idle: true,
        max_attempts: 2,
        ..WorkerOptions::default()
    };
    let mut conn = w.queue.connection();
    let id = job.task_id();
    let started = std::time::Instant::now();
    let mut errors = 0;
    // The library schedules a retry a second or two later; a batch run exits while nothing
    // is due, so run batches until the job is dead.
    loop {
        let tally = runner::run(
            applier.clone(),
            w.queue.clone(),
            options.clone(),
            std::future::pending(),
        )
        .await;
        errors += tally.kinds.get("fail_run").map_or(0, |k| k.errors);
        let dead: bool = redis::cmd("SISMEMBER")
            .arg(w.queue.keys().dead())
            .arg(&id)
            .query_async(&mut conn)
            .await
            .unwrap();
        if dead {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never went dead"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(errors, 2, "one failed delivery, then dead on the second");
    let result: String = redis::cmd("HGET")
        .arg(w.queue.keys().meta(&id))
        .arg("result")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        result.contains("gave up after 2 attempts") && result.contains("disk on fire"),
        "{result}"
    );
    assert_eq!(
        w.sandbox.status("o1").await.unwrap().as_deref(),
        Some("running")
    );
}

/// Safety issue item 3: a job that failed on a database outage went dead after
/// `max_attempts` deliveries (about 15 s by default) and its run stayed `running` for good.
/// Transient errors no longer count: the job outlives an outage longer than that budget and
/// the run is failed once the database is writable again, with no operator.
#[tokio::test]
async fn a_database_outage_longer_than_the_attempt_budget_heals_by_itself() {
    let w = World::new(Kind::Postgres).await;
    w.seed_orphan("a", "o1").await;
    let job = w.job("a", "o1").await;
    w.queue
        .enqueue(std::slice::from_ref(&job), Duration::ZERO)
        .await
        .unwrap();
    let name = w.sandbox.db.url.rsplit('/').next().unwrap().to_owned();
    let admin = janitor_testkit::pg_admin_url();
    // Read-only for new transactions, janitor's sessions cut: what a failover looks like.
    let outage = |read_only: &str| {
        format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = {read_only}; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid();"
        )
    };
    janitor_testkit::run_sql(Kind::Postgres, &admin, &outage("on"))
        .await
        .unwrap();

    let applier = w.applier("w-outage");
    let options = WorkerOptions {
        max_attempts: 2,
        tries_per_attempt: 1,
        concurrency: 2,
        ..WorkerOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(runner::run(applier, w.queue.clone(), options, async {
        let _ = stopped.await;
    }));
    let id = job.task_id();
    let mut conn = w.queue.connection();
    // Past the old budget: more failed deliveries than max_attempts, and not dead.
    janitor_testkit::eventually("four failed deliveries", Duration::from_secs(60), || {
        let (mut conn, meta) = (conn.clone(), w.queue.keys().meta(&id));
        async move {
            let attempts: Option<u64> = redis::cmd("HGET")
                .arg(meta)
                .arg("attempts")
                .query_async(&mut conn)
                .await
                .unwrap();
            attempts.unwrap_or(0) >= 4
        }
    })
    .await;
    let dead: bool = redis::cmd("SISMEMBER")
        .arg(w.queue.keys().dead())
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!dead, "an outage made the job dead");
    assert_eq!(
        w.sandbox.status("o1").await.unwrap().as_deref(),
        Some("running")
    );

    janitor_testkit::run_sql(Kind::Postgres, &admin, &outage("off"))
        .await
        .unwrap();
    janitor_testkit::eventually("the run to be failed", Duration::from_secs(60), || async {
        w.sandbox.status("o1").await.unwrap().as_deref() == Some("failed")
    })
    .await;
    stop.send(()).unwrap();
    let tally = worker.await.unwrap();
    let fail = tally.kinds["fail_run"];
    assert_eq!((fail.applied, fail.dead), (1, 0), "{tally:?}");
    assert_eq!(w.audit_count("run_failed").await, 1);
}

/// Seeds `n` orphans `o0…` of agent "a" and enqueues their jobs.
async fn enqueue_orphans(w: &World, n: usize) -> Vec<CleanupJob> {
    let mut jobs = Vec::new();
    for i in 0..n {
        w.seed_orphan("a", &format!("o{i}")).await;
        jobs.push(w.job("a", &format!("o{i}")).await);
    }
    w.queue.enqueue(&jobs, Duration::ZERO).await.unwrap();
    jobs
}

/// Safety issue item 3: one failing job failed its whole batch, and every neighbour lost a
/// delivery (with one attempt allowed: went dead). A failed batch is now split and each job
/// applied on its own first.
#[tokio::test]
async fn one_poisoned_job_does_not_fail_its_batch() {
    let w = World::new(Kind::Sqlite).await;
    let jobs = enqueue_orphans(&w, 30).await;
    // Only o7's write fails, and not transiently.
    w.sandbox
        .sql("CREATE TRIGGER boom BEFORE UPDATE ON schedule_executions WHEN OLD.id = 'o7' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;")
        .await
        .unwrap();
    let applier = w.applier("w-split");
    let options = WorkerOptions {
        exit_when_idle: true,
        max_attempts: 1,
        concurrency: 64,
        ..WorkerOptions::default()
    };
    let tally = runner::run(applier, w.queue.clone(), options, std::future::pending()).await;
    let fail = tally.kinds["fail_run"];
    assert_eq!((fail.applied, fail.dead), (29, 1), "{tally:?}");
    for job in &jobs {
        let want = if job.execution_id.as_str() == "o7" {
            "running"
        } else {
            "failed"
        };
        assert_eq!(
            w.sandbox
                .status(job.execution_id.as_str())
                .await
                .unwrap()
                .as_deref(),
            Some(want)
        );
    }
}

/// Safety issue item 6: a panic while applying killed the worker's batch task; the worker
/// kept fetching and failed every job from then on. The panic now fails its batch only.
#[tokio::test]
async fn a_panic_while_applying_fails_one_batch_and_the_worker_goes_on() {
    let w = World::new(Kind::Sqlite).await;
    enqueue_orphans(&w, 10).await;
    let panics = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = panics.clone();
    let hook: janitor_worker::Hook = std::sync::Arc::new(move || {
        let first = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        Box::pin(async move {
            assert!(!first, "injected panic");
        })
    });
    let applier = w.applier("w-panic").with_before_write(hook);
    let options = WorkerOptions {
        exit_when_idle: true,
        max_attempts: 3,
        concurrency: 16,
        ..WorkerOptions::default()
    };
    let tally = runner::run(applier, w.queue.clone(), options, std::future::pending()).await;
    let fail = tally.kinds["fail_run"];
    assert_eq!((fail.applied, fail.dead), (10, 0), "{tally:?}");
    assert!(panics.load(std::sync::atomic::Ordering::SeqCst) > 1);
}

/// Waits until `done` holds, checking every 20 ms, for at most `limit`.
async fn until<F, Fut>(limit: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A worker of concurrency 4 on `queue`, running until the sender is used.
fn spawn_worker(
    w: &World,
    queue: &janitor_queue::Queue,
    name: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<runner::Tally>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(runner::run(
        w.applier(name),
        queue.clone(),
        WorkerOptions {
            concurrency: 4,
            ..WorkerOptions::default()
        },
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, worker)
}

#[tokio::test]
async fn an_idle_worker_polls_slowly_yet_picks_up_pushes_at_once_from_any_process() {
    let w = World::new(Kind::Sqlite).await;
    // A worker that checks the queue every 5 s once idle and fetches unprompted every 20 s
    // (and whose heartbeat, which also makes the library fetch, comes once a minute):
    // within the test's limits only a wake-up, by a push of its own process or by its
    // check of the queue, can make it fetch.
    let idle = Duration::from_secs(5);
    let settings = janitor_queue::QueueSettings {
        idle_poll_interval: idle,
        heartbeat_interval: Duration::from_secs(60),
        ..w.queue.settings().clone()
    };
    let queue = janitor_queue::Queue::new(w.queue.connection(), settings);
    for id in ["first", "second", "third"] {
        w.seed_dead_run("agent/p", id, "naive").await;
    }
    // The first job is pushed by "another process" (a queue of its own) before the worker
    // starts: its first poll fetches it.
    let first = w.job("agent/p", "first").await;
    w.queue.enqueue(&[first], Duration::ZERO).await.unwrap();
    let (stop, worker) = spawn_worker(&w, &queue, "w-paced");
    let failed = |id: &'static str| {
        let sandbox = &w.sandbox;
        move || async move { sandbox.status(id).await.unwrap().as_deref() == Some("failed") }
    };
    assert!(until(Duration::from_secs(30), failed("first")).await);
    // Then idle (the quick polls after the job end within a few hundred milliseconds).
    assert!(
        until(Duration::from_secs(10), || async {
            queue.pacer().interval() == idle
        })
        .await
    );
    // A push by another process (a queue of its own, which cannot wake this worker
    // directly): the worker's check of the queue finds it and fetches at once.
    let second = w.job("agent/p", "second").await;
    let pushed = w.queue.enqueue(&[second], Duration::ZERO).await.unwrap();
    assert_eq!(pushed.enqueued, 1);
    assert!(
        until(idle * 2, failed("second")).await,
        "an idle worker did not pick up another process's push"
    );
    assert!(
        until(Duration::from_secs(10), || async {
            queue.pacer().interval() == idle
        })
        .await
    );
    // A push through this process's queue wakes it directly, long before its next check.
    let third = w.job("agent/p", "third").await;
    let pushed = queue.enqueue(&[third], Duration::ZERO).await.unwrap();
    assert_eq!(pushed.enqueued, 1);
    assert!(
        until(idle / 2, failed("third")).await,
        "an idle worker did not pick up its own process's push"
    );
    stop.send(()).unwrap();
    let tally = worker.await.unwrap();
    assert_eq!(tally.kinds["reclaim_slot"].applied, 3);
}

/// Counts commands on one queue's keys from Redis' `MONITOR`: the library's `fetch_next`
/// script (its first two keys are the queue's workers set and its active list, which no
/// other script passes in that order) and the worker's check of the queue (`ZCOUNT` of its
/// scheduled set).
struct CommandCounter {
    marker: String,
    count: tokio::task::JoinHandle<Counts>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    fetches: usize,
    checks: usize,
}

impl CommandCounter {
    async fn start(queue: &janitor_queue::Queue) -> Self {
        use futures::StreamExt;
        let client = redis::Client::open(janitor_testkit::redis_url()).unwrap();
        // Every command after MONITOR's answer is reported.
        let monitor = client.get_async_monitor().await.unwrap();
        let config = queue.config();
        let fetch = format!(
            "\"{}\" \"{}\"",
            config.workers_set(),
            config.active_jobs_list()
        );
        let check = format!("\"ZCOUNT\" \"{}\"", queue.keys().scheduled());
        let marker = format!("command-counter-{}", janitor_testkit::unique());
        let end = marker.clone();
        let mut lines = monitor.into_on_message::<String>();
        let count = tokio::spawn(async move {
            let mut counts = Counts::default();
            while let Some(line) = lines.next().await {
                if line.contains(&end) {
                    break;
                }
                counts.fetches += usize::from(line.contains(&fetch));
                counts.checks += usize::from(line.contains(&check));
            }
            counts
        });
        Self { marker, count }
    }

    /// The commands seen so far (every command before this call has been reported).
    async fn stop(self) -> Counts {
        let client = redis::Client::open(janitor_testkit::redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: String = redis::cmd("ECHO")
            .arg(&self.marker)
            .query_async(&mut conn)
            .await
            .unwrap();
        self.count.await.unwrap()
    }
}

/// The library fetched whenever anything woke the worker's task, not only when the poll
/// strategy asked: `tend`'s ticks every `poll_interval` (it runs in the same task), their
/// Redis replies, a job's progress, the heartbeat. An idle worker fetched about 20 times a
/// second where its pace allows 4, and the steady state 30 where it allows 8: each a
/// script run in Redis. And `tend` itself checked the queue every `poll_interval`, busy or
/// idle: 20 round trips a second from an idle worker. Now the check follows the pace, and a
/// fetch happens only when a check or a push finds work, when the library's buffer ran
/// dry while jobs flow, to finish one already sent, or once per fallback interval.
#[tokio::test]
async fn the_worker_fetches_only_when_its_pace_or_a_push_asks() {
    let w = World::new(Kind::Sqlite).await;
    // Checks every 50 ms while jobs flow, every 500 ms once idle; an unprompted fetch
    // every 2 s; a heartbeat a minute apart.
    let idle = Duration::from_millis(500);
    let settings = janitor_queue::QueueSettings {
        batch_size: 4,
        idle_poll_interval: idle,
        heartbeat_interval: Duration::from_secs(60),
        ..w.queue.settings().clone()
    };
    let queue = janitor_queue::Queue::new(w.queue.connection(), settings);
    let jobs = 32;
    let mut batch = Vec::new();
    for i in 0..jobs {
        w.seed_orphan("a", &format!("o{i}")).await;
        batch.push(w.job("a", &format!("o{i}")).await);
    }
    let counter = CommandCounter::start(&queue).await;
    let started = tokio::time::Instant::now();
    let (stop, worker) = spawn_worker(&w, &queue, "w-fetches");
    // While jobs flow: pushed through the worker's own queue (one wake-up), fetched 4 at a
    // time.
    queue.enqueue(&batch, Duration::ZERO).await.unwrap();
    let done = || async { w.audit_count("run_failed").await == jobs as i64 };
    assert!(until(Duration::from_secs(30), done).await);
    assert!(
        until(Duration::from_secs(10), || async {
            queue.pacer().interval() == idle
        })
        .await
    );
    let busy = started.elapsed();
    let flowing = counter.stop().await.fetches;
    // Each batch of 4 is a fetch, plus the empty one that finds the queue drained after
    // it; the start, the wake-up and each quick check that finds jobs waiting one each.
    let allowed = 2 * jobs / 4 + (busy.as_millis() / 50) as usize + 2;
    assert!(
        (jobs / 4..=allowed).contains(&flowing),
        "{flowing} fetches for {jobs} jobs in {busy:?} (at least {}, at most {allowed})",
        jobs / 4
    );
    // Idle for two seconds: `tend` checks the queue every 500 ms and finds nothing, and the
    // worker fetches at most once unprompted (after the quick check that may have been
    // scheduled just before it turned idle).
    let counter = CommandCounter::start(&queue).await;
    let window = Duration::from_secs(2);
    tokio::time::sleep(window).await;
    let idle_counts = counter.stop().await;
    assert!(
        idle_counts.fetches <= 1,
        "an idle worker fetched {} times in {window:?}",
        idle_counts.fetches
    );
    let checks = (window.as_millis() / idle.as_millis()) as usize + 1;
    assert!(
        (1..=checks).contains(&idle_counts.checks),
        "an idle worker checked the queue {} times in {window:?} (at least 1, at most {checks})",
        idle_counts.checks
    );
    stop.send(()).unwrap();
    let tally = worker.await.unwrap();
    assert_eq!(tally.kinds["fail_run"].applied, jobs as u64, "{tally:?}");
}
