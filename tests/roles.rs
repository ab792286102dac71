//! Scaling out: `janitor run --role producer` sweeps and never applies, `--role worker`
//! applies and never sweeps; each long-running process serves health and readiness, which
//! `janitor healthcheck` (the container health check) reads.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStderr};

use janitor_e2e::{seed_incident, Env, Kind};

fn get(addr: &str, path: &str) -> (u16, String) {
    janitor_e2e::http(addr, "GET", path, None, "")
}

/// Reads log lines until one contains `needle`; returns it. Panics if the process ends first.
fn wait_for_line(lines: &mut impl Iterator<Item = String>, needle: &str) -> String {
    lines
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("the process ended before logging {needle:?}"))
}

/// The `key=value` field of a text log line.
fn field(line: &str, key: &str) -> u64 {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap()
}

/// Starts janitor with info logs on stderr and kills it if the test is still waiting on it
/// after a minute, so a missing log line fails the test instead of hanging it.
fn start(env: &Env, args: &[&str]) -> (Child, std::sync::mpsc::Sender<()>) {
    let child = env
        .command()
        .env("JANITOR_LOG", "info")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (disarm, armed) = std::sync::mpsc::channel::<()>();
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        if armed
            .recv_timeout(std::time::Duration::from_secs(60))
            .is_err()
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
        }
    });
    (child, disarm)
}

fn stderr_lines(child: &mut Child) -> impl Iterator<Item = String> {
    let stderr: ChildStderr = child.stderr.take().unwrap();
    BufReader::new(stderr).lines().map_while(Result::ok)
}

/// SIGTERM, then the rest of the log until exit; asserts a clean exit.
fn terminate(mut child: Child, logs: impl Iterator<Item = String>) -> String {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = logs.collect();
    let rest = rest.join("\n");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest}");
    rest
}

#[tokio::test]
async fn a_producer_and_a_worker_split_the_cycle_and_report_health() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_incident(&env).await;
    let failed = "SELECT COUNT(*) FROM schedule_executions WHERE status = 'failed'";
    let failed_before = env.count(failed).await;

    // The producer: sweeps (enqueues), applies nothing, serves the admin API.
    let (mut producer, producer_watchdog) = start(
        &env,
        &["run", "--role", "producer", "--listen", "127.0.0.1:0"],
    );
    let mut out = BufReader::new(producer.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_owned();
    let mut logs = stderr_lines(&mut producer);
    let swept = wait_for_line(&mut logs, "sweep done");
    let enqueued = field(&swept, "enqueued");
    assert!(enqueued >= 3, "{swept}");
    assert_eq!(
        env.count(failed).await,
        failed_before,
        "a producer applies nothing"
    );

    assert_eq!(get(&addr, "/healthz").0, 200);
    let (status, body) = get(&addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["redis"], "ok");
    assert_eq!(ready["database"], "ok");
    let url = format!("http://{addr}/healthz");
    env.run(&["healthcheck", "--url", &url]).ok();
    producer_watchdog.send(()).unwrap();
    terminate(producer, logs);
    // Nothing listens any more: the health check fails, with a reason.
    let down = env.run(&["healthcheck", "--url", &url]);
    assert_eq!(down.code, Some(1));
    assert!(down.stderr.contains("cannot reach"), "{}", down.stderr);

    // The worker: applies what is queued, never sweeps.
    let (mut worker, worker_watchdog) =
        start(&env, &["run", "--role", "worker", "--listen", "off"]);
    let mut logs = stderr_lines(&mut worker);
    for _ in 0..enqueued {
        wait_for_line(&mut logs, "job done");
    }
    worker_watchdog.send(()).unwrap();
    let rest = terminate(worker, logs);
    assert!(
        !rest.contains("sweep done"),
        "a worker never sweeps: {rest}"
    );
    assert!(
        env.count(failed).await > failed_before,
        "the stale run was failed"
    );
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM schedule_executions WHERE id = 'long3600' AND status = 'running'"
        )
        .await,
        1,
        "the live run is untouched"
    );
}

#[test]
fn bad_role_and_listen_values_are_clear_errors() {
    let env = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(janitor_e2e::janitor_bin())
            .current_dir(env.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["run", "--role", "sweeper"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values: all, producer, worker"));
    let out = run(&["run", "--listen", "localhost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected HOST:PORT"));
    let out = run(&["healthcheck", "--url", "https://x/healthz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only http://"));
}

/// A dead log reader must not take janitor down: once its stderr is a broken pipe, log lines
/// are dropped and SIGTERM still ends it cleanly.
#[tokio::test]
async fn a_closed_log_pipe_does_not_crash_the_process() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let (mut producer, watchdog) = start(&env, &["run", "--role", "producer", "--listen", "off"]);
    let mut logs = stderr_lines(&mut producer);
    wait_for_line(&mut logs, "sweep done");
    // The reader goes away; everything janitor logs from now on hits a broken pipe.
    drop(logs);
    watchdog.send(()).unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &producer.id().to_string()])
        .status()
        .unwrap();
    let status = producer.wait().unwrap();
    assert!(status.success(), "{status}");
}
