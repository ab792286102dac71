//! Queue inspection and re-drive against a real Redis, with jobs put in each state the way
//! the library leaves them.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use janitor_core::{AgentName, CleanupJob, ExecutionId, JobKind, Status, JOB_VERSION};
use janitor_queue::{JobState, Queue, QueueSettings, RetryOutcome};
use janitor_testkit::{redis_url, unique};

async fn queue() -> (Queue, redis::aio::ConnectionManager) {
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let settings = QueueSettings {
        name: format!("jt{}:queue", unique()),
        ..QueueSettings::default()
    };
    (Queue::new(conn.clone(), settings), conn)
}

fn job(kind: JobKind, i: usize) -> CleanupJob {
    CleanupJob {
        version: JOB_VERSION,
        kind,
        agent: AgentName::parse("agent").unwrap(),
        execution_id: ExecutionId::parse(format!("e{i}")).unwrap(),
        observed_score: None,
        deadline: None,
        observed_status: Some(Status::Running),
        redrive_of: None,
    }
}

/// As the library's `handle_results.lua` leaves a job: out of the scheduled set, into
/// `done` or `dead`, with its attempts and last error in the meta hash.
async fn finish(
    q: &Queue,
    conn: &mut redis::aio::ConnectionManager,
    id: &str,
    set: &str,
    attempts: u64,
) {
    redis::pipe()
        .cmd("ZREM")
        .arg(q.keys().scheduled())
        .arg(id)
        .cmd("SADD")
        .arg(set)
        .arg(id)
        .cmd("HSET")
        .arg(q.keys().meta(id))
        .arg("attempts")
        .arg(attempts)
        .arg("status")
        .arg("Failed")
        .arg("result")
        .arg("gave up after 5 attempts: database unavailable")
        .exec_async(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn stats_count_every_state_and_dead_jobs_are_re_driven_once() {
    let (q, mut conn) = queue().await;
    let jobs = [
        job(JobKind::FailRun, 0),
        job(JobKind::FailRun, 1),
        job(JobKind::FinalizeSkipped, 2),
        job(JobKind::FinalizeSkipped, 3),
        job(JobKind::FailRun, 4),
    ];
    q.enqueue(&jobs, Duration::ZERO).await.unwrap();
    q.enqueue(
        &[job(JobKind::FinalizeSkipped, 5)],
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let ids: Vec<String> = jobs.iter().map(CleanupJob::task_id).collect();
    finish(&q, &mut conn, &ids[0], &q.keys().done(), 1).await;
    finish(&q, &mut conn, &ids[1], &q.keys().dead(), 5).await;
    finish(&q, &mut conn, &ids[2], &q.keys().dead(), 5).await;
    // One delivery failed and the library scheduled it again.
    let _: () = redis::cmd("HSET")
        .arg(q.keys().meta(&ids[3]))
        .arg("attempts")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();

    let stats = q.stats().await.unwrap();
    assert_eq!(stats.scheduled_due, 2, "{stats:?}");
    assert_eq!(stats.scheduled_future, 1, "{stats:?}");
    assert_eq!(stats.retrying, 1, "{stats:?}");
    assert_eq!(
        (stats.dead, stats.done, stats.active),
        (2, 1, 0),
        "{stats:?}"
    );
    assert!(stats.oldest_due_age_secs.unwrap() >= 0.0);

    // Listings, by state and kind, followed to their end a page at a time.
    let all = |state: JobState, kind: Option<JobKind>| {
        let q = &q;
        async move {
            let mut ids = Vec::new();
            let mut cursor = 0;
            loop {
                let page = q.list(state, kind, cursor, 1).await.unwrap();
                ids.extend(
                    page.jobs
                        .into_iter()
                        .map(|j| (j.id, j.attempts, j.last_error)),
                );
                match page.next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            ids.sort();
            ids
        }
    };
    let dead = all(JobState::Dead, None).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead.iter().all(|(_, attempts, error)| *attempts == 5
        && error.as_deref() == Some("gave up after 5 attempts: database unavailable")));
    let dead_fail_runs = all(JobState::Dead, Some(JobKind::FailRun)).await;
    assert_eq!(dead_fail_runs.len(), 1);
    assert_eq!(dead_fail_runs[0].0, ids[1]);
    let retrying = all(JobState::Retrying, None).await;
    assert_eq!(retrying.iter().map(|r| &r.0).collect::<Vec<_>>(), [&ids[3]]);
    let scheduled = all(JobState::Scheduled, None).await;
    assert_eq!(
        scheduled.len(),
        2,
        "the due one and the delayed one: {scheduled:?}"
    );
    assert_eq!(all(JobState::Done, None).await.len(), 1);
    assert!(all(JobState::Active, None).await.is_empty());

    let shown = q.show(&ids[1]).await.unwrap().unwrap();
    assert_eq!(shown.state, JobState::Dead);
    assert_eq!(shown.job.as_ref().unwrap().kind, JobKind::FailRun);
    assert_eq!(
        q.show(&ids[3]).await.unwrap().unwrap().state,
        JobState::Retrying
    );
    assert_eq!(
        q.show(&ids[0]).await.unwrap().unwrap().state,
        JobState::Done
    );
    assert!(q.show("fail_run:nobody:nothing:-").await.unwrap().is_none());

    // One by id; again is a no-op.
    assert_eq!(
        q.retry_dead(&ids[1..2]).await.unwrap(),
        [RetryOutcome::Moved]
    );
    assert_eq!(
        q.retry_dead(&ids[1..2]).await.unwrap(),
        [RetryOutcome::NotDead]
    );
    let attempts: String = redis::cmd("HGET")
        .arg(q.keys().meta(&ids[1]))
        .arg("attempts")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(attempts, "0", "attempts reset");
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.dead, stats.scheduled_due), (1, 3), "{stats:?}");

    // By kind: the fail_run filter leaves the dead finalize_skipped job alone.
    assert!(q
        .retry_all_dead(Some(JobKind::FailRun))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(q.stats().await.unwrap().dead, 1);
    let all = q.retry_all_dead(None).await.unwrap();
    assert_eq!(all, [(ids[2].clone(), RetryOutcome::Moved)]);
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.dead, stats.scheduled_due), (0, 4), "{stats:?}");
    // The re-driven jobs are due and go to workers like any other.
    assert_eq!(q.promote_due().await.unwrap(), 4);
    assert_eq!(q.stats().await.unwrap().active, 4);
}

#[tokio::test]
async fn purge_deletes_only_old_finished_jobs_and_never_a_rescheduled_one() {
    let (q, mut conn) = queue().await;
    let jobs: Vec<_> = (0..5).map(|i| job(JobKind::FailRun, i)).collect();
    q.enqueue(&jobs, Duration::ZERO).await.unwrap();
    let ids: Vec<String> = jobs.iter().map(CleanupJob::task_id).collect();
    let (now, _): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let day = 86_400;
    for id in &ids {
        finish(&q, &mut conn, id, &q.keys().done(), 1).await;
    }
    // Finished 10 days ago, 10 days ago, 1 day ago; no finish time; old but scheduled again.
    let finished = [
        Some(now - 10 * day),
        Some(now - 10 * day),
        Some(now - day),
        None,
        Some(now - 10 * day),
    ];
    for (id, at) in ids.iter().zip(finished) {
        if let Some(at) = at {
            let _: () = redis::cmd("HSET")
                .arg(q.keys().meta(id))
                .arg("done_at")
                .arg(at)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    let _: () = redis::cmd("ZADD")
        .arg(q.keys().scheduled())
        .arg(now)
        .arg(&ids[4])
        .query_async(&mut conn)
        .await
        .unwrap();

    let report = q
        .purge(false, Duration::from_secs(7 * day as u64))
        .await
        .unwrap();
    assert_eq!(
        (
            report.purged,
            report.kept_recent,
            report.kept_undated,
            report.kept_scheduled
        ),
        (2, 1, 1, 1),
        "{report:?}"
    );
    for id in &ids[..2] {
        let (member, data, meta): (bool, bool, bool) = redis::pipe()
            .cmd("SISMEMBER")
            .arg(q.keys().done())
            .arg(id)
            .cmd("HEXISTS")
            .arg(q.keys().data())
            .arg(id)
            .cmd("EXISTS")
            .arg(q.keys().meta(id))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!member && !data && !meta, "{id} fully deleted");
    }
    assert_eq!(q.stats().await.unwrap().done, 3);
    // Again: nothing more is old enough; the dead set was never touched.
    assert_eq!(
        q.purge(false, Duration::from_secs(7 * day as u64))
            .await
            .unwrap()
            .purged,
        0
    );
    assert_eq!(
        q.purge(true, Duration::ZERO).await.unwrap(),
        Default::default()
    );
}

/// A cursor no listing ever handed out (the API takes any u64) is an empty page: never an
/// overflow (a panic that closed the connection, found by schemathesis) nor a negative
/// index that reads the list from its end.
#[tokio::test]
async fn a_cursor_past_every_list_is_an_empty_page() {
    let (q, _conn) = queue().await;
    let jobs: Vec<CleanupJob> = (0..3).map(|i| job(JobKind::FailRun, i)).collect();
    q.enqueue(&jobs, Duration::ZERO).await.unwrap();
    let first = q.list(JobState::Scheduled, None, 0, 500).await.unwrap();
    assert_eq!(first.jobs.len(), 3);
    for cursor in [
        3,
        i64::MAX as u64 - 1,
        i64::MAX as u64,
        i64::MAX as u64 + 1,
        u64::MAX,
    ] {
        for state in [JobState::Scheduled, JobState::Retrying, JobState::Active] {
            let page = q.list(state, None, cursor, 500).await.unwrap();
            assert!(page.jobs.is_empty(), "{state:?} at {cursor}: {page:?}");
            assert_eq!(page.next, None, "{state:?} at {cursor}");
        }
    }
}
