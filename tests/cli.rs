//! End-to-end: the `janitor` binary against real Redis, SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use janitor_e2e::{http, run, seed_incident, Env, Kind};

/// The platform's own schema as it exists in a live database, including columns janitor
/// does not know (later migrations there), so `migrate` can be shown to keep them.
const TRINITY_SQLITE: &str = include_str!("fixtures/trinity-sqlite.sql");

/// Every row of every platform table, as text, for before/after comparison.
async fn dump(env: &Env) -> BTreeMap<String, Vec<String>> {
    use sqlx::{Connection as _, Row as _};
    let mut conn = sqlx::SqliteConnection::connect(&env.db.url).await.unwrap();
    let mut out = BTreeMap::new();
    for table in [
        "schedule_executions",
        "agent_activities",
        "agent_ownership",
        "agent_schedules",
    ] {
        let columns: Vec<String> = sqlx::query(&format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        ))
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
        let select = columns
            .iter()
            .map(|c| format!("quote({c})"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT {select} FROM {table} ORDER BY 1"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
        out.insert(format!("{table} columns"), columns);
        out.insert(table.to_owned(), rows);
    }
    conn.close().await.unwrap();
    out
}

#[tokio::test]
async fn migrate_keeps_a_trinity_database_intact() {
    let env = Env::new(Kind::Sqlite).await;
    env.sql(TRINITY_SQLITE).await.unwrap();
    let before = dump(&env).await;
    assert_eq!(before["schedule_executions"].len(), 2);

    let first = env.run(&["migrate"]);
    first.ok();
    assert!(
        first.stdout.contains("applied 2, 3, 4, 5, 6, 7 "),
        "{}",
        first.stdout
    );
    let again = env.run(&["migrate"]);
    again.ok();
    assert!(again.stdout.contains("up to date"), "{}", again.stdout);

    assert_eq!(
        dump(&env).await,
        before,
        "migrate changed platform data or columns"
    );
    // janitor's own table is there and the platform's timeouts are used.
    let stuck = env.run(&["stuck", "--json"]);
    stuck.ok();
    let report = stuck.json();
    let pairs = report["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 1, "{report:#}");
    assert_eq!(pairs[0]["row"]["execution_id"], "hist2");
    assert_eq!(pairs[0]["row"]["effective_timeout"], 3900);
    // Running since May with no slot: an orphan, past its deadline.
    assert_eq!(pairs[0]["verdict"]["verdict"], "fail_orphan");
}

fn verdicts(report: &serde_json::Value) -> BTreeMap<String, String> {
    janitor_e2e::pairs_by_run(report)
        .into_iter()
        .map(|(id, pair)| (id, pair["verdict"]["verdict"].as_str().unwrap().to_owned()))
        .collect()
}

async fn stuck_judges_the_incident(kind: Kind) {
    let env = Env::new(kind).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let want = seed_incident(&env).await;
    let report = env.run(&["stuck", "--json", "--scan-batch", "2"]);
    report.ok();
    let report = report.json();
    let got = verdicts(&report);
    let want: BTreeMap<String, String> = want
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(got, want, "{report:#}");
    let stale = report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slot"]["execution_id"] == "stale900")
        .unwrap();
    assert_eq!(stale["verdict"]["fail_row"], true);
    assert_eq!(stale["timeout_source"], "slot");
    assert_eq!(report["stats"]["slots_scanned"], 5);

    // --actionable keeps only what a sweep would change.
    let actionable = env.run(&["stuck", "--json", "--actionable"]);
    let got = verdicts(&actionable.ok().json());
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(got.values().all(|v| v != "healthy" && v != "report"));

    // The operator's table names every run and its verdict in words.
    let table = env.run(&["stuck"]);
    table.ok();
    for needle in [
        "AGENT",
        "VERDICT",
        "reclaim stale slot + fail run",
        "release leaked slot (run success)",
        "release leaked slot (no run)",
        "fail orphaned run",
        "never got a session",
        "finalize skipped",
        "unknown status \"paused\"",
        "unparseable started_at",
        "team/β two",
    ] {
        assert!(
            table.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            table.stdout
        );
    }
    // Reading changes nothing.
    assert_eq!(env.slot_members("agent:one").await.unwrap().len(), 2);
}

#[tokio::test]
async fn stuck_judges_the_incident_on_sqlite() {
    stuck_judges_the_incident(Kind::Sqlite).await;
}

#[tokio::test]
async fn stuck_judges_the_incident_on_postgres() {
    stuck_judges_the_incident(Kind::Postgres).await;
}

/// Safety issue item 1: `migrate` created the platform's tables on any database, so an
/// empty file (or a relative `sqlite://janitor.db` opened from another directory) became a
/// "platform" whose every live slot had no row. Now it refuses unless asked.
#[tokio::test]
async fn migrate_refuses_a_database_that_is_not_the_platforms() {
    for kind in [Kind::Sqlite, Kind::Postgres] {
        let env = Env::new(kind).await;
        if kind == Kind::Postgres {
            env.sql("CREATE TABLE unrelated (x INTEGER)").await.unwrap();
        }
        let out = env.run(&["migrate"]);
        assert_eq!(out.code, Some(1), "{kind:?}: {}", out.stdout);
        let needle = match kind {
            // No file: not created.
            Kind::Sqlite => "does not exist",
            Kind::Postgres => "the platform's table schedule_executions is missing: is DATABASE_URL the platform's database?",
        };
        assert!(out.stderr.contains(needle), "{kind:?}: {}", out.stderr);
        if let Some(path) = env.db.sqlite_path() {
            assert!(!path.exists(), "migrate created {}", path.display());
            // An empty file that exists is refused too, and gains no table.
            std::fs::write(&path, b"").unwrap();
            let out = env.run(&["migrate"]);
            assert_eq!(out.code, Some(1));
            assert!(
                out.stderr
                    .contains("is DATABASE_URL the platform's database?"),
                "{}",
                out.stderr
            );
        }
        let tables = env
            .sql_text(match kind {
                Kind::Sqlite => "SELECT CAST(COUNT(*) AS TEXT) FROM sqlite_master WHERE type = 'table'",
                Kind::Postgres => "SELECT CAST(COUNT(*) AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema()",
            })
            .await
            .unwrap();
        let expected = if kind == Kind::Postgres { "1" } else { "0" };
        assert_eq!(
            tables.as_deref(),
            Some(expected),
            "{kind:?}: tables were created"
        );
        // Asked, it creates them.
        env.run(&["migrate", "--create-platform-tables"]).ok();
        env.run(&["stuck"]).ok();
    }
}

/// A binary newer than the database's janitor schema says so instead of failing every
/// audit write (its inserts name the unique (run, change key) index of migration 6), and
/// `migrate` brings the database up to date: from before migration 4 (no change key at
/// all) and from migration 5 (the key unique on its own).
#[tokio::test]
async fn an_outdated_janitor_schema_asks_for_migrate() {
    for kind in [Kind::Sqlite, Kind::Postgres] {
        for (before, undo) in [
            (
                3,
                "DROP INDEX janitor_audit_run_change; ALTER TABLE janitor_audit DROP COLUMN change_key; \
                 CREATE INDEX janitor_audit_execution ON janitor_audit (execution_id); \
                 DELETE FROM _sqlx_migrations WHERE version >= 4;",
            ),
            (
                5,
                "DROP INDEX janitor_audit_run_change; \
                 CREATE UNIQUE INDEX janitor_audit_change ON janitor_audit (change_key); \
                 CREATE INDEX janitor_audit_execution ON janitor_audit (execution_id); \
                 DELETE FROM _sqlx_migrations WHERE version = 6;",
            ),
        ] {
            let env = Env::new(kind).await;
            env.run(&["migrate", "--create-platform-tables"]).ok();
            env.sql(undo).await.unwrap();
            let out = env.run(&["run", "--once"]);
            assert_eq!(out.code, Some(1), "{kind:?} at {before}: {}", out.stdout);
            assert!(
                out.stderr.contains("the audit's (run, change key) index is missing")
                    && out.stderr.contains("run `janitor migrate`"),
                "{kind:?} at {before}: {}",
                out.stderr
            );
            env.run(&["migrate"]).ok();
            let out = env.run(&["run", "--once"]);
            assert_eq!(out.code, Some(0), "{kind:?} at {before}: {}", out.stderr);
        }
    }
}

#[tokio::test]
async fn bad_input_is_a_clear_one_line_error() {
    let env = Env::new(Kind::Sqlite).await;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--database-url", "mysql://u:hunter2@db/x", "stuck"],
            "unsupported database url",
        ),
        (
            vec!["--redis-url", "redis://127.0.0.1:1", "stuck"],
            "connecting to Redis at redis://127.0.0.1:1",
        ),
        (
            vec!["stuck"],
            "does not exist: is DATABASE_URL the platform's database?",
        ),
        (
            vec!["--default-timeout-secs=-5", "config"],
            "default timeout must be between",
        ),
        (
            vec!["--skipped-policy", "sometimes", "config"],
            "invalid value 'sometimes'",
        ),
        (
            vec!["--no-such-flag", "stuck"],
            "unexpected argument '--no-such-flag'",
        ),
    ];
    for (args, needle) in cases {
        let out = env.run(&args);
        assert_ne!(out.code, Some(0), "{args:?} succeeded");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("hunter2"),
            "password leaked: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        if !needle.starts_with("unexpected") && !needle.starts_with("invalid value") {
            assert_eq!(
                out.stderr.trim().lines().count(),
                1,
                "{args:?}: {}",
                out.stderr
            );
        }
    }
    // An existing database janitor was never migrated on.
    env.sql("CREATE TABLE unrelated (x INTEGER)").await.unwrap();
    let out = env.run(&["stuck"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("table schedule_executions is missing: run `janitor migrate` first"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn config_layers_flags_env_file_defaults_and_redacts() {
    let env = Env::new(Kind::Sqlite).await;
    std::fs::write(
        env.workdir.path().join("janitor.toml"),
        "redis_url = \"redis://:filesecret@127.0.0.1:6379/0\"\nskipped_after_secs = 900\nscan_batch = 50\n",
    )
    .unwrap();
    let out = run(env
        .command()
        .env("DATABASE_URL", "postgres://app:envsecret@db:5432/janitor")
        .env_remove("REDIS_URL")
        .args(["config", "--json", "--scan-batch", "75"]));
    let cfg = out.ok().json();
    assert_eq!(
        cfg["database_url"]["value"],
        "postgres://app:***@db:5432/janitor"
    );
    assert_eq!(cfg["database_url"]["source"], "flag");
    assert_eq!(cfg["redis_url"]["value"], "redis://:***@127.0.0.1:6379/0");
    assert_eq!(cfg["redis_url"]["source"], "file");
    assert_eq!(cfg["skipped_after_secs"]["value"], "900");
    assert_eq!(cfg["scan_batch"]["value"], "75");
    assert_eq!(cfg["scan_batch"]["source"], "flag");
    assert_eq!(cfg["ttl_buffer_secs"]["value"], "300");
    assert_eq!(cfg["ttl_buffer_secs"]["source"], "default");
    assert!(!out.stdout.contains("secret@"), "{}", out.stdout);

    let text = env.run(&["config"]);
    assert!(
        text.ok().stdout.contains("# settings file: janitor.toml"),
        "{}",
        text.stdout
    );

    std::fs::write(
        env.workdir.path().join("janitor.toml"),
        "redis_ulr = \"typo\"\n",
    )
    .unwrap();
    let bad = env.run(&["config"]);
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("parsing settings file janitor.toml")
            && bad.stderr.contains("unknown field `redis_ulr`"),
        "{}",
        bad.stderr
    );
}

#[tokio::test]
async fn the_http_intake_enqueues_skips_behind_a_token() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    env.seed_run("sk1", "agent", "skipped", "2026-05-01T15:30:00", None)
        .await
        .unwrap();
    env.seed_run("run1", "agent", "running", "2026-05-01T15:30:00", Some("x"))
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let start = |token: Option<&str>| {
        let mut cmd = env.command();
        cmd.args(["serve", "--listen", &listen])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(token) = token {
            cmd.env("JANITOR_ADMIN_TOKEN", token);
        }
        let child = cmd.spawn().unwrap();
        let begun = std::time::Instant::now();
        // Listening, then ready once it reaches its stores.
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || http(&listen, "GET", "/readyz", None, "")
                .1
                .contains("starting")
        {
            assert!(
                begun.elapsed() < std::time::Duration::from_secs(20),
                "serve did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child
    };
    let stop = |mut child: std::process::Child| {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(child.wait().unwrap().success());
    };
    let skip = r#"{"execution_id":"sk1"}"#;

    // Without a token configured, mutating endpoints are disabled, not open.
    let server = start(None);
    assert_eq!(http(&listen, "GET", "/healthz", None, "").0, 200);
    let (status, body) = http(&listen, "POST", "/api/v1/skip", Some("anything"), skip);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("disabled"), "{body}");
    stop(server);

    let server = start(Some("s3cret"));
    assert_eq!(http(&listen, "POST", "/api/v1/skip", None, skip).0, 401);
    assert_eq!(
        http(&listen, "POST", "/api/v1/skip", Some("wrong"), skip).0,
        401
    );
    let cases = [
        ("{not json", 400),
        (r#"{"execution_id":"a:b"}"#, 400),
        (r#"{"execution_id":"sk1","extra":1}"#, 400),
        (r#"{"execution_id":"missing"}"#, 404),
        (r#"{"execution_id":"run1"}"#, 409),
    ];
    for (body, want) in cases {
        let (status, reply) = http(&listen, "POST", "/api/v1/skip", Some("s3cret"), body);
        assert_eq!(status, want, "{body}: {reply}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&reply).unwrap()["error"].is_string(),
            "{reply}"
        );
    }
    let (status, reply) = http(&listen, "POST", "/api/v1/skip", Some("s3cret"), skip);
    assert_eq!(status, 202, "{reply}");
    let receipt: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(receipt["task_id"], "finalize_skipped:agent:sk1:skipped");
    assert_eq!(receipt["enqueued"], 1);
    let (_, again) = http(&listen, "POST", "/api/v1/skip", Some("s3cret"), skip);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again).unwrap()["already_queued"],
        1
    );
    stop(server);
    // The token never shows in `janitor config`.
    let mut cmd = env.command();
    let cfg = run(cmd.env("JANITOR_ADMIN_TOKEN", "s3cret").args(["config"]));
    assert!(
        cfg.ok().stdout.contains("admin_token = \"(set)\""),
        "{}",
        cfg.stdout
    );
    assert!(!cfg.stdout.contains("s3cret"));
}

#[tokio::test]
async fn queue_stats_and_retry_re_drive_a_dead_job() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let empty = env.run(&["queue", "stats", "--json"]).ok().json();
    assert_eq!(empty["scheduled_due"], 0);
    assert_eq!(empty["dead"], 0);
    assert!(empty["oldest_due_age_secs"].is_null());

    seed_incident(&env).await;
    let sweep = env.run(&["sweep", "--json"]).ok().json();
    let enqueued: u64 = sweep["kinds"]
        .as_object()
        .unwrap()
        .values()
        .map(|k| k["enqueued"].as_u64().unwrap_or(0))
        .sum();
    let stats = env.run(&["queue", "stats", "--json"]).ok().json();
    assert_eq!(stats["scheduled_due"].as_u64(), Some(enqueued), "{stats}");
    let text = env.run(&["queue", "stats"]).ok().stdout.clone();
    assert!(
        text.contains(&format!("scheduled  {enqueued} due")),
        "{text}"
    );

    // The stale run's job gives up, as the library leaves a job past its attempts.
    let id = "reclaim_slot:agent:one:stale900:";
    let mut redis = env.redis().await.unwrap();
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}:scheduled", env.queue))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    let dead = ids.iter().find(|i| i.starts_with(id)).unwrap().clone();
    env.mark_dead(&dead, 5, "gave up after 5 attempts: database unavailable")
        .await;
    assert_eq!(
        env.run(&["queue", "stats", "--json"]).ok().json()["dead"],
        1
    );

    let retried = env.run(&["queue", "retry", &dead]).ok().stdout.clone();
    assert!(retried.contains(&format!("re-driven: {dead}")), "{retried}");
    let again = env.run(&["queue", "retry", &dead, "--json"]).ok().json();
    assert_eq!(again["not_dead"][0], dead.as_str(), "idempotent: {again}");
    assert_eq!(
        env.run(&["queue", "stats", "--json"]).ok().json()["dead"],
        0
    );
    // The re-driven job is applied like any other.
    env.run(&["work", "--exit-when-idle"]).ok();
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM schedule_executions WHERE id = 'stale900' AND status = 'failed'"
        )
        .await,
        1
    );

    // …and after the re-drive, the audit trail shows what the worker did.
    let shown = env.run(&["queue", "show", &dead, "--json"]).ok().json();
    assert_eq!(shown["job"]["state"], "done", "{shown}");
    assert!(
        shown["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["action"] == "run_failed"),
        "{shown}"
    );
    // The audit trail, filtered; and retention leaves this fresh history alone.
    let trail = env
        .run(&["audit", "--execution", "stale900", "--since", "1h"])
        .ok()
        .stdout
        .clone();
    assert!(
        trail.contains("run_failed  run=stale900 agent=agent:one  running -> failed")
            && trail.contains("slot_reclaimed  run=stale900"),
        "{trail}"
    );
    let none = env.run(&["audit", "--agent", "nobody"]).ok().stdout.clone();
    assert!(none.contains("no audit rows match"), "{none}");
    let bad_since = env.run(&["audit", "--since", "yesterday"]);
    assert_eq!(bad_since.code, Some(1));
    assert!(bad_since.stderr.contains("--since"), "{}", bad_since.stderr);
    let purge = |older: &str| {
        env.run(&[
            "queue",
            "purge",
            "--state",
            "done",
            "--older-than",
            older,
            "--json",
        ])
        .ok()
        .json()
    };
    let kept = purge("7d");
    assert_eq!(kept["purged"], 0, "{kept}");
    assert!(kept["kept_recent"].as_u64().unwrap() >= 1, "{kept}");
    let all = purge("0s");
    assert_eq!(all["purged"], kept["kept_recent"], "{all}");
    assert_eq!(
        env.run(&["queue", "stats", "--json"]).ok().json()["done"],
        0
    );
    assert_eq!(
        env.run(&[
            "queue",
            "purge",
            "--state",
            "done",
            "--older-than",
            "7 weeks"
        ])
        .code,
        Some(2)
    );
    // Usage errors: no id, an unknown kind.
    assert_eq!(env.run(&["queue", "retry"]).code, Some(2));
    let bad = env.run(&["queue", "retry", "--all-dead", "--kind", "nope"]);
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("unknown job kind \"nope\""),
        "{}",
        bad.stderr
    );
}
