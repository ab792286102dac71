//! A sweep reads its pages of open rows without the runs' effective timeouts and reads them
//! only for the runs whose deadline needs one: no slot, or a slot that declares no timeout.
//! Those runs are judged by their schedule's or agent's timeout, exactly as before.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use janitor_core::Policy;
use janitor_producer::{observe, Finding, Scope};
use janitor_store::{Database, ExecutionStore, SlotKeys, SlotStore, StoreError};
use janitor_testkit::{redis_url, ts_ago, Kind, Sandbox};

async fn judged_by_their_own_timeouts(kind: Kind) {
    let sandbox = Sandbox::new(kind).await.unwrap();
    let db = Database::connect(&sandbox.db.url, true).await.unwrap();
    db.migrate(true).await.unwrap();
    let now = sandbox.redis_now().await.unwrap();
    for sql in [
        "INSERT INTO agent_ownership (agent_name, execution_timeout_seconds) VALUES ('short', 900)",
        "INSERT INTO agent_schedules (id, agent_name, timeout_seconds) VALUES ('long', 'short', 7200)",
    ] {
        sandbox.sql(sql).await.unwrap();
    }
    // (id, schedule, started this long ago, slot: none or (its timeout_seconds field))
    let runs: [(&str, &str, f64, Option<Option<i64>>); 5] = [
        // No slot, the schedule's 7200 s: alive at 5,000 s.
        ("slotless-long", "long", 5_000.0, None),
        // No slot, the agent's 900 s: an orphan at 2,000 s (deadline 1,200 s).
        ("slotless-short", "__manual__", 2_000.0, None),
        // A slot declaring no timeout: the agent's 900 s, stale at 2,000 s.
        ("undeclared-short", "__manual__", 2_000.0, Some(None)),
        // ... and the schedule's 7200 s: alive at 5,000 s.
        ("undeclared-long", "long", 5_000.0, Some(None)),
        // A slot declaring its own 7200 s: alive whatever the agent says.
        ("declared", "__manual__", 5_000.0, Some(Some(7_200))),
    ];
    let mut redis = sandbox.redis().await.unwrap();
    for (id, schedule, age, slot) in runs {
        let started = ts_ago(now, age, "naive");
        sandbox
            .sql(&format!(
                "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, claude_session_id) \
                 VALUES ('{id}', '{schedule}', 'short', 'running', '{started}', 'run', 'schedule', 'sess')"
            ))
            .await
            .unwrap();
        let Some(timeout) = slot else { continue };
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(format!("{}short", sandbox.slot_prefix))
            .arg(now - age)
            .arg(id);
        let meta = format!("{}short:{id}", sandbox.meta_prefix);
        pipe.cmd("HSET").arg(&meta).arg("slot_number").arg(1);
        if let Some(timeout) = timeout {
            pipe.cmd("HSET")
                .arg(&meta)
                .arg("timeout_seconds")
                .arg(timeout);
        }
        pipe.query_async::<()>(&mut redis).await.unwrap();
    }
    let rows = ExecutionStore::open(db).await.unwrap();
    let keys = SlotKeys::new(sandbox.slot_prefix.clone(), sandbox.meta_prefix.clone());
    let slots = SlotStore::connect(&redis_url(), keys, 300).await.unwrap();

    let mut verdicts = BTreeMap::new();
    observe::<StoreError>(
        &slots,
        &rows,
        &Policy::default(),
        slots.server_time().await.unwrap(),
        &Scope {
            batch: 2,
            ..Scope::default()
        },
        async |finding| {
            if let Finding::Pair(pair) = finding {
                let id = pair.row.as_ref().unwrap().execution_id.to_string();
                verdicts.insert(id, pair.verdict.name());
            }
            Ok(std::ops::ControlFlow::Continue(()))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        verdicts,
        BTreeMap::from([
            ("declared".to_owned(), "healthy"),
            ("slotless-long".to_owned(), "healthy"),
            ("slotless-short".to_owned(), "fail_orphan"),
            ("undeclared-long".to_owned(), "healthy"),
            ("undeclared-short".to_owned(), "reclaim_stale_slot"),
        ])
    );
    sandbox.clear_redis().await.unwrap();
}

#[tokio::test]
async fn runs_are_judged_by_their_own_timeouts_on_sqlite() {
    judged_by_their_own_timeouts(Kind::Sqlite).await;
}

#[tokio::test]
async fn runs_are_judged_by_their_own_timeouts_on_postgres() {
    judged_by_their_own_timeouts(Kind::Postgres).await;
}
