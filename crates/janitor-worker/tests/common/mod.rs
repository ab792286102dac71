//! The world the worker tests share: a sandbox, both stores, a private queue, an applier.
#![allow(clippy::unwrap_used, dead_code)]

use janitor_core::{decide, AgentName, CleanupJob, ExecutionId, Liveness, Policy};
use janitor_queue::{Queue, QueueSettings};
use janitor_store::{Database, ExecutionStore, RowEntry, SlotKeys, SlotStore};
use janitor_testkit::{redis_url, Kind, Sandbox};
use janitor_worker::{runner, Applier, WorkerOptions};

pub struct World {
    pub sandbox: Sandbox,
    pub applier: Applier,
    pub slots: SlotStore,
    pub rows: ExecutionStore,
    pub queue: Queue,
}

impl World {
    pub async fn new(kind: Kind) -> Self {
        let sandbox = Sandbox::new(kind).await.unwrap();
        let db = Database::connect(&sandbox.db.url, true).await.unwrap();
        db.migrate(true).await.unwrap();
        let rows = ExecutionStore::open(db).await.unwrap();
        let keys = SlotKeys::new(sandbox.slot_prefix.clone(), sandbox.meta_prefix.clone());
        let slots = SlotStore::connect(&redis_url(), keys, 300).await.unwrap();
        let applier = Applier::new(
            slots.clone(),
            rows.clone(),
            Policy::default(),
            "test-worker-1",
        );
        let settings = QueueSettings {
            name: sandbox.queue.clone(),
            ..QueueSettings::default()
        };
        let queue = Queue::new(slots.connection(), settings);
        Self {
            sandbox,
            applier,
            slots,
            rows,
            queue,
        }
    }

    /// Redis' clock, in unix seconds.
    pub async fn now(&self) -> f64 {
        self.sandbox.redis_now().await.unwrap()
    }

    /// A run dead two hours ago: its slot (600 s timeout) and its `running`/`dispatched` row,
    /// `started_at` written in the given platform format.
    pub async fn seed_dead_run(&self, agent: &str, id: &str, style: &str) {
        let now = self.now().await;
        self.sandbox
            .seed_slot(agent, id, 2.0 * 3600.0, Some(600))
            .await
            .unwrap();
        self.sandbox
            .seed_run(
                id,
                agent,
                "running",
                &janitor_testkit::ts_ago(now, 2.0 * 3600.0, style),
                Some("dispatched"),
            )
            .await
            .unwrap();
    }

    /// An orphan: a `running`/`dispatched` run started three hours ago that holds no slot.
    pub async fn seed_orphan(&self, agent: &str, id: &str) {
        let now = self.now().await;
        self.sandbox
            .seed_run(
                id,
                agent,
                "running",
                &janitor_testkit::ts_ago(now, 3.0 * 3600.0, "naive"),
                Some("dispatched"),
            )
            .await
            .unwrap();
    }

    /// The job a producer would enqueue for this pair right now.
    pub async fn job(&self, agent: &str, execution: &str) -> CleanupJob {
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
        let verdict = decide(
            slot.as_ref(),
            row.as_ref(),
            &Liveness::NONE,
            now,
            &Policy::default(),
        );
        CleanupJob::for_verdict(&verdict, slot.as_ref(), row.as_ref())
            .unwrap_or_else(|| panic!("no job for {verdict:?}"))
    }

    /// Audit rows of one action.
    pub async fn audit_count(&self, action: &str) -> i64 {
        self.sandbox
            .sql_text(&format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM janitor_audit WHERE action = '{action}'"
            ))
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// An applier on this world's stores, named `worker`.
    pub fn applier(&self, worker: &str) -> Applier {
        Applier::new(
            self.slots.clone(),
            self.rows.clone(),
            Policy::default(),
            worker,
        )
    }

    /// Runs a worker until the queue is idle.
    pub async fn work(&self, worker: &str) -> runner::Tally {
        let applier = self.applier(worker);
        let options = WorkerOptions {
            exit_when_idle: true,
            concurrency: 4,
            ..WorkerOptions::default()
        };
        runner::run(applier, self.queue.clone(), options, std::future::pending()).await
    }
}
