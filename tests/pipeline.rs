//! End-to-end: the cleanup pipeline through the real binary — sweeps, worker processes,
//! crashes and a Redis restart — against real Redis, SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use janitor_e2e::{seed_incident, ts_ago, Env, Kind};
use janitor_testkit::eventually;

/// Waits for a child and returns its captured output; fails the test on a non-zero exit.
fn finish(child: Child) -> (String, String) {
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    (stdout, stderr)
}

async fn the_incident_end_to_end(kind: Kind) {
    let env = Env::new(kind).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let now = env.redis_now().await.unwrap();
    let min = 60.0;
    // The incident: a slot past its own deadline, its row still running/dispatched.
    env.seed_slot("agent:one", "stale", 70.0 * min, Some(3600))
        .await
        .unwrap();
    env.seed_run(
        "stale",
        "agent:one",
        "running",
        &ts_ago(now, 70.0 * min, "naive"),
        Some("dispatched"),
    )
    .await
    .unwrap();
    env.seed_activity("act-stale", "stale", &ts_ago(now, 70.0 * min, "naive"))
        .await
        .unwrap();
    // The slot the platform wrongly reclaimed: 21 minutes old with a 3600 s timeout.
    env.seed_slot("agent:one", "live", 21.0 * min, Some(3600))
        .await
        .unwrap();
    env.seed_run(
        "live",
        "agent:one",
        "running",
        &ts_ago(now, 21.0 * min, "zulu"),
        Some("dispatched"),
    )
    .await
    .unwrap();
    // A skipped row older than the threshold.
    env.seed_run(
        "skipped",
        "agent:one",
        "skipped",
        &ts_ago(now, 11.0 * min, "sqlite"),
        None,
    )
    .await
    .unwrap();

    let out = env.run(&["run", "--once"]);
    out.ok();
    assert!(
        out.stdout
            .contains("stale slots reclaimed 1 (runs failed with them 1)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("skipped runs finalized 1"),
        "{}",
        out.stdout
    );

    assert_eq!(
        env.slot_members("agent:one").await.unwrap(),
        vec!["live".to_owned()]
    );
    assert_eq!(
        env.status("stale").await.unwrap().as_deref(),
        Some("failed")
    );
    let error = env
        .sql_text("SELECT error FROM schedule_executions WHERE id = 'stale'")
        .await
        .unwrap()
        .unwrap();
    assert!(
        error.contains("agent:slots:agent:one") && error.contains("stale"),
        "{error}"
    );
    assert_eq!(
        env.sql_text("SELECT activity_state FROM agent_activities WHERE id = 'act-stale'")
            .await
            .unwrap()
            .as_deref(),
        Some("failed")
    );
    assert_eq!(
        env.status("live").await.unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        env.status("skipped").await.unwrap().as_deref(),
        Some("cancelled")
    );
    // The operators' stuck-records query now returns only the live run.
    let stuck = env
        .sql_text("SELECT id FROM schedule_executions WHERE status NOT IN ('completed','failed','cancelled','success')")
        .await
        .unwrap();
    assert_eq!(stuck.as_deref(), Some("live"));
    assert_eq!(env.count("SELECT COUNT(*) FROM schedule_executions WHERE status NOT IN ('completed','failed','cancelled','success')").await, 1);
}

#[tokio::test]
async fn the_incident_end_to_end_on_sqlite() {
    the_incident_end_to_end(Kind::Sqlite).await;
}

#[tokio::test]
async fn the_incident_end_to_end_on_postgres() {
    the_incident_end_to_end(Kind::Postgres).await;
}

#[tokio::test]
async fn one_cycle_applies_every_verdict_and_leaves_the_rest_alone() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let want = seed_incident(&env).await;
    env.run(&["run", "--once"]).ok();
    let expect: BTreeMap<&str, Option<&str>> = BTreeMap::from([
        ("long3600", Some("running")),
        ("stale900", Some("failed")),
        ("leaked", Some("success")),
        ("orphan", Some("failed")),
        ("nosession", Some("failed")),
        ("skipold", Some("cancelled")),
        ("skipnew", Some("skipped")),
        ("queued", Some("queued")),
        ("weird", Some("paused")),
        ("badtime", Some("running")),
    ]);
    for (id, status) in expect {
        assert_eq!(env.status(id).await.unwrap().as_deref(), status, "{id}");
    }
    let mut one = env.slot_members("agent:one").await.unwrap();
    one.sort();
    assert_eq!(one, vec!["long3600".to_owned()]);
    assert_eq!(
        env.slot_members("team/β two").await.unwrap(),
        vec!["newborn".to_owned()]
    );
    let error = env
        .sql_text("SELECT error FROM schedule_executions WHERE id = 'nosession'")
        .await
        .unwrap();
    assert_eq!(
        error.as_deref(),
        Some("Silent launch failure: no Claude session created within 60 seconds")
    );
    // A second cycle finds nothing left to do.
    let again = env.run(&["sweep", "--json"]);
    let report = again.ok().json();
    let found: u64 = report["kinds"]
        .as_object()
        .unwrap()
        .values()
        .map(|k| k["found"].as_u64().unwrap())
        .sum();
    assert_eq!(found, 0, "{report:#}");
    assert_eq!(want.len(), 12);
}

/// 2,000 violations of every kind plus 100 live runs, on PostgreSQL.
async fn seed_fleet(env: &Env) {
    let now = env.redis_now().await.unwrap();
    let mut runs = Vec::new();
    let mut slots = Vec::new();
    for i in 0..500 {
        let agent = format!("agent-{}", i % 40);
        // Stale slot + running row → reclaim + fail.
        slots.push((agent.clone(), format!("stale{i}"), 7200.0, 600));
        runs.push((
            format!("stale{i}"),
            agent.clone(),
            "running",
            ts_ago(now, 7200.0, "naive"),
            Some("dispatched"),
        ));
        // Live slot, finished row → release.
        slots.push((agent.clone(), format!("leak{i}"), 60.0, 3600));
        runs.push((
            format!("leak{i}"),
            agent.clone(),
            "success",
            ts_ago(now, 60.0, "zulu"),
            Some("s"),
        ));
        // Running row without a slot, long past its deadline → fail.
        runs.push((
            format!("orphan{i}"),
            agent.clone(),
            "running",
            ts_ago(now, 3.0 * 3600.0, "sqlite"),
            Some("dispatched"),
        ));
        // Old skipped row → cancel.
        runs.push((
            format!("skip{i}"),
            agent.clone(),
            "skipped",
            ts_ago(now, 3600.0, "naive"),
            None,
        ));
    }
    for i in 0..100 {
        let agent = format!("agent-{}", i % 40);
        slots.push((agent.clone(), format!("live{i}"), 300.0, 3600));
        runs.push((
            format!("live{i}"),
            agent,
            "running",
            ts_ago(now, 300.0, "naive"),
            Some("dispatched"),
        ));
    }
    env.seed_runs(&runs).await;
    env.seed_slots(&slots).await;
}

#[tokio::test]
async fn three_workers_and_two_sweeps_apply_every_change_exactly_once() {
    let env = Env::new(Kind::Postgres).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_fleet(&env).await;

    let sweeps = [
        env.spawn(&["sweep", "--json"]),
        env.spawn(&["sweep", "--json"]),
    ];
    let mut enqueued = 0;
    for sweep in sweeps {
        let (stdout, _) = finish(sweep);
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert!(report["fence"].as_u64().unwrap() > 0);
        enqueued += report["kinds"]
            .as_object()
            .unwrap()
            .values()
            .map(|k| k["enqueued"].as_u64().unwrap())
            .sum::<u64>();
    }
    assert_eq!(
        enqueued, 2000,
        "the second sweep must find everything already queued"
    );

    let workers: Vec<Child> = (0..3)
        .map(|_| env.spawn(&["work", "--exit-when-idle", "--json"]))
        .collect();
    let mut applied = 0;
    for worker in workers {
        let (stdout, _) = finish(worker);
        let tally: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        applied += tally["kinds"]
            .as_object()
            .unwrap()
            .values()
            .map(|k| k["applied"].as_u64().unwrap())
            .sum::<u64>();
    }
    assert_eq!(applied, 2000);

    // Exactly one audit row per change.
    assert_eq!(env.count("SELECT COUNT(*) FROM (SELECT execution_id, action FROM janitor_audit GROUP BY execution_id, action HAVING COUNT(*) > 1) d").await, 0);
    let per_action = |a: &'static str| {
        env.count_owned(format!(
            "SELECT COUNT(*) FROM janitor_audit WHERE action = '{a}'"
        ))
    };
    assert_eq!(per_action("slot_reclaimed").await, 500);
    assert_eq!(per_action("slot_released").await, 500);
    assert_eq!(per_action("run_failed").await, 1000);
    assert_eq!(per_action("run_cancelled").await, 500);
    // Nothing live was touched.
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM schedule_executions WHERE id LIKE 'live%' AND status = 'running'"
        )
        .await,
        100
    );
    let mut live = 0;
    for i in 0..40 {
        live += env.slot_members(&format!("agent-{i}")).await.unwrap().len();
    }
    assert_eq!(live, 100);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM janitor_audit WHERE execution_id LIKE 'live%'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing() {
    let env = Env::new(Kind::Postgres).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let now = env.redis_now().await.unwrap();
    let runs: Vec<_> = (0..2000)
        .map(|i| {
            (
                format!("o{i}"),
                format!("agent-{}", i % 20),
                "running",
                ts_ago(now, 3.0 * 3600.0, "naive"),
                Some("dispatched"),
            )
        })
        .collect();
    env.seed_runs(&runs).await;
    env.run(&["sweep", "--force"]).ok();

    let fast = [
        "--heartbeat-secs",
        "1",
        "--missed-heartbeats",
        "2",
        "--concurrency",
        "8",
    ];
    let mut doomed = env.spawn(&[&["work"][..], &fast[..]].concat());
    eventually(
        "the first worker to apply something",
        Duration::from_secs(30),
        || async { env.count("SELECT COUNT(*) FROM janitor_audit").await > 0 },
    )
    .await;
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();
    let at_kill = env.count("SELECT COUNT(*) FROM janitor_audit").await;
    assert!(
        at_kill < 2000,
        "the worker finished before it could be killed; the test proves nothing"
    );

    // A second worker re-enqueues the dead one's in-flight jobs after the heartbeat
    // threshold and finishes everything.
    finish(env.spawn(&[&["work", "--exit-when-idle"][..], &fast[..]].concat()));
    assert_eq!(
        env.count("SELECT COUNT(*) FROM schedule_executions WHERE status = 'failed'")
            .await,
        2000
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM janitor_audit WHERE action = 'run_failed'")
            .await,
        2000
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM (SELECT execution_id FROM janitor_audit GROUP BY execution_id HAVING COUNT(*) > 1) d").await, 0);
}

/// A private Redis on a free port, stopped on drop.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> Self {
        let redis = Self::unstarted();
        redis.up();
        redis
    }

    /// A free port and a data directory, with no Redis on it yet.
    fn unstarted() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            port,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn up(&self) {
        let status = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--pidfile")
            .arg(self.dir.path().join("redis.pid"))
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn down(&self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .status();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.down();
    }
}

#[tokio::test]
async fn workers_recover_from_a_redis_restart_by_themselves() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let redis = PrivateRedis::start();
    let with_redis = |args: &[&str]| {
        let mut cmd = env.command();
        cmd.env("REDIS_URL", redis.url()).args(args);
        cmd
    };
    let seed = |from: usize, now: f64| {
        (from..from + 50)
            .map(|i| {
                (
                    format!("o{i}"),
                    "agent".to_owned(),
                    "running",
                    ts_ago(now, 3.0 * 3600.0, "naive"),
                    Some("dispatched"),
                )
            })
            .collect::<Vec<_>>()
    };
    let now = env.redis_now().await.unwrap();
    env.seed_runs(&seed(0, now)).await;
    let worker = with_redis(&["work"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(janitor_e2e::run(&mut with_redis(&["sweep"])).code == Some(0));
    let failed = || env.count("SELECT COUNT(*) FROM schedule_executions WHERE status = 'failed'");
    eventually("the first batch", Duration::from_secs(30), || async {
        failed().await == 50
    })
    .await;

    // Redis goes away (losing everything: it keeps nothing on disk) and comes back.
    redis.down();
    redis.up();
    env.seed_runs(&seed(50, now)).await;
    let sweep = janitor_e2e::run(&mut with_redis(&["sweep"]));
    assert_eq!(sweep.code, Some(0), "{}", sweep.stderr);
    eventually(
        "the second batch, after the restart",
        Duration::from_secs(30),
        || async { failed().await == 100 },
    )
    .await;

    // SIGTERM: a graceful stop, exit 0.
    let pid = worker.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("restarting under a new name"),
        "the worker never noticed the restart:\n{stderr}"
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM janitor_audit WHERE action = 'run_failed'")
            .await,
        100
    );
}

#[tokio::test]
async fn the_breaker_stops_mass_reclaims_unless_forced() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    // A fleet outage: 150 slots, every one past its deadline.
    seed_fleet_outage(&env, 150).await;

    let tripped = env.run(&["sweep", "--json"]).ok().json();
    assert_eq!(tripped["breaker_tripped"], true);
    assert_eq!(tripped["kinds"]["reclaim_slot"]["found"], 150);
    assert_eq!(tripped["kinds"]["reclaim_slot"]["enqueued"], 0);
    let text = env.run(&["sweep"]);
    assert!(
        text.ok().stdout.contains("BREAKER TRIPPED"),
        "{}",
        text.stdout
    );

    let forced = env.run(&["sweep", "--json", "--force"]).ok().json();
    assert_eq!(forced["kinds"]["reclaim_slot"]["enqueued"], 150);
}

/// `n` runs dead at once, their slots past their deadlines.
async fn seed_fleet_outage(env: &Env, n: usize) {
    let now = env.redis_now().await.unwrap();
    let slots: Vec<_> = (0..n)
        .map(|i| (format!("agent-{}", i % 15), format!("r{i}"), 7200.0, 600))
        .collect();
    let runs: Vec<_> = (0..n)
        .map(|i| {
            (
                format!("r{i}"),
                format!("agent-{}", i % 15),
                "running",
                ts_ago(now, 7200.0, "naive"),
                Some("dispatched"),
            )
        })
        .collect();
    env.seed_slots(&slots).await;
    env.seed_runs(&runs).await;
}

/// Safety issue item 1: a tripped breaker latched — what it held back stayed stale, so it
/// tripped on every later pass and only `--force` ended it. Now it holds for the cool-off,
/// then drains at the configured rate and closes by itself.
#[tokio::test]
async fn a_tripped_breaker_drains_at_its_rate_and_closes_by_itself() {
    // No cool-off, so the passes follow each other; `rate` guarded jobs a minute.
    async fn passes(rate: &str, n: usize) -> Vec<serde_json::Value> {
        let env = Env::new(Kind::Sqlite).await;
        env.run(&["migrate", "--create-platform-tables"]).ok();
        seed_fleet_outage(&env, 150).await;
        (0..n)
            .map(|_| {
                let mut cmd = env.command();
                cmd.env("JANITOR_BREAKER_COOL_OFF_SECS", "0")
                    .env("JANITOR_BREAKER_DRAIN_PER_MINUTE", rate)
                    .args(["sweep", "--json"]);
                janitor_e2e::run(&mut cmd).ok().json()
            })
            .collect()
    }
    let enqueued = |r: &serde_json::Value| r["kinds"]["reclaim_slot"]["enqueued"].as_u64().unwrap();

    let slow = passes("40", 3).await;
    assert_eq!(slow[0]["breaker"]["state"], "holding", "{:#}", slow[0]);
    assert_eq!(slow[0]["breaker"]["tripped"], true);
    assert_eq!(enqueued(&slow[0]), 0);
    // The held backlog is not new: the next pass drains a minute's allowance, oldest first.
    assert_eq!(slow[1]["breaker"]["state"], "draining", "{:#}", slow[1]);
    assert_eq!(slow[1]["breaker"]["guarded_new"], 0);
    assert_eq!(enqueued(&slow[1]), 40);
    assert_eq!(slow[1]["breaker"]["held"], 110);
    // Right after, the bucket is (nearly) empty: the rate holds across passes, and the jobs
    // already queued cost no allowance.
    assert!(enqueued(&slow[2]) <= 2, "{:#}", slow[2]);
    assert_eq!(slow[2]["kinds"]["reclaim_slot"]["already_queued"], 40);

    // With room for the whole backlog the breaker closes by itself on the first drain.
    let fast = passes("6000", 2).await;
    assert_eq!(fast[0]["breaker"]["state"], "holding");
    assert_eq!(fast[1]["breaker"]["state"], "closed", "{:#}", fast[1]);
    assert_eq!(fast[1]["breaker_tripped"], false);
    assert_eq!(enqueued(&fast[1]), 150);
}

/// Safety issue item 1: with 1,000 live slots and `DATABASE_URL` pointing at an empty
/// database, one `janitor run --once` released all 1,000. The sweep now refuses and says why.
async fn a_wrong_database_releases_nothing(kind: Kind) {
    let env = Env::new(kind).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let slots: Vec<_> = (0..1000)
        .map(|i| (format!("agent-{}", i % 100), format!("live{i}"), 30.0, 3600))
        .collect();
    env.seed_slots(&slots).await;
    let out = env.run(&["run", "--once"]);
    out.ok();
    assert!(
        out.stdout.contains("1000 of 1000 slots have no row in")
            && out
                .stdout
                .contains("is DATABASE_URL the platform's database?"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("janitor_wrong_database"),
        "{}",
        out.stderr
    );
    let mut left = 0;
    for a in 0..100 {
        left += env.slot_members(&format!("agent-{a}")).await.unwrap().len();
    }
    assert_eq!(left, 1000, "a live slot was released");
    // Still refused on the next pass; --force overrides.
    let again = env.run(&["sweep", "--json"]).ok().json();
    assert_eq!(again["breaker"]["state"], "refused");
    assert_eq!(again["kinds"]["release_slot"]["enqueued"], 0);
    let forced = env.run(&["sweep", "--json", "--force"]).ok().json();
    assert_eq!(forced["kinds"]["release_slot"]["enqueued"], 1000);
}

#[tokio::test]
async fn a_wrong_sqlite_database_releases_nothing() {
    a_wrong_database_releases_nothing(Kind::Sqlite).await;
}

#[tokio::test]
async fn a_wrong_postgres_database_releases_nothing() {
    a_wrong_database_releases_nothing(Kind::Postgres).await;
}

/// Safety issue item 2: one row whose id is not UTF-8 made `stuck` and every sweep exit 1
/// ("invalid utf-8 sequence"), and one metadata key of the wrong type failed the whole
/// pipelined read it was in. Each is now reported on its own and everything else proceeds.
#[tokio::test]
async fn undecodable_rows_and_keys_are_reported_and_everything_else_proceeds() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let now = env.redis_now().await.unwrap();
    let old = ts_ago(now, 7200.0, "naive");
    // A stale run (reclaimed), and a row with invalid UTF-8 in its id, in the same page.
    env.seed_slot("ops", "stale", 7200.0, Some(600))
        .await
        .unwrap();
    env.seed_run("stale", "ops", "running", &old, Some("dispatched"))
        .await
        .unwrap();
    env.sql(&format!(
        "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by) \
         VALUES (CAST(x'626164ff' AS TEXT), '__manual__', 'ops', 'running', '{old}', 'm', 'schedule')"
    ))
    .await
    .unwrap();
    // A live 2-hour run whose slot hash is a string, not a hash: unreadable metadata, so the
    // deadline takes the longest candidate and the run is alive at 65 minutes.
    env.seed_slot("ops", "long", 65.0 * 60.0, None)
        .await
        .unwrap();
    env.seed_run(
        "long",
        "ops",
        "running",
        &ts_ago(now, 65.0 * 60.0, "naive"),
        Some("dispatched"),
    )
    .await
    .unwrap();
    let mut redis = env.redis().await.unwrap();
    redis::cmd("SET")
        .arg(format!("{}ops:long", env.meta_prefix))
        .arg("not a hash")
        .exec_async(&mut redis)
        .await
        .unwrap();
    // An agent whose slot key is not a ZSET: its run is reported, never judged slotless.
    redis::cmd("SET")
        .arg(format!("{}broken", env.slot_prefix))
        .arg("x")
        .exec_async(&mut redis)
        .await
        .unwrap();
    env.seed_run("blind", "broken", "running", &old, Some("dispatched"))
        .await
        .unwrap();

    let stuck = env.run(&["stuck"]);
    stuck.ok();
    assert!(
        stuck.stdout.contains(r#"corrupt row: id "bad\\xff""#)
            && stuck.stdout.contains("not UTF-8"),
        "{}",
        stuck.stdout
    );
    assert!(stuck.stdout.contains("WRONGTYPE"), "{}", stuck.stdout);
    let cycle = env.run(&["run", "--once", "--json"]);
    cycle.ok();
    let report = cycle.json();
    assert_eq!(report["sweep"]["stats"]["corrupt_rows"], 1, "{report:#}");
    assert_eq!(report["sweep"]["stats"]["corrupt_slots"], 1, "{report:#}");
    assert_eq!(
        report["jobs"]["kinds"]["reclaim_slot"]["slots_reclaimed"],
        1
    );
    assert_eq!(
        env.status("stale").await.unwrap().as_deref(),
        Some("failed")
    );
    assert_eq!(
        env.status("long").await.unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        env.slot_members("ops").await.unwrap(),
        vec!["long".to_owned()]
    );
    assert_eq!(
        env.status("blind").await.unwrap().as_deref(),
        Some("running")
    );
    let bad = env
        .sql_text("SELECT status FROM schedule_executions WHERE id = CAST(x'626164ff' AS TEXT)")
        .await
        .unwrap();
    assert_eq!(
        bad.as_deref(),
        Some("running"),
        "the corrupt row was changed"
    );
}

/// `n` runs `o00`, `o01`, … of one agent, running for two hours with a session and no
/// slot: orphaned, each a `fail_run` job.
async fn seed_orphaned_runs(env: &Env, n: usize) {
    let now = env.redis_now().await.unwrap();
    let runs: Vec<_> = (0..n)
        .map(|i| {
            (
                format!("o{i:02}"),
                "agent".to_owned(),
                "running",
                ts_ago(now, 7200.0, "naive"),
                Some("dispatched"),
            )
        })
        .collect();
    env.seed_runs(&runs).await;
}

/// Runs janitor with the queue's backlog cap at `cap`.
fn capped(env: &Env, cap: &str, args: &[&str]) -> janitor_e2e::Run {
    let mut cmd = env.command();
    cmd.env("JANITOR_BACKLOG_CAP", cap).args(args);
    janitor_e2e::run(&mut cmd)
}

#[tokio::test]
async fn the_backlog_cap_holds_and_the_rest_comes_with_later_sweeps() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_orphaned_runs(&env, 30).await;
    let capped = |args: &[&str]| capped(&env, "10", args);
    let first = capped(&["sweep", "--json"]).ok().json();
    assert_eq!(first["kinds"]["fail_run"]["enqueued"], 10);
    assert_eq!(first["kinds"]["fail_run"]["deferred"], 20);
    assert_eq!(
        first["stats"]["truncated"], false,
        "without --force the pass runs to its end (the breaker must see every reclaim)"
    );
    // Nothing more fits until workers drain the queue; with --force a full queue ends the
    // pass at once.
    let second = capped(&["sweep", "--json", "--force"]).ok().json();
    assert_eq!(
        second["kinds"]["fail_run"]["enqueued"]
            .as_u64()
            .unwrap_or(0),
        0
    );
    assert_eq!(second["stats"]["truncated"], true);
    assert!(second["kinds"]["fail_run"]["found"].as_u64().unwrap() < 30);
    // Three rounds of work + sweep finish everything.
    for _ in 0..3 {
        capped(&["work", "--exit-when-idle"]).ok();
        capped(&["sweep"]).ok();
    }
    capped(&["work", "--exit-when-idle"]).ok();
    assert_eq!(
        env.count("SELECT COUNT(*) FROM schedule_executions WHERE status = 'failed'")
            .await,
        30
    );
}

/// A catch-up sweeps again while the queue still holds part of the last pass's jobs: a
/// forced pass pushes as it finds, and the jobs already queued take none of the room (they
/// used to fill it, so a pass with room for 10 new jobs pushed none).
#[tokio::test]
async fn a_forced_sweep_fills_the_room_with_new_jobs_past_those_already_queued() {
    let env = Env::new(Kind::Postgres).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_orphaned_runs(&env, 30).await;
    let capped = |cap: &str, args: &[&str]| capped(&env, cap, args);
    let first = capped("10", &["sweep", "--json", "--force"]).ok().json();
    assert_eq!(first["kinds"]["fail_run"]["enqueued"], 10, "{first:#}");
    let second = capped("20", &["sweep", "--json", "--force"]).ok().json();
    let kind = &second["kinds"]["fail_run"];
    assert_eq!(kind["enqueued"], 10, "{second:#}");
    assert_eq!(kind["already_queued"], 10, "{second:#}");
    assert_eq!(kind["deferred"], 10, "{second:#}");
    capped("20", &["work", "--exit-when-idle"]).ok();
    assert_eq!(
        env.count("SELECT COUNT(*) FROM schedule_executions WHERE status = 'failed'")
            .await,
        20
    );
}

/// `janitor run --force` behind a small backlog cap catches up in many passes; the pass that
/// reaches the end of the rows runs the slot pass, and every run and leaked slot is reaped
/// exactly once, audited, well before the next interval's sweep (60 s). Returns the log.
async fn forced_catch_up(orphans: i64, cap: i64, scan_batch: usize) -> String {
    let env = Env::new(Kind::Postgres).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_orphaned_runs(&env, orphans as usize).await;
    // Slots of finished runs: their rows are not open, so only the slot pass (run by the
    // pass that reaches the end of the rows) finds them.
    let now = env.redis_now().await.unwrap();
    let finished: Vec<_> = (0..5)
        .map(|i| {
            (
                format!("z{i}"),
                "zed".to_owned(),
                "success",
                ts_ago(now, 600.0, "naive"),
                Some("sess"),
            )
        })
        .collect();
    env.seed_runs(&finished).await;
    let slots: Vec<_> = finished
        .iter()
        .map(|(id, agent, ..)| (agent.clone(), id.clone(), 600.0, 3600))
        .collect();
    env.seed_slots(&slots).await;
    // Logs go to a file: a pipe nobody reads while the test waits would fill and stall it.
    let log_path = env.workdir.path().join("run.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = env.command();
    cmd.env("JANITOR_BACKLOG_CAP", cap.to_string())
        .env("JANITOR_SCAN_BATCH", scan_batch.to_string())
        .env("JANITOR_LOG", "info")
        .args(["run", "--force", "--listen", "off"])
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let mut child = Killed(cmd.spawn().unwrap());
    let started = Instant::now();
    loop {
        let failed = env
            .count("SELECT COUNT(*) FROM schedule_executions WHERE status = 'failed'")
            .await;
        let leaked = env.slot_members("zed").await.unwrap();
        if failed == orphans && leaked.is_empty() {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let logs = std::fs::read_to_string(&log_path).unwrap();
            panic!(
                "after 30 s: {failed} of {orphans} failed, leaked slots left {leaked:?}\n{logs}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{status}: {logs}");
    let passes = logs.lines().filter(|l| l.contains("sweep done")).count();
    assert!(
        passes as i64 >= orphans / cap,
        "{orphans} jobs behind a cap of {cap} took {passes} passes"
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM janitor_audit WHERE action = 'run_failed'")
            .await,
        orphans
    );
    assert_eq!(
        env.count(
            "SELECT COUNT(DISTINCT execution_id) FROM janitor_audit WHERE action = 'run_failed'"
        )
        .await,
        orphans
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM janitor_audit WHERE action = 'slot_released'")
            .await,
        5
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM schedule_executions WHERE status = 'success'")
            .await,
        5,
        "a finished run is never failed"
    );
    logs
}

/// Behind a cap smaller than a push, pushes defer jobs: no pass may resume past them (it
/// did, and left them for the next interval's sweep).
#[tokio::test]
async fn a_forced_run_behind_a_tiny_cap_catches_up_and_reaps_everything_once() {
    forced_catch_up(90, 16, 16).await;
}

/// Behind a cap larger than a push, passes fill it exactly and the next goes on where the
/// last stopped.
#[tokio::test]
async fn a_forced_run_catches_up_in_passes_that_resume_and_reaps_everything_once() {
    let logs = forced_catch_up(350, 100, 40).await;
    assert!(
        logs.lines()
            .any(|l| l.contains("sweep done") && l.contains("resumes=true")),
        "no pass resumed: {logs}"
    );
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_skip_is_enqueued_at_skip_time_and_the_sweep_finds_it_queued() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let now = env.redis_now().await.unwrap();
    env.seed_run(
        "sk1",
        "agent b",
        "skipped",
        &ts_ago(now, 30.0, "naive"),
        None,
    )
    .await
    .unwrap();
    let receipt = env
        .run(&["skip", "--execution-id", "sk1", "--json"])
        .ok()
        .json();
    assert_eq!(receipt["enqueued"], 1);
    assert_eq!(receipt["task_id"], "finalize_skipped:agent b:sk1:skipped");
    // Due when the run passes the threshold (600 s from its start, 30 s ago).
    let delay = receipt["delay_secs"].as_u64().unwrap();
    assert!((565..=572).contains(&delay), "{delay}");
    let mut conn = env.redis().await.unwrap();
    let score: f64 = redis::cmd("ZSCORE")
        .arg(format!("{}:scheduled", env.queue))
        .arg("finalize_skipped:agent b:sk1:skipped")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (score - (now + delay as f64)).abs() < 3.0,
        "{score} vs {now} + {delay}"
    );
    // Once the row is old enough, the sweep's safety net finds the same job already queued.
    env.sql("UPDATE schedule_executions SET started_at = '2026-01-01T00:00:00' WHERE id = 'sk1'")
        .await
        .unwrap();
    let sweep = env.run(&["sweep", "--json"]).ok().json();
    assert_eq!(sweep["kinds"]["finalize_skipped"]["already_queued"], 1);
    // Bad input is a clear error.
    let unknown = env.run(&["skip", "--execution-id", "nope"]);
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown.stderr.contains("unknown execution nope"),
        "{}",
        unknown.stderr
    );
    let running = env.run(&["skip", "--execution-id", "bad:id"]);
    assert!(
        running.stderr.contains("contains ':'"),
        "{}",
        running.stderr
    );
}

/// Safety issue item 3, as an operator met it: the orphan's job went dead while the
/// database was unwritable, and every later sweep said "dead 1" and enqueued nothing. Now a
/// sweep past the cool-off re-drives the work under a new id and the run is failed, with no
/// operator.
#[tokio::test]
async fn dead_work_is_redriven_by_a_later_sweep_without_an_operator() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let now = env.redis_now().await.unwrap();
    env.seed_run(
        "orphan",
        "ops",
        "running",
        &ts_ago(now, 7200.0, "naive"),
        Some("dispatched"),
    )
    .await
    .unwrap();
    let first = env.run(&["sweep", "--json"]).ok().json();
    assert_eq!(first["kinds"]["fail_run"]["enqueued"], 1);
    let id = env
        .run(&["queue", "list", "--state", "scheduled", "--json"])
        .ok()
        .json()["jobs"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.mark_dead(
        &id,
        5,
        r#"{"Err":"gave up after 5 attempts: database: attempt to write a readonly database"}"#,
    )
    .await;
    // Within the cool-off: left dead.
    let held = env.run(&["sweep", "--json"]).ok().json();
    assert_eq!(held["kinds"]["fail_run"]["dead"], 1, "{held:#}");
    assert_eq!(held["kinds"]["fail_run"]["enqueued"], 0);
    // Past it (0 here): re-driven, the dead copy kept and linked.
    let mut cmd = env.command();
    cmd.env("JANITOR_DEAD_RETRY_AFTER_SECS", "0")
        .args(["run", "--once", "--json"]);
    let cycle = janitor_e2e::run(&mut cmd).ok().json();
    assert_eq!(
        cycle["sweep"]["kinds"]["fail_run"]["redriven"], 1,
        "{cycle:#}"
    );
    assert_eq!(cycle["jobs"]["kinds"]["fail_run"]["runs_failed"], 1);
    assert_eq!(
        env.status("orphan").await.unwrap().as_deref(),
        Some("failed")
    );
    let dead = env.run(&["queue", "show", &id, "--json"]).ok().json();
    assert_eq!(dead["job"]["state"], "dead");
    let redrive = env
        .run(&["queue", "show", &format!("{id}~r1"), "--json"])
        .ok()
        .json();
    assert_eq!(redrive["job"]["state"], "done", "{redrive:#}");
    assert_eq!(
        redrive["job"]["job"]["redrive_of"],
        id.as_str(),
        "{redrive:#}"
    );
}

/// Safety issue item 3: a worker or producer started while Redis was down (or still
/// loading its data set) exited, and an orchestrator backs a crash loop off for minutes. It
/// now listens at once (`/healthz` 200, `/readyz` 503 "starting"), waits with a log line per
/// attempt, and becomes ready by itself once Redis answers.
#[tokio::test]
async fn a_process_started_before_redis_waits_and_becomes_ready() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let redis = PrivateRedis::unstarted();
    let served = env.serve_starting(
        &["run", "--role", "worker", "--listen", "127.0.0.1:0"],
        &[("REDIS_URL", &redis.url())],
    );
    let get = |path: &str| janitor_e2e::http(&served.addr, "GET", path, None, "");
    assert_eq!(get("/healthz").0, 200);
    let (status, body) = get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("waiting for Redis and the database"),
        "{body}"
    );
    redis.up();
    eventually(
        "ready once Redis answers",
        Duration::from_secs(60),
        || async { get("/readyz").0 == 200 },
    )
    .await;
    served.stop();
}
