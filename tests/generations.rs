//! The platform as it ran then and runs now: every generation of its schema (late 2025,
//! spring 2026, today's), on both databases, through the binary a new user runs — and the
//! platform's own live work janitor must leave alone: pull-mode leases, in-flight markers
//! and backlog sentinels.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use janitor_e2e::{pairs_by_run, seed_incident, ts_ago, Env, Kind};
use janitor_testkit::Generation;

fn verdicts(report: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    pairs_by_run(report)
        .into_iter()
        .map(|(id, pair)| (id, pair["verdict"].clone()))
        .collect()
}

/// On a database created by `generation` of the platform's code: `migrate`, then the
/// incident fleet plus the platform's live work, judged by `stuck`, applied by one cycle.
async fn one_cycle_on(kind: Kind, generation: Generation) {
    let env = Env::new(kind).await;
    env.create_platform(generation).await.unwrap();
    env.run(&["migrate"]).ok();
    // Asking for the platform's tables on a database that has them (of any generation)
    // changes none of them: no index on a column an older generation lacks.
    env.run(&["migrate", "--create-platform-tables"]).ok();

    // Which rules the schema switches off, said by `config` and `stuck`.
    let config = env.run(&["config", "--json"]).ok().json();
    let off: Vec<String> = config["rules_off"]["value"]
        .as_array()
        .unwrap_or_else(|| panic!("{config:#}"))
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_owned())
        .collect();
    let never_launched_off = off.iter().any(|r| r.contains("never-launched"));
    assert_eq!(never_launched_off, !generation.has_sessions(), "{off:?}");
    assert_eq!(
        off.iter().any(|r| r.contains("pull-mode leases")),
        !generation.has_leases(),
        "{off:?}"
    );

    seed_incident(&env).await;
    let now = env.redis_now().await.unwrap();
    // A run proven alive by the platform's in-flight marker though its slot's renewal
    // was missed (past its own deadline): alive under every rule.
    env.seed_slot("agent:one", "marked", 25.0 * 60.0, Some(900))
        .await
        .unwrap();
    env.seed_run(
        "marked",
        "agent:one",
        "running",
        &ts_ago(now, 25.0 * 60.0, "naive"),
        Some("dispatched"),
    )
    .await
    .unwrap();
    env.mark_in_flight("marked").await.unwrap();
    // Queued for a day and an hour: the platform's backlog expiry (24 h) has passed.
    env.seed_run(
        "backlog",
        "agent:one",
        "queued",
        &ts_ago(now, 25.0 * 3600.0, "naive"),
        None,
    )
    .await
    .unwrap();
    // Activities left `started`: of a finished run (closed as completed at once), of a
    // running run (the run's), with no run for three hours (failed, as the platform's
    // 120-minute pass does), and naming a run that is gone, half an hour old (not yet).
    env.seed_activity("act-done", "leaked", &ts_ago(now, 2.0 * 60.0, "zulu"))
        .await
        .unwrap();
    env.seed_activity("act-live", "long3600", &ts_ago(now, 21.0 * 60.0, "zulu"))
        .await
        .unwrap();
    env.seed_activity("act-gone", "nobody", &ts_ago(now, 30.0 * 60.0, "zulu"))
        .await
        .unwrap();
    env.sql(&format!(
        "INSERT INTO agent_activities (id, agent_name, activity_type, activity_state, started_at, created_at) \
         VALUES ('act-chat', 'agent:one', 'chat_start', 'started', '{0}', '{0}')",
        ts_ago(now, 3.0 * 3600.0, "zulu")
    ))
    .await
    .unwrap();
    // The backlog drain's sentinel: a member with no row by design, past the row grace.
    env.seed_slot("agent:one", "drain-7f3a", 60.0, None)
        .await
        .unwrap();
    if generation.has_leases() {
        // Queued two hours ago, claimed a minute ago, lease valid for another hour.
        env.seed_leased_run(
            "leased",
            "agent:one",
            &ts_ago(now, 2.0 * 3600.0, "naive"),
            &ts_ago(now, -3600.0, "zulu"),
            0,
        )
        .await
        .unwrap();
        // A lease that ran out: the platform's lease reaper re-queues it.
        env.seed_leased_run(
            "lapsed",
            "agent:one",
            &ts_ago(now, 3.0 * 3600.0, "naive"),
            &ts_ago(now, 600.0, "zulu"),
            1,
        )
        .await
        .unwrap();
    }

    let report = env.run(&["stuck", "--json"]).ok().json();
    let v = verdicts(&report);
    assert_eq!(v["marked"]["verdict"], "alive", "{:#}", v["marked"]);
    assert_eq!(v["marked"]["by"], "in_flight_marker");
    assert_eq!(v["drain-7f3a"]["verdict"], "alive");
    assert_eq!(v["drain-7f3a"]["by"], "sentinel");
    assert_eq!(v["orphan"]["verdict"], "fail_orphan");
    assert_eq!(v["backlog"]["verdict"], "fail_backlog_expired");
    // Without sessions the never-launched rule is off: a young run with no session
    // column is simply running.
    let nosession = if generation.has_sessions() {
        "fail_never_launched"
    } else {
        "healthy"
    };
    assert_eq!(v["nosession"]["verdict"], nosession, "{:#}", v["nosession"]);
    if generation.has_leases() {
        assert_eq!(v["leased"]["verdict"], "alive", "{:#}", v["leased"]);
        assert_eq!(v["leased"]["by"], "lease");
        assert_eq!(v["lapsed"]["verdict"], "report");
        assert_eq!(v["lapsed"]["concern"], "lease_expired");
    }
    let closes: BTreeMap<String, String> = report["activities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["activity"]["id"].as_str().unwrap().to_owned(),
                a["verdict"]["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        closes,
        BTreeMap::from([
            ("act-chat".to_owned(), "failed".to_owned()),
            ("act-done".to_owned(), "completed".to_owned())
        ])
    );
    let text = env.run(&["stuck"]).ok().stdout.clone();
    assert!(text.contains("alive: in-flight marker"), "{text}");
    assert!(
        text.contains("alive: the platform's backlog sentinel"),
        "{text}"
    );
    if generation.has_leases() {
        assert!(text.contains("alive: lease valid until"), "{text}");
        assert!(text.contains("the platform re-queues it"), "{text}");
    } else {
        assert!(text.contains("rule off: pull-mode leases"), "{text}");
    }

    env.run(&["run", "--once"]).ok();
    let mut expect: BTreeMap<&str, &str> = BTreeMap::from([
        ("long3600", "running"),
        ("stale900", "failed"),
        ("leaked", "success"),
        ("orphan", "failed"),
        ("skipold", "cancelled"),
        ("skipnew", "skipped"),
        ("queued", "queued"),
        ("badtime", "running"),
        ("marked", "running"),
        ("backlog", "failed"),
    ]);
    expect.insert(
        "nosession",
        if generation.has_sessions() {
            "failed"
        } else {
            "running"
        },
    );
    if generation.has_leases() {
        expect.insert("leased", "running");
        expect.insert("lapsed", "running");
    }
    for (id, status) in expect {
        assert_eq!(
            env.status(id).await.unwrap().as_deref(),
            Some(status),
            "{id} on {generation:?}"
        );
    }
    let mut one = env.slot_members("agent:one").await.unwrap();
    one.sort();
    assert_eq!(one, vec!["drain-7f3a", "long3600", "marked"]);
    for (id, state) in [
        ("act-done", "completed"),
        ("act-chat", "failed"),
        ("act-live", "started"),
        ("act-gone", "started"),
    ] {
        let found = env
            .sql_text(&format!(
                "SELECT activity_state FROM agent_activities WHERE id = '{id}'"
            ))
            .await
            .unwrap();
        assert_eq!(found.as_deref(), Some(state), "{id} on {generation:?}");
    }
    let chat = env
        .sql_text("SELECT error FROM agent_activities WHERE id = 'act-chat'")
        .await
        .unwrap();
    assert_eq!(
        chat.as_deref(),
        Some("Marked as failed by cleanup: exceeded 120-minute timeout")
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM janitor_audit WHERE action = 'activity_closed'")
            .await,
        2
    );
    // The rows janitor wrote read back through the columns this generation has.
    let error = env
        .sql_text("SELECT error FROM schedule_executions WHERE id = 'orphan'")
        .await
        .unwrap()
        .unwrap();
    assert!(error.starts_with("Orphaned execution"), "{error}");
    let error = env
        .sql_text("SELECT error FROM schedule_executions WHERE id = 'backlog'")
        .await
        .unwrap();
    assert_eq!(
        error.as_deref(),
        Some("Backlog expired: queued longer than 24 hours")
    );
}

macro_rules! generations {
    ($($name:ident: $kind:expr, $generation:expr;)*) => {
        $(#[tokio::test]
        async fn $name() {
            one_cycle_on($kind, $generation).await;
        })*
    };
}

generations! {
    late_2025_on_sqlite: Kind::Sqlite, Generation::Late2025;
    late_2025_on_postgres: Kind::Postgres, Generation::Late2025;
    spring_2026_on_sqlite: Kind::Sqlite, Generation::Spring2026;
    spring_2026_on_postgres: Kind::Postgres, Generation::Spring2026;
    today_on_sqlite: Kind::Sqlite, Generation::Today;
    today_on_postgres: Kind::Postgres, Generation::Today;
}

/// Beside the platform's own cleanup, which still runs during a migration: its writes are
/// compare-and-sets too, a late `success` wins over a cleanup-written `failed`, and when it
/// acts first janitor's job has nothing left to do.
#[tokio::test]
async fn beside_the_platforms_own_cleanup() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let now = env.redis_now().await.unwrap();
    for id in ["overwritten", "beaten"] {
        env.seed_slot("agent:one", id, 30.0 * 60.0, Some(600))
            .await
            .unwrap();
        env.seed_run(
            id,
            "agent:one",
            "running",
            &ts_ago(now, 30.0 * 60.0, "zulu"),
            Some("dispatched"),
        )
        .await
        .unwrap();
    }
    // The platform's cleanup acts first on `beaten`, after janitor enqueued its job.
    let swept = env.run(&["sweep", "--json"]).ok().json();
    assert_eq!(swept["kinds"]["reclaim_slot"]["found"], 2, "{swept:#}");
    env.sql(
        "UPDATE schedule_executions SET status = 'failed', \
         error = 'lease_expired: Stale execution — slot TTL expired for agent ''agent:one'', cleaned by cleanup service' \
         WHERE id = 'beaten' AND status = 'running'",
    )
    .await
    .unwrap();
    let mut redis = env.redis().await.unwrap();
    redis::cmd("ZREM")
        .arg(format!("{}agent:one", env.slot_prefix))
        .arg("beaten")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let worked = env.run(&["work", "--exit-when-idle", "--json"]).ok().json();
    assert_eq!(worked["kinds"]["reclaim_slot"]["applied"], 1, "{worked:#}");
    assert_eq!(
        worked["kinds"]["reclaim_slot"]["no_longer_needed"], 1,
        "{worked:#}"
    );
    let platforms = env
        .sql_text("SELECT error FROM schedule_executions WHERE id = 'beaten'")
        .await
        .unwrap()
        .unwrap();
    assert!(
        platforms.contains("cleaned by cleanup service"),
        "{platforms}"
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM janitor_audit WHERE execution_id = 'beaten'")
            .await,
        0
    );

    // The run janitor failed completes after all: the platform writes `success` over it.
    assert_eq!(
        env.status("overwritten").await.unwrap().as_deref(),
        Some("failed")
    );
    env.sql(
        "UPDATE schedule_executions SET status = 'success', error = NULL WHERE id = 'overwritten'",
    )
    .await
    .unwrap();
    let audits = env.count("SELECT COUNT(*) FROM janitor_audit").await;
    let again = env.run(&["run", "--once"]);
    again.ok();
    assert!(
        again.stdout.contains("no-ops 0, errors 0"),
        "{}",
        again.stdout
    );
    let swept = env.run(&["sweep", "--json"]).ok().json();
    assert_eq!(swept["completed_after_failed"], 1, "{swept:#}");
    assert_eq!(
        env.status("overwritten").await.unwrap().as_deref(),
        Some("success")
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM janitor_audit").await,
        audits
    );
}

/// Without the platform's lease reaper (`--lease-policy requeue`), janitor re-queues an
/// expired pull lease exactly as the reaper does and parks it as poison at the cap; with
/// `fail` it fails it. Within the lease nothing happens under any policy.
async fn expired_leases_under_each_policy(kind: Kind) {
    let env = Env::new(kind).await;
    env.create_platform(Generation::Today).await.unwrap();
    env.run(&["migrate"]).ok();
    let now = env.redis_now().await.unwrap();
    let queued = ts_ago(now, 3.0 * 3600.0, "naive");
    let lapsed = ts_ago(now, 600.0, "zulu");
    env.seed_leased_run(
        "valid",
        "agent:one",
        &queued,
        &ts_ago(now, -3600.0, "zulu"),
        0,
    )
    .await
    .unwrap();
    env.seed_leased_run("again", "agent:one", &queued, &lapsed, 1)
        .await
        .unwrap();
    env.seed_leased_run("poison", "agent:one", &queued, &lapsed, 3)
        .await
        .unwrap();
    env.seed_activity("act-again", "again", &queued)
        .await
        .unwrap();

    // The default leaves every one to the platform.
    env.run(&["run", "--once"]).ok();
    for id in ["valid", "again", "poison"] {
        assert_eq!(
            env.status(id).await.unwrap().as_deref(),
            Some("running"),
            "{id}"
        );
    }

    let out = env.run(&["run", "--once", "--lease-policy", "requeue"]);
    out.ok();
    assert_eq!(
        env.status("valid").await.unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        env.status("again").await.unwrap().as_deref(),
        Some("queued")
    );
    assert_eq!(
        env.column("again", "redelivery_count").await.as_deref(),
        Some("2")
    );
    assert_eq!(env.column("again", "lease_expires_at").await, None);
    assert_eq!(env.column("again", "claimed_by_worker").await, None);
    assert_eq!(
        env.column("again", "claim_token").await.as_deref(),
        Some("tok-again")
    );
    assert_eq!(
        env.sql_text("SELECT activity_state FROM agent_activities WHERE id = 'act-again'")
            .await
            .unwrap()
            .as_deref(),
        Some("cancelled")
    );
    assert_eq!(
        env.status("poison").await.unwrap().as_deref(),
        Some("failed")
    );
    let error = env.column("poison", "error").await.unwrap();
    assert!(error.starts_with("poison_lease: "), "{error}");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM janitor_audit WHERE action = 'run_requeued' AND execution_id = 'again'")
            .await,
        1
    );
    // A second pass re-queues nothing more (the run is queued now, its lease cleared).
    env.run(&["run", "--once", "--lease-policy", "requeue"])
        .ok();
    assert_eq!(
        env.column("again", "redelivery_count").await.as_deref(),
        Some("2")
    );

    // `fail`: the platform's lease ran out on a run of its own.
    env.seed_leased_run("lost", "agent:one", &queued, &lapsed, 0)
        .await
        .unwrap();
    env.run(&["run", "--once", "--lease-policy", "fail"]).ok();
    assert_eq!(env.status("lost").await.unwrap().as_deref(), Some("failed"));
    assert_eq!(
        env.status("valid").await.unwrap().as_deref(),
        Some("running")
    );
    let error = env.column("lost", "error").await.unwrap();
    assert!(
        error.starts_with("lease_expired: pull lease expired"),
        "{error}"
    );
}

janitor_testkit::both_backends!(expired_leases_under_each_policy);
