//! Enqueue semantics against a real Redis: dedupe by deterministic id, the backlog cap,
//! recycling finished ids, leaving dead ones alone.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use janitor_core::{AgentName, CleanupJob, ExecutionId, JobKind, Status, JOB_VERSION};
use janitor_queue::{Queue, QueueSettings};
use janitor_testkit::{redis_url, unique};
use proptest::prelude::*;

async fn queue(cap: u64) -> (Queue, redis::aio::ConnectionManager) {
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let settings = QueueSettings {
        name: format!("jt{}:queue", unique()),
        backlog_cap: cap,
        ..QueueSettings::default()
    };
    (Queue::new(conn.clone(), settings), conn)
}

fn job(i: usize) -> CleanupJob {
    CleanupJob {
        version: JOB_VERSION,
        kind: JobKind::FinalizeSkipped,
        agent: AgentName::parse("agent").unwrap(),
        execution_id: ExecutionId::parse(format!("e{i}")).unwrap(),
        observed_score: None,
        deadline: None,
        observed_status: Some(Status::Skipped),
        redrive_of: None,
    }
}

#[tokio::test]
async fn the_backlog_cap_defers_what_does_not_fit() {
    let (q, _) = queue(10).await;
    let jobs: Vec<_> = (0..30).map(job).collect();
    let first = q.enqueue(&jobs, Duration::ZERO).await.unwrap();
    assert_eq!((first.enqueued, first.deferred), (10, 20));
    assert_eq!(q.backlog().await.unwrap(), 10);
    // The next sweep finds the queued ten already there and still no room for the rest.
    let second = q.enqueue(&jobs, Duration::ZERO).await.unwrap();
    assert_eq!(
        (second.enqueued, second.already_queued, second.deferred),
        (0, 10, 20)
    );
}

#[tokio::test]
async fn finished_ids_are_recycled_and_dead_ones_left_alone() {
    let (q, mut conn) = queue(100).await;
    let jobs: Vec<_> = (0..3).map(job).collect();
    q.enqueue(&jobs, Duration::ZERO).await.unwrap();
    // Pretend a worker finished e0 and gave up on e1.
    let (done, dead) = (jobs[0].task_id(), jobs[1].task_id());
    redis::pipe()
        .cmd("ZREM")
        .arg(q.keys().scheduled())
        .arg(&done)
        .arg(&dead)
        .ignore()
        .cmd("SADD")
        .arg(q.keys().done())
        .arg(&done)
        .ignore()
        .cmd("SADD")
        .arg(q.keys().dead())
        .arg(&dead)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    // It died just now (the library records when): within the re-drive cool-off.
    kill(&q, &mut conn, &dead, 0).await;
    let again = q.enqueue(&jobs, Duration::ZERO).await.unwrap();
    assert_eq!(
        (
            again.enqueued,
            again.recycled,
            again.dead,
            again.already_queued
        ),
        (1, 1, 1, 1)
    );
    let still_done: bool = redis::cmd("SISMEMBER")
        .arg(q.keys().done())
        .arg(&done)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!still_done, "a recycled id is pending again, not done");
}

/// The ids in the queue's active list, in order.
async fn active_ids(q: &Queue, conn: &mut redis::aio::ConnectionManager) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(q.keys().active())
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn delayed_jobs_wait_and_promotion_moves_only_due_ones() {
    let (q, mut conn) = queue(100).await;
    q.enqueue(&[job(0)], Duration::from_secs(600))
        .await
        .unwrap();
    q.enqueue(&[job(1)], Duration::ZERO).await.unwrap();
    assert_eq!(q.promote_due().await.unwrap(), 1);
    assert_eq!(active_ids(&q, &mut conn).await, vec![job(1).task_id()]);
    assert!(!q.is_idle().await.unwrap(), "an active job is waiting");
}

#[tokio::test]
async fn a_worker_promotes_only_when_something_is_due_and_counts_what_waits() {
    let (q, mut conn) = queue(100).await;
    // Nothing scheduled: two plain commands, nothing promoted, nothing waits.
    assert_eq!(q.promote_scheduled().await.unwrap(), 0);
    q.enqueue(&[job(0)], Duration::from_secs(600))
        .await
        .unwrap();
    // Scheduled but not due: nothing waits yet.
    assert_eq!(q.promote_scheduled().await.unwrap(), 0);
    q.enqueue(&[job(1)], Duration::ZERO).await.unwrap();
    assert_eq!(q.promote_scheduled().await.unwrap(), 1);
    assert_eq!(active_ids(&q, &mut conn).await, vec![job(1).task_id()]);
    // Promoted, not fetched yet: it still waits.
    assert_eq!(q.promote_scheduled().await.unwrap(), 1);
}

proptest! {
    /// apalis-redis defect 4: a task id that parses as a number breaks lease acquisition.
    #[test]
    fn task_ids_are_never_numeric(agent in "[0-9a-z:/ ]{1,12}", exec in "[0-9]{1,12}", score in 0.0f64..2e9) {
        let mut j = job(0);
        j.agent = AgentName::parse(agent).unwrap();
        j.execution_id = ExecutionId::parse(exec).unwrap();
        for kind in JobKind::ALL {
            j.kind = kind;
            j.observed_score = Some(score);
            let id = j.task_id();
            prop_assert!(id.parse::<u64>().is_err() && id.parse::<f64>().is_err(), "{}", id);
        }
    }
}

/// Safety issue item 6: "already queued" was decided by the payload existing, so an id left
/// in no set (a re-drive cut off between its two pipelines) was "already queued" forever and
/// its work never done. Membership in the scheduled/active/in-flight sets decides now.
#[tokio::test]
async fn an_id_stranded_in_no_set_is_enqueued_again() {
    let (q, mut conn) = queue(100).await;
    let jobs = vec![job(0)];
    assert_eq!(q.enqueue(&jobs, Duration::ZERO).await.unwrap().enqueued, 1);
    assert_eq!(
        q.enqueue(&jobs, Duration::ZERO)
            .await
            .unwrap()
            .already_queued,
        1
    );
    // Out of every set, payload still stored.
    redis::cmd("ZREM")
        .arg(q.keys().scheduled())
        .arg(jobs[0].task_id())
        .exec_async(&mut conn)
        .await
        .unwrap();
    let again = q.enqueue(&jobs, Duration::ZERO).await.unwrap();
    assert_eq!(
        (again.enqueued, again.recycled, again.already_queued),
        (1, 1, 0)
    );
    let scheduled: Option<f64> = redis::cmd("ZSCORE")
        .arg(q.keys().scheduled())
        .arg(jobs[0].task_id())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(scheduled.is_some());
}

/// Safety issue item 6: the backlog cap counted every scheduled id, so skip-time jobs due
/// later (and retries backing off) filled it and every sweep job was deferred.
#[tokio::test]
async fn future_jobs_do_not_fill_the_backlog_cap() {
    let (q, _) = queue(10).await;
    let later: Vec<_> = (0..10).map(job).collect();
    assert_eq!(
        q.enqueue(&later, Duration::from_secs(600))
            .await
            .unwrap()
            .enqueued,
        10
    );
    assert_eq!(q.backlog().await.unwrap(), 0);
    let now: Vec<_> = (10..15).map(job).collect();
    let report = q.enqueue(&now, Duration::ZERO).await.unwrap();
    assert_eq!((report.enqueued, report.deferred), (5, 0));
}

/// Leaves `id` dead as the library does, finished `ago` seconds ago.
async fn kill(q: &Queue, conn: &mut redis::aio::ConnectionManager, id: &str, ago: u64) {
    let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    redis::pipe()
        .cmd("ZREM")
        .arg(q.keys().scheduled())
        .arg(id)
        .cmd("SADD")
        .arg(q.keys().dead())
        .arg(id)
        .cmd("HSET")
        .arg(q.keys().meta(id))
        .arg("done_at")
        .arg(secs - ago)
        .exec_async(conn)
        .await
        .unwrap();
}

/// Safety issue item 3: once a job went dead (say, through an outage) every later sweep
/// reported "dead 1" and enqueued nothing: the run stayed stuck until an operator acted.
/// Work the sweep still finds needed is enqueued again after the cool-off, under a new id
/// that links to the dead copy (which stays for operators).
#[tokio::test]
async fn dead_work_is_redriven_after_its_cool_off_under_a_new_id() {
    let (q, mut conn) = queue(100).await;
    let job = job(0);
    let base = job.task_id();
    q.enqueue(std::slice::from_ref(&job), Duration::ZERO)
        .await
        .unwrap();
    // Died just now: within the cool-off (default 300 s), left alone.
    kill(&q, &mut conn, &base, 0).await;
    let fresh = q
        .enqueue(std::slice::from_ref(&job), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((fresh.dead, fresh.enqueued, fresh.redriven), (1, 0, 0));
    // Died long ago: re-driven as `~r1`, linked to the dead copy.
    kill(&q, &mut conn, &base, 301).await;
    let again = q
        .enqueue(std::slice::from_ref(&job), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((again.dead, again.enqueued, again.redriven), (0, 1, 1));
    let first = format!("{base}~r1");
    let payload = q.payload(&first).await.unwrap().unwrap();
    assert_eq!(payload.redrive_of.as_deref(), Some(base.as_str()));
    assert_eq!(
        q.show(&base).await.unwrap().unwrap().state,
        janitor_queue::JobState::Dead
    );
    // While the re-drive is queued, nothing more is pushed.
    let queued = q
        .enqueue(std::slice::from_ref(&job), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((queued.already_queued, queued.enqueued), (1, 0));
    // The re-drive dies too: its own cool-off, then `~r2`.
    kill(&q, &mut conn, &first, 0).await;
    assert_eq!(
        q.enqueue(std::slice::from_ref(&job), Duration::ZERO)
            .await
            .unwrap()
            .dead,
        1
    );
    kill(&q, &mut conn, &first, 400).await;
    let third = q
        .enqueue(std::slice::from_ref(&job), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(third.redriven, 1);
    assert!(q.payload(&format!("{base}~r2")).await.unwrap().is_some());
}

/// Every place an id can be in, as `classify` names it: the answers the payload-first
/// script must keep (the old script gave the same ones; what it saves is Redis time, which
/// the README's catch-up figures measure, not this test).
#[tokio::test]
async fn classify_names_every_place_an_id_can_be() {
    use janitor_queue::Existing;
    let (q, mut conn) = queue(100).await;
    let k = q.keys();
    let ids: Vec<String> = [
        "new",
        "scheduled",
        "active",
        "in-flight",
        "dead",
        "dead-unstored",
        "done",
        "done-unstored",
        "stranded",
        "in-flight-elsewhere",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut pipe = redis::pipe();
    for id in &ids[1..] {
        if !id.ends_with("-unstored") {
            pipe.cmd("HSET").arg(k.data()).arg(id).arg("{}").ignore();
        }
    }
    pipe.cmd("ZADD")
        .arg(k.scheduled())
        .arg(1)
        .arg("scheduled")
        .ignore();
    pipe.cmd("RPUSH").arg(k.active()).arg("active").ignore();
    pipe.cmd("ZADD")
        .arg(k.workers())
        .arg(1)
        .arg("w1")
        .arg(2)
        .arg("w2")
        .ignore();
    pipe.cmd("SADD")
        .arg(k.inflight("w1"))
        .arg("in-flight")
        .ignore();
    pipe.cmd("SADD")
        .arg(k.inflight("w2"))
        .arg("in-flight-elsewhere")
        .ignore();
    pipe.cmd("SADD")
        .arg(k.dead())
        .arg("dead")
        .arg("dead-unstored")
        .ignore();
    pipe.cmd("SADD")
        .arg(k.done())
        .arg("done")
        .arg("done-unstored")
        .ignore();
    pipe.query_async::<()>(&mut conn).await.unwrap();
    let found = q.classify(&ids).await.unwrap();
    use Existing::*;
    assert_eq!(
        found,
        [New, Queued, Queued, Queued, Dead, Dead, Done, Done, Stranded, Queued]
    );
    // Only new ids: the same answers without a payload anywhere.
    let fresh: Vec<String> = (0..3).map(|i| format!("fresh{i}")).collect();
    assert_eq!(q.classify(&fresh).await.unwrap(), [New, New, New]);
}

/// janitor's push (`push.lua`) stores a task as the library's own push does: the payload,
/// every meta field a fetch reads, and the id in the schedule at its due time (now, or
/// later for a delayed push).
#[tokio::test]
async fn a_push_stores_what_the_librarys_push_stores() {
    use std::collections::HashMap;
    let (ours, conn) = queue(100).await;
    let (theirs, _) = queue(100).await;
    let (now, later) = (job(0), job(1));
    let delay = Duration::from_secs(600);
    ours.enqueue(std::slice::from_ref(&now), Duration::ZERO)
        .await
        .unwrap();
    ours.enqueue(std::slice::from_ref(&later), delay)
        .await
        .unwrap();
    let tasks: Vec<_> = [(&now, Duration::ZERO), (&later, delay)]
        .iter()
        .map(|(j, after)| {
            apalis_core::task::builder::TaskBuilder::new(serde_json::to_vec(j).unwrap())
                .task_id(apalis_core::task::task_id::TaskId::from_string(j.task_id()))
                .run_after(*after)
                .build()
        })
        .collect();
    apalis_redis::queries::push_tasks(&mut conn.clone(), theirs.config(), &tasks)
        .await
        .unwrap();
    for j in [&now, &later] {
        let id = j.task_id();
        let read = |q: &Queue| {
            let mut conn = conn.clone();
            let (meta, data, scheduled) =
                (q.keys().meta(&id), q.keys().data(), q.keys().scheduled());
            let id = id.clone();
            async move {
                let meta: HashMap<String, String> = redis::cmd("HGETALL")
                    .arg(meta)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let payload: Vec<u8> = redis::cmd("HGET")
                    .arg(data)
                    .arg(&id)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let due: Option<u64> = redis::cmd("ZSCORE")
                    .arg(scheduled)
                    .arg(&id)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                (meta, payload, due)
            }
        };
        let ((meta, payload, due), (their_meta, their_payload, their_due)) =
            (read(&ours).await, read(&theirs).await);
        assert!(!meta.is_empty(), "{id}: no meta");
        assert_eq!((meta, payload), (their_meta, their_payload), "{id}");
        // Due at the same second, give or take the moment between the two pushes.
        let (due, their_due) = (due.unwrap(), their_due.unwrap());
        assert!(
            due.abs_diff(their_due) <= 1,
            "{id}: due {due} vs {their_due}"
        );
    }
}
