//! The agent liveness probe against a real HTTP server playing the agents: alive, pending,
//! recently completed, absent, slow, cut off, malformed — and an agent nobody listens for.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use janitor_e2e::{pairs_by_run, ts_ago, Env, Kind};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A tiny HTTP/1.1 server: `GET /{agent}/api/executions/running` answers as that agent
/// does; it counts the requests per agent.
struct Agents {
    port: u16,
    asked: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Agents {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let counts = asked.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let agent = path
                        .trim_start_matches('/')
                        .split('/')
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    *counts.lock().unwrap().entry(agent.clone()).or_default() += 1;
                    let body = match agent.as_str() {
                        "alive" => r#"{"executions":[{"execution_id":"alive-1"},{"execution_id":"alive-2"}],"recently_completed_ids":[],"pending_ids":[]}"#.to_owned(),
                        "pending" => r#"{"executions":[],"pending_ids":["pending-1"]}"#.to_owned(),
                        "done" => r#"{"executions":[],"recently_completed_ids":["done-1"]}"#.to_owned(),
                        "absent" => r#"{"executions":[{"execution_id":"someone-else"}]}"#.to_owned(),
                        "garbled" => "<html>agent starting</html>".to_owned(),
                        "slow" => {
                            // Longer than the probe's timeout: the answer never counts.
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            r#"{"executions":[{"execution_id":"slow-1"}]}"#.to_owned()
                        }
                        // Cut off: the connection closes without an answer.
                        _ => return,
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { port, asked }
    }

    fn template(&self) -> String {
        format!(
            "http://127.0.0.1:{}/{{agent}}/api/executions/running",
            self.port
        )
    }

    fn asked(&self) -> BTreeMap<String, u32> {
        self.asked.lock().unwrap().clone()
    }
}

/// A stale slot (past its own 600 s deadline) with its dispatched run, for `agent`.
async fn seed_stale(env: &Env, agent: &str, id: &str) {
    let now = env.redis_now().await.unwrap();
    env.seed_slot(agent, id, 30.0 * 60.0, Some(600))
        .await
        .unwrap();
    env.seed_run(
        id,
        agent,
        "running",
        &ts_ago(now, 30.0 * 60.0, "zulu"),
        Some("dispatched"),
    )
    .await
    .unwrap();
}

fn verdicts(report: &serde_json::Value) -> BTreeMap<String, String> {
    pairs_by_run(report)
        .into_iter()
        .map(|(id, pair)| {
            let v = &pair["verdict"];
            let name = match v["verdict"].as_str().unwrap() {
                "alive" => format!("alive:{}", v["says"].as_str().unwrap_or("?")),
                "report" => format!("report:{}", v["concern"].as_str().unwrap_or("?")),
                other => other.to_owned(),
            };
            (id, name)
        })
        .collect()
}

// Multi-threaded: the agents' server runs while the test blocks on the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_asked_once_per_batch_and_its_answer_decides() {
    let agents = Agents::start().await;
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    for (agent, id) in [
        ("alive", "alive-1"),
        ("alive", "alive-2"),
        ("pending", "pending-1"),
        ("done", "done-1"),
        ("absent", "absent-1"),
        ("slow", "slow-1"),
        ("garbled", "garbled-1"),
        ("cutoff", "cutoff-1"),
    ] {
        seed_stale(&env, agent, id).await;
    }
    let template = agents.template();
    let probe = |policy: &str| {
        vec![
            "--agent-probe-url".to_owned(),
            template.clone(),
            "--agent-probe-timeout-ms".to_owned(),
            "300".to_owned(),
            "--agent-unreachable".to_owned(),
            policy.to_owned(),
        ]
    };
    let args = |command: &[&str], policy: &str| {
        let mut all: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
        all.extend(probe(policy));
        all
    };

    // `skip`: an agent without a usable answer is judged on the stores alone.
    let out = env.run(
        &args(&["stuck", "--json"], "skip")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let v = verdicts(&out.ok().json());
    let expect = BTreeMap::from([
        ("absent-1", "reclaim_stale_slot"),
        ("alive-1", "alive:running"),
        ("alive-2", "alive:running"),
        ("cutoff-1", "reclaim_stale_slot"),
        ("done-1", "report:agent_has_result"),
        ("garbled-1", "reclaim_stale_slot"),
        ("pending-1", "alive:pending"),
        ("slow-1", "reclaim_stale_slot"),
    ]);
    let got: BTreeMap<&str, &str> = v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, expect, "{}", out.stderr);
    // One request per agent, never per run (alive has two runs).
    assert!(
        agents.asked().values().all(|n| *n == 1),
        "{:?}",
        agents.asked()
    );
    assert_eq!(agents.asked().len(), 7);
    // A malformed answer is an unreachable agent, with a clear log line.
    assert!(
        out.stderr.contains("agent probe: no usable answer")
            && out.stderr.contains("not the expected JSON")
            && out.stderr.contains("agent=garbled"),
        "{}",
        out.stderr
    );

    // `hold`: act only where the agent answered that it does not know the run.
    let out = env.run(
        &args(&["run", "--once"], "hold")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    out.ok();
    for (id, status) in [
        ("absent-1", "failed"),
        ("alive-1", "running"),
        ("alive-2", "running"),
        ("pending-1", "running"),
        ("done-1", "running"),
        ("slow-1", "running"),
        ("garbled-1", "running"),
        ("cutoff-1", "running"),
    ] {
        assert_eq!(
            env.status(id).await.unwrap().as_deref(),
            Some(status),
            "{id}"
        );
    }
    // The answer is kept with the change.
    let detail = env
        .sql_text("SELECT detail FROM janitor_audit WHERE execution_id = 'absent-1' AND action = 'run_failed'")
        .await
        .unwrap();
    assert_eq!(detail.as_deref(), Some(r#"{"agent_probe":"absent"}"#));

    // Nobody listening at all: under `skip` the stores alone decide, under `hold` nothing.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = format!("http://127.0.0.1:{closed}/{{agent}}/x");
    let out = env.run(&[
        "stuck",
        "--json",
        "--agent-probe-url",
        &down,
        "--agent-unreachable",
        "hold",
    ]);
    let v = verdicts(&out.ok().json());
    assert_eq!(v["alive-1"], "report:agent_unreachable", "{v:?}");
    assert!(
        out.stderr.contains("connecting to 127.0.0.1"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_bad_probe_url_is_a_clear_startup_error() {
    let env = Env::new(Kind::Sqlite).await;
    let out = env.run(&[
        "config",
        "--agent-probe-url",
        "https://agents.internal/running",
    ]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("agent probe URL must be http://"),
        "{}",
        out.stderr
    );
}
