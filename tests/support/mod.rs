//! Helpers for the end-to-end tests: run the real `janitor` binary with an isolated
//! environment, and shape Redis and the database the way the platform leaves them.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use janitor_testkit::{redis_url, ts_ago, Kind, Sandbox, TestDb};

/// The repository's root (tests run in `tests/`).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `janitor` binary next to this test executable (`make test` builds it first).
pub fn janitor_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(format!("janitor{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p janitor`, which `make test` does)",
        bin.display()
    );
    bin
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "janitor failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// An isolated janitor environment: a [`Sandbox`] (its own database and slot prefixes)
/// and its own working directory, so no stray `janitor.toml` is picked up.
#[derive(Debug)]
pub struct Env {
    pub sandbox: Sandbox,
    pub workdir: tempfile::TempDir,
}

impl std::ops::Deref for Env {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Env {
    pub async fn new(kind: Kind) -> Self {
        Self {
            sandbox: Sandbox::new(kind).await.unwrap(),
            workdir: tempfile::tempdir().unwrap(),
        }
    }

    /// A command with only this environment's settings (via env, as an operator would
    /// configure a deployment).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(janitor_bin());
        cmd.current_dir(self.workdir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.db.url)
            .env("REDIS_URL", redis_url())
            .env("JANITOR_SLOT_PREFIX", &self.slot_prefix)
            .env("JANITOR_SLOT_META_PREFIX", &self.meta_prefix)
            .env("JANITOR_QUEUE", &self.queue)
            .env("JANITOR_LOG_FORMAT", "text");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run(self.command().args(args))
    }

    /// Starts the binary in the background with captured output.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A number from the database (first column of the first row).
    pub async fn count(&self, sql: &str) -> i64 {
        self.sql_text(&format!("SELECT CAST(({sql}) AS TEXT)"))
            .await
            .unwrap()
            .unwrap_or_default()
            .parse()
            .unwrap()
    }

    /// One column of a run's row, as text (`None` for NULL or no row).
    pub async fn column(&self, id: &str, column: &str) -> Option<String> {
        self.sql_text(&format!(
            "SELECT CAST({column} AS TEXT) FROM schedule_executions WHERE id = '{id}'"
        ))
        .await
        .unwrap()
    }

    /// [`Env::count`] for an owned query (handy in closures).
    pub async fn count_owned(&self, sql: String) -> i64 {
        self.count(&sql).await
    }

    /// Leaves a queued job as apalis-redis does once it gives up on it: out of the schedule,
    /// in the dead set, with its attempts, last result and finish time (now) in its meta hash.
    pub async fn mark_dead(&self, id: &str, attempts: u64, result: &str) {
        let now = self.redis_now().await.unwrap() as u64;
        let mut redis = self.redis().await.unwrap();
        redis::pipe()
            .cmd("ZREM")
            .arg(format!("{}:scheduled", self.queue))
            .arg(id)
            .cmd("SADD")
            .arg(format!("{}:dead", self.queue))
            .arg(id)
            .cmd("HSET")
            .arg(format!("{}:meta:{id}", self.queue))
            .arg("attempts")
            .arg(attempts)
            .arg("result")
            .arg(result)
            .arg("done_at")
            .arg(now)
            .exec_async(&mut redis)
            .await
            .unwrap();
    }

    /// Seeds many runs in one statement: (id, agent, status, started_at, session).
    pub async fn seed_runs(&self, runs: &[(String, String, &str, String, Option<&str>)]) {
        for chunk in runs.chunks(500) {
            let values: Vec<String> = chunk
                .iter()
                .map(|(id, agent, status, started, session)| {
                    let session = session.map_or("NULL".to_owned(), |s| format!("'{s}'"));
                    format!("('{id}', '__manual__', '{agent}', '{status}', '{started}', 'm', 'schedule', {session})")
                })
                .collect();
            self.sql(&format!(
                "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, claude_session_id) VALUES {}",
                values.join(", ")
            ))
            .await
            .unwrap();
        }
    }

    /// Seeds many slots in one pipeline: (agent, execution, age in seconds, timeout).
    pub async fn seed_slots(&self, slots: &[(String, String, f64, i64)]) {
        let now = self.redis_now().await.unwrap();
        let mut pipe = redis::pipe();
        for (agent, execution, age, timeout) in slots {
            let meta = format!("{}{agent}:{execution}", self.meta_prefix);
            pipe.cmd("ZADD")
                .arg(format!("{}{agent}", self.slot_prefix))
                .arg(now - age)
                .arg(execution)
                .ignore();
            pipe.cmd("HSET")
                .arg(&meta)
                .arg("timeout_seconds")
                .arg(timeout)
                .arg("slot_number")
                .arg(1)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.redis().await.unwrap())
            .await
            .unwrap();
    }
}

/// Runs a prepared command and captures its output.
pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Seeds the incident and its neighbours; returns the verdict janitor should give each.
pub async fn seed_incident(env: &Env) -> BTreeMap<&'static str, &'static str> {
    let now = env.redis_now().await.unwrap();
    let min = 60.0;
    // The incident: acquired 21 minutes ago with its own 3600 s timeout — alive.
    env.seed_slot("agent:one", "long3600", 21.0 * min, Some(3600))
        .await
        .unwrap();
    env.seed_run(
        "long3600",
        "agent:one",
        "running",
        &ts_ago(now, 21.0 * min, "naive"),
        Some("dispatched"),
    )
    .await
    .unwrap();
    // A slot past its own deadline (900 + 300 s) with its dispatched run: reclaim + fail.
    env.seed_slot("agent:one", "stale900", 25.0 * min, Some(900))
        .await
        .unwrap();
    env.seed_run(
        "stale900",
        "agent:one",
        "running",
        &ts_ago(now, 25.0 * min, "zulu"),
        Some("dispatched"),
    )
    .await
    .unwrap();
    // A live slot whose run already succeeded: leaked capacity.
    env.seed_slot("team/β two", "leaked", 2.0 * min, Some(3600))
        .await
        .unwrap();
    env.seed_run(
        "leaked",
        "team/β two",
        "success",
        &ts_ago(now, 2.0 * min, "sqlite"),
        Some("sess-9"),
    )
    .await
    .unwrap();
    // A live slot with no row for longer than the grace: leaked too.
    env.seed_slot("team/β two", "ghost", 1.0 * min, Some(3600))
        .await
        .unwrap();
    // A slot created this instant whose row is not written yet: left alone.
    env.seed_slot("team/β two", "newborn", 0.0, Some(3600))
        .await
        .unwrap();
    // A running row whose slot is gone, past its deadline: orphan.
    env.seed_run(
        "orphan",
        "agent:one",
        "running",
        &ts_ago(now, 2.0 * 3600.0, "sqlite"),
        Some("dispatched"),
    )
    .await
    .unwrap();
    // A run that never got a session: fail it.
    env.seed_run(
        "nosession",
        "agent:one",
        "running",
        &ts_ago(now, 5.0 * min, "zulu"),
        None,
    )
    .await
    .unwrap();
    // Skipped 11 minutes ago: finalize; skipped 2 minutes ago: not yet.
    env.seed_run(
        "skipold",
        "agent:one",
        "skipped",
        &ts_ago(now, 11.0 * min, "naive"),
        None,
    )
    .await
    .unwrap();
    env.seed_run(
        "skipnew",
        "agent:one",
        "skipped",
        &ts_ago(now, 2.0 * min, "naive"),
        None,
    )
    .await
    .unwrap();
    // Queued rows hold no slot by design: report only. Unknown statuses are left alone.
    env.seed_run(
        "queued",
        "agent:one",
        "queued",
        &ts_ago(now, 30.0 * min, "naive"),
        None,
    )
    .await
    .unwrap();
    env.seed_run(
        "weird",
        "agent:one",
        "paused",
        &ts_ago(now, 30.0 * min, "naive"),
        None,
    )
    .await
    .unwrap();
    // An unreadable timestamp is reported, never guessed.
    env.seed_run(
        "badtime",
        "agent:one",
        "running",
        "yesterday-ish",
        Some("dispatched"),
    )
    .await
    .unwrap();
    // Terminal history is not listed.
    env.seed_run(
        "done",
        "agent:one",
        "failed",
        &ts_ago(now, 3.0 * 3600.0, "naive"),
        Some("x"),
    )
    .await
    .unwrap();
    BTreeMap::from([
        ("long3600", "healthy"),
        ("stale900", "reclaim_stale_slot"),
        ("leaked", "release_leaked_slot"),
        ("ghost", "release_leaked_slot"),
        ("newborn", "healthy"),
        ("orphan", "fail_orphan"),
        ("nosession", "fail_never_launched"),
        ("skipold", "finalize_skipped"),
        ("skipnew", "healthy"),
        ("queued", "report"),
        ("weird", "report"),
        ("badtime", "report"),
    ])
}

/// A janitor process serving the admin API (`serve`, or `run` with `--listen`): killed if
/// the test ends without stopping it.
#[derive(Debug)]
pub struct Served {
    pub child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Dropped with this: the watchdog stands down.
    _watchdog: std::sync::mpsc::Sender<()>,
}

impl Env {
    /// Starts `janitor ARGS` (which must listen on `127.0.0.1:0`) with extra environment
    /// and returns once it said where it listens.
    pub fn serve(&self, args: &[&str], envs: &[(&str, &str)]) -> Served {
        let served = self.serve_starting(args, envs);
        served.wait_ready();
        served
    }

    /// [`Env::serve`] without waiting for its stores: it returns as soon as the process
    /// listens (while it may still answer `/readyz` with "starting").
    pub fn serve_starting(&self, args: &[&str], envs: &[(&str, &str)]) -> Served {
        self.start_serving(args, envs, std::process::Stdio::null())
    }

    /// [`Env::serve`] with info logs, and the lines it logs (read them, or it blocks once
    /// the pipe is full).
    pub fn serve_logged(
        &self,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> (Served, impl Iterator<Item = String>) {
        use std::io::BufRead as _;
        let mut envs = envs.to_vec();
        envs.push(("JANITOR_LOG", "info"));
        let mut served = self.start_serving(args, &envs, std::process::Stdio::piped());
        served.wait_ready();
        let stderr = served.child.stderr.take().unwrap();
        let lines = std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok);
        (served, lines)
    }

    fn start_serving(
        &self,
        args: &[&str],
        envs: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> Served {
        use std::io::BufRead as _;
        let mut child = self
            .command()
            .envs(envs.iter().copied())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("janitor {args:?} did not listen: {first:?}"))
            .to_owned();
        // A process the test still holds after two minutes is hung: kill it, so the test
        // fails instead of hanging the suite.
        let (alive, watched) = std::sync::mpsc::channel::<()>();
        let pid = child.id().to_string();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                watched.recv_timeout(std::time::Duration::from_secs(120))
            {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        });
        Served {
            child,
            addr,
            _watchdog: alive,
        }
    }
}

impl Served {
    /// Returns once the process has reached its stores (it listens before it does, and
    /// answers "starting" meanwhile); bounded, so a process that never gets there fails the
    /// test.
    pub fn wait_ready(&self) {
        let begun = std::time::Instant::now();
        // A probe that lands while the waiting server hands the socket to the real one
        // can be reset (as an orchestrator's probe can): not ready yet, ask again.
        while try_http(&self.addr, "GET", "/readyz", None, "")
            .map_or(true, |(_, body)| body.contains("starting"))
        {
            assert!(
                begun.elapsed() < std::time::Duration::from_secs(30),
                "janitor at {} never reached its stores",
                self.addr
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// SIGTERM; asserts a clean exit.
    pub fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a plain socket: (status, body). Gives up after a minute
/// without an answer, so a hung server fails the test instead of hanging it.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    try_http(addr, method, path, token, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// [`http`], with a connection error or a malformed answer as an error.
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let bad = |what: &str| std::io::Error::other(what.to_owned());
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    // Read the head, then the body by its Content-Length (a server may keep the connection
    // open whatever the request said), or to the end when it gives none.
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut reader, &mut line)?;
        if n == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        }
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    let body = String::from_utf8(body).map_err(|_| bad("a body that is not UTF-8"))?;
    Ok((status, body))
}

/// The pairs of a `janitor stuck --json` report, by execution id (the slot's, else the
/// row's).
pub fn pairs_by_run(report: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            let id = pair["slot"]["execution_id"]
                .as_str()
                .or(pair["row"]["execution_id"].as_str())
                .unwrap();
            (id.to_owned(), pair.clone())
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include every pair in `labels`
/// (Prometheus text format; janitor's label values hold no commas or quotes).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let have: Vec<&str> = series_labels.split(',').collect();
        if labels
            .iter()
            .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()))
        {
            *total.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    total.unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
}

/// `GET /metrics` of a served process (asserting a 200).
pub fn scrape(addr: &str) -> String {
    let (status, text) = http(addr, "GET", "/metrics", None, "");
    assert_eq!(status, 200, "{text}");
    text
}
