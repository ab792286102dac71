//! The deadline index and the due pass (issue 14): a full sweep indexes every healthy pair
//! at the instant its verdict can next change; a due pass re-judges only the pairs whose
//! instant has come, so a run that dies after the sweep is reaped without another sweep.
#![allow(clippy::unwrap_used)]

use std::process::Child;
use std::time::{Duration, Instant};

use janitor_e2e::{ts_ago, Env, Kind};

/// The settings of these tests: a 1 s buffer, so a slot with a 1 s timeout is due 2 s
/// after it was acquired.
const BUFFER: &str = "1";

fn env_args(env: &Env, args: &[&str]) -> janitor_e2e::Run {
    janitor_e2e::run(
        env.command()
            .env("JANITOR_TTL_BUFFER_SECS", BUFFER)
            .args(args),
    )
}

/// The members of the deadline index with their instants.
async fn index(env: &Env) -> Vec<(String, f64)> {
    redis::cmd("ZRANGE")
        .arg(format!("{}:janitor:due", env.queue))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut env.redis().await.unwrap())
        .await
        .unwrap()
}

/// Waits until Redis' clock has passed `at` (unix seconds): the deadline a test is about.
async fn until_redis_time(env: &Env, at: f64) {
    let started = Instant::now();
    while env.redis_now().await.unwrap() <= at {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the clock stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running, launched run holding a slot acquired `age` seconds ago with `timeout`.
async fn seed_run(env: &Env, agent: &str, id: &str, age: f64, timeout: i64) {
    let now = env.redis_now().await.unwrap();
    env.seed_runs(&[(
        id.to_owned(),
        agent.to_owned(),
        "running",
        ts_ago(now, age, "naive"),
        Some("sess-1"),
    )])
    .await;
    env.seed_slots(&[(agent.to_owned(), id.to_owned(), age, timeout)])
        .await;
}

async fn a_run_that_dies_after_the_sweep_is_reaped_by_a_due_pass(kind: Kind) {
    let env = Env::new(kind).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    // `dies` is due 5 s from now (time enough for a sweep and a due pass of a debug build
    // beside other tests); `renewed` too, but its slot is renewed before that;
    // `later` is due in 100 s; `long` in an hour, past the index's horizon (two sweep
    // intervals and a minute: 3 minutes by default), so the later full sweeps index it.
    seed_run(&env, "ops/β", "dies", 0.0, 4).await;
    seed_run(&env, "ops/β", "renewed", 0.0, 4).await;
    seed_run(&env, "agent one", "later", 0.0, 99).await;
    seed_run(&env, "agent one", "long", 0.0, 3_600).await;
    let seeded = env.redis_now().await.unwrap();

    let sweep = env_args(&env, &["sweep", "--json"]).ok().json();
    assert_eq!(sweep["due_index"], 3, "{sweep:#}");
    assert!(sweep["kinds"].as_object().unwrap().is_empty(), "{sweep:#}");
    let before = index(&env).await;
    assert_eq!(before.len(), 3);
    assert!(
        !before.iter().any(|(m, _)| m.ends_with("\x1flong")),
        "{before:?}"
    );

    // Nothing is due yet: a due pass reads nothing and judges nothing.
    let early = env_args(&env, &["sweep", "--due", "--json"]).ok().json();
    assert_eq!(
        (early["due"].as_u64(), early["judged"].as_u64()),
        (Some(0), Some(0)),
        "{early:#}"
    );

    // Both short deadlines pass, then the platform renews one slot (its score becomes the
    // renewal's time: due again 5 s later).
    until_redis_time(&env, seeded + 5.2).await;
    let renewed_at = env.redis_now().await.unwrap();
    redis::cmd("ZADD")
        .arg(format!("{}ops/β", env.slot_prefix))
        .arg("XX")
        .arg(renewed_at)
        .arg("renewed")
        .exec_async(&mut env.redis().await.unwrap())
        .await
        .unwrap();

    let due = env_args(&env, &["sweep", "--due", "--json"]).ok().json();
    assert_eq!(due["due"], 2, "{due:#}");
    assert_eq!(due["judged"], 2, "{due:#}");
    assert_eq!(due["kinds"]["reclaim_slot"]["found"], 1, "{due:#}");
    assert_eq!(due["kinds"]["reclaim_slot"]["enqueued"], 1, "{due:#}");
    // Still waiting, at its new deadline: the renewal moved it out.
    assert_eq!(due["rescheduled"], 1, "{due:#}");
    let after = index(&env).await;
    let instant = |list: &[(String, f64)], id: &str| {
        list.iter()
            .find(|(m, _)| m.ends_with(&format!("\x1f{id}")))
            .map(|(_, at)| *at)
    };
    assert!(instant(&after, "renewed").unwrap() >= renewed_at + 5.0);
    assert_eq!(instant(&after, "later"), instant(&before, "later"));
    // The reaped run is looked at again later (its job has run by then).
    assert!(instant(&after, "dies").unwrap() > renewed_at + 20.0);

    env_args(&env, &["work", "--exit-when-idle"]).ok();
    assert_eq!(env.status("dies").await.unwrap().as_deref(), Some("failed"));
    assert_eq!(
        env.status("renewed").await.unwrap().as_deref(),
        Some("running")
    );
    let mut members = env.slot_members("ops/β").await.unwrap();
    members.sort();
    assert_eq!(members, vec!["renewed".to_owned()]);
}

#[tokio::test]
async fn a_run_that_dies_after_the_sweep_is_reaped_by_a_due_pass_on_sqlite() {
    a_run_that_dies_after_the_sweep_is_reaped_by_a_due_pass(Kind::Sqlite).await;
}

#[tokio::test]
async fn a_run_that_dies_after_the_sweep_is_reaped_by_a_due_pass_on_postgres() {
    a_run_that_dies_after_the_sweep_is_reaped_by_a_due_pass(Kind::Postgres).await;
}

/// A row that vanished since the sweep saw it is what a wrong database looks like: the due
/// pass does not release its slot, it leaves the pair to the next full sweep.
#[tokio::test]
async fn a_due_pass_never_acts_on_a_row_that_vanished() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_run(&env, "alpha", "gone", 0.0, 1).await;
    let seeded = env.redis_now().await.unwrap();
    env_args(&env, &["sweep"]).ok();
    env.sql("DELETE FROM schedule_executions WHERE id = 'gone'")
        .await
        .unwrap();
    until_redis_time(&env, seeded + 2.5).await;
    let due = env_args(&env, &["sweep", "--due", "--json"]).ok().json();
    assert_eq!(due["handed_back"], 1, "{due:#}");
    assert!(due["kinds"].as_object().unwrap().is_empty(), "{due:#}");
    assert!(index(&env).await.is_empty());
    assert_eq!(
        env.slot_members("alpha").await.unwrap(),
        vec!["gone".to_owned()]
    );
}

/// A sweep that refuses to act (the wrong-database signature) deletes the index, so due
/// passes cannot act on the view it refused.
#[tokio::test]
async fn a_refusing_sweep_empties_the_index() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_run(&env, "alpha", "kept", 0.0, 100).await;
    env_args(&env, &["sweep"]).ok();
    assert_eq!(index(&env).await.len(), 1);
    // 30 slots with no row at all: most slots rowless.
    let rowless: Vec<(String, String, f64, i64)> = (0..30)
        .map(|i| ("alpha".to_owned(), format!("nobody{i}"), 0.0, 3_600))
        .collect();
    env.seed_slots(&rowless).await;
    let sweep = env_args(&env, &["sweep", "--json"]).ok().json();
    assert_eq!(sweep["breaker"]["state"], "refused", "{sweep:#}");
    assert!(index(&env).await.is_empty());
}

fn stop(mut child: Child) -> String {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "janitor run failed: {err}");
    err
}

/// `janitor run` with an hour between full sweeps still reaps a run that dies after its
/// first sweep: its due passes do.
#[tokio::test]
async fn janitor_run_reaps_between_full_sweeps() {
    let env = Env::new(Kind::Postgres).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_run(&env, "alpha", "dies", 0.0, 2).await;
    let child = env
        .command()
        .env("JANITOR_TTL_BUFFER_SECS", BUFFER)
        .env("JANITOR_LOG", "info,janitor::commands::run=debug")
        .args(["run", "--listen", "off", "--sweep-interval-secs", "3600"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while env.status("dies").await.unwrap().as_deref() != Some("failed") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not reaped: {}",
            stop(child)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = stop(child);
    assert_eq!(log.matches("sweep done").count(), 1, "{log}");
    assert!(log.contains("due pass done"), "{log}");
    assert!(env.slot_members("alpha").await.unwrap().is_empty());
}

/// Evidence of life can only hold a rule back, so a sweep reads a run's in-flight marker
/// only when a rule would act on the pair: at a million healthy slots that was a million
/// keys read for nothing. A healthy run with a marker is simply healthy; an overdue one is
/// alive on its marker.
#[tokio::test]
async fn in_flight_markers_are_read_only_where_a_rule_would_act() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_run(&env, "alpha", "young", 0.0, 3_600).await;
    seed_run(&env, "alpha", "overdue", 7_200.0, 600).await;
    for id in ["young", "overdue"] {
        env.mark_in_flight(id).await.unwrap();
    }
    let report = env_args(&env, &["stuck", "--json"]).ok().json();
    let pairs = janitor_e2e::pairs_by_run(&report);
    assert_eq!(
        pairs["young"]["verdict"]["verdict"], "healthy",
        "{report:#}"
    );
    assert_eq!(
        pairs["overdue"]["verdict"]["verdict"], "alive",
        "{report:#}"
    );
    assert_eq!(pairs["overdue"]["verdict"]["by"], "in_flight_marker");
}

/// Rule 8 reads every `started` activity (one per open run), and its thresholds are in
/// hours: the first sweep of a queue in each 5 minutes reads them, whichever process runs
/// it; a dry run always does (and claims nothing).
#[tokio::test]
async fn activities_are_read_by_one_sweep_in_five_minutes_per_queue() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let now = env.redis_now().await.unwrap();
    let finished = |id: &str| {
        (
            id.to_owned(),
            "alpha".to_owned(),
            "success",
            ts_ago(now, 600.0, "naive"),
            Some("sess-1"),
        )
    };
    env.seed_runs(&[finished("done-1"), finished("done-2")])
        .await;
    env.seed_activity("act-1", "done-1", &ts_ago(now, 600.0, "zulu"))
        .await
        .unwrap();

    let first = env_args(&env, &["sweep", "--json"]).ok().json();
    assert_eq!(first["kinds"]["close_activity"]["found"], 1, "{first:#}");
    assert_eq!(first["stats"]["activities_scanned"], 1, "{first:#}");

    // A second activity left behind; the next sweep (another process) is within the
    // 5 minutes: it leaves rule 8 alone.
    env.seed_activity("act-2", "done-2", &ts_ago(now, 600.0, "zulu"))
        .await
        .unwrap();
    let second = env_args(&env, &["sweep", "--json"]).ok().json();
    assert_eq!(second["stats"]["activities_scanned"], 0, "{second:#}");
    assert!(
        second["kinds"].get("close_activity").is_none(),
        "{second:#}"
    );

    let dry = env_args(&env, &["sweep", "--dry-run", "--json"])
        .ok()
        .json();
    assert_eq!(dry["stats"]["activities_scanned"], 2, "{dry:#}");
    assert_eq!(dry["kinds"]["close_activity"]["found"], 2, "{dry:#}");

    // A run janitor fails whose activity the platform writes only afterwards (it writes
    // the row, then the activity): every sweep looks for those, whatever the cadence.
    env.seed_runs(&[(
        "orphan".to_owned(),
        "alpha".to_owned(),
        "running",
        ts_ago(now, 7_200.0, "naive"),
        Some("sess-1"),
    )])
    .await;
    let failing = env_args(&env, &["sweep", "--json"]).ok().json();
    assert_eq!(failing["kinds"]["fail_run"]["enqueued"], 1, "{failing:#}");
    env_args(&env, &["work", "--exit-when-idle"]).ok();
    assert_eq!(
        env.status("orphan").await.unwrap().as_deref(),
        Some("failed")
    );
    env.seed_activity("act-late", "orphan", &ts_ago(now, 7_200.0, "zulu"))
        .await
        .unwrap();
    let late = env_args(&env, &["sweep", "--json"]).ok().json();
    assert_eq!(late["stats"]["activities_scanned"], 1, "{late:#}");
    assert_eq!(late["kinds"]["close_activity"]["found"], 1, "{late:#}");
}
