//! Jobs through the real queue: enqueue, apalis workers, exit when idle.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use janitor_core::{decide, AgentName, CleanupJob, ExecutionId, Policy};
use janitor_queue::{Queue, QueueSettings};
use janitor_store::{Database, ExecutionStore, RowEntry, SlotKeys, SlotStore};
use janitor_testkit::{redis_url, ts_ago, unique, Kind, Sandbox};
use janitor_worker::{runner, Applier, WorkerOptions};

struct World {
    sandbox: Sandbox,
    slots: SlotStore,
    rows: ExecutionStore,
    queue: Queue,
}

impl World {
    async fn new(kind: Kind) -> Self {
        let sandbox = Sandbox::new(kind).await.unwrap();
        let db = Database::connect(&sandbox.db.url, true).await.unwrap();
        db.migrate().await.unwrap();
        let rows = ExecutionStore::open(db).await.unwrap();
        let keys = SlotKeys::new(sandbox.slot_prefix.clone(), sandbox.meta_prefix.clone());
        let slots = SlotStore::connect(&redis_url(), keys, 300).await.unwrap();
        let settings = QueueSettings {
            name: format!("jt{}:queue", unique()),
            ..QueueSettings::default()
        };
        let queue = Queue::new(slots.connection(), settings);
        Self {
            sandbox,
            slots,
            rows,
            queue,
        }
    }

    async fn job(&self, agent: &str, execution: &str) -> CleanupJob {
        let (agent, execution) = (
            AgentName::parse(agent).unwrap(),
            ExecutionId::parse(execution).unwrap(),
        );
        let slot = self
            .slots
            .lookup(&[(agent, execution.clone())])
            .await
            .unwrap()
            .pop()
            .flatten();
        let row = match self.rows.rows_by_ids(&[execution]).await.unwrap().pop() {
            Some(RowEntry::Row(r)) => Some(r),
            _ => None,
        };
        let now = self.slots.server_time().await.unwrap();
        let verdict = decide(slot.as_ref(), row.as_ref(), now, &Policy::default());
        CleanupJob::for_verdict(&verdict, slot.as_ref(), row.as_ref()).unwrap()
    }

    async fn work(&self, worker: &str) -> runner::Tally {
        let applier = Applier::new(
            self.slots.clone(),
            self.rows.clone(),
            Policy::default(),
            worker,
        );
        let options = WorkerOptions {
            exit_when_idle: true,
            concurrency: 4,
            ..WorkerOptions::default()
        };
        runner::run(applier, self.queue.clone(), options, std::future::pending()).await
    }
}

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
