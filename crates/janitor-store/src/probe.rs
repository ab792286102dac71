//! The optional agent liveness probe: before a run is failed or its slot removed, ask the
//! agent's container which runs it knows (`GET http://agent-{agent}:8000/api/executions/running`,
//! the platform's own re-verify), and let the answer enter the verdict as evidence.
//!
//! One request per agent per batch, never per run; at most `concurrency` at once, each
//! bounded by `timeout`; answers (and failures) cached for `cache_ttl`, so a sweep and the
//! workers that follow it ask a busy agent once. An answer that is not the expected JSON is
//! an unreachable agent, logged once per request with why.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use janitor_core::{AgentName, AgentSays, ExecutionId};
use serde::Deserialize;

use crate::StoreError;

/// The platform's own endpoint, for `--agent-probe-url platform`.
pub const PLATFORM_PROBE_URL: &str = "http://agent-{agent}:8000/api/executions/running";
/// Largest answer read from an agent.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// How the probe asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSettings {
    /// `http://…{agent}…`: `{agent}` is replaced by the agent's name, percent-encoded.
    pub url_template: String,
    pub timeout: Duration,
    pub concurrency: usize,
    pub cache_ttl: Duration,
}

/// The runs one agent knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentRuns {
    pub running: HashSet<String>,
    pub pending: HashSet<String>,
    pub recently_completed: HashSet<String>,
}

impl AgentRuns {
    /// What this answer says about one run.
    pub fn says(&self, execution: &ExecutionId) -> AgentSays {
        let id = execution.as_str();
        if self.running.contains(id) {
            AgentSays::Running
        } else if self.pending.contains(id) {
            AgentSays::Pending
        } else if self.recently_completed.contains(id) {
            AgentSays::RecentlyCompleted
        } else {
            AgentSays::Absent
        }
    }
}

/// One agent's answer, or why there is none.
pub type Answer = Result<Arc<AgentRuns>, String>;

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    executions: Vec<WireExecution>,
    #[serde(default)]
    recently_completed_ids: Vec<String>,
    #[serde(default)]
    pending_ids: Vec<String>,
}

#[derive(Deserialize)]
struct WireExecution {
    execution_id: Option<String>,
}

/// Asks agents which runs they know.
#[derive(Debug, Clone)]
pub struct AgentProbe {
    settings: ProbeSettings,
    cache: Arc<Mutex<HashMap<String, (Instant, Answer)>>>,
}

impl AgentProbe {
    /// Checks the template: `http://`, with `{agent}` in it.
    pub fn new(settings: ProbeSettings) -> Result<Self, StoreError> {
        let t = &settings.url_template;
        if !t.starts_with("http://") || !t.contains("{agent}") {
            return Err(StoreError::Config(format!(
                "agent probe URL must be http://… with {{agent}} in it, got {t:?}"
            )));
        }
        if settings.concurrency == 0 || settings.timeout.is_zero() {
            return Err(StoreError::Config(
                "agent probe concurrency and timeout must be at least 1".into(),
            ));
        }
        Ok(Self {
            settings,
            cache: Arc::default(),
        })
    }

    pub fn settings(&self) -> &ProbeSettings {
        &self.settings
    }

    /// The answer of each of these agents (each asked at most once, cached answers reused).
    pub async fn ask(&self, agents: &[AgentName]) -> HashMap<AgentName, Answer> {
        let mut answers = HashMap::new();
        let mut todo = Vec::new();
        {
            let now = Instant::now();
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|_, (at, _)| now.duration_since(*at) < self.settings.cache_ttl);
            for agent in agents {
                if answers.contains_key(agent) || todo.contains(agent) {
                    continue;
                }
                match cache.get(agent.as_str()) {
                    Some((_, answer)) => {
                        answers.insert(agent.clone(), answer.clone());
                    }
                    None => todo.push(agent.clone()),
                }
            }
        }
        let asked: Vec<(AgentName, Answer)> = futures::stream::iter(todo)
            .map(|agent| async move {
                let answer = self.ask_one(&agent).await;
                (agent, answer)
            })
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for (agent, answer) in asked {
            cache.insert(agent.as_str().to_owned(), (now, answer.clone()));
            answers.insert(agent, answer);
        }
        answers
    }

    async fn ask_one(&self, agent: &AgentName) -> Answer {
        let url = self
            .settings
            .url_template
            .replace("{agent}", &percent_encode(agent.as_str()));
        let started = Instant::now();
        let result = tokio::time::timeout(self.settings.timeout, get(&url))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Timeout(format!(
                    "no answer within {} ms",
                    self.settings.timeout.as_millis()
                )))
            })
            .and_then(|body| parse(&body));
        let (outcome, answer) = match result {
            Ok(runs) => ("answered", Ok(Arc::new(runs))),
            Err(failure) => {
                let (outcome, why) = match failure {
                    Failure::Down(why) => ("unreachable", why),
                    Failure::Timeout(why) => ("timeout", why),
                    Failure::Malformed(why) => ("malformed", why),
                };
                tracing::warn!(agent = %agent, url = %url, outcome, error = %why,
                    "agent probe: no usable answer; the agent counts as unreachable");
                (outcome, Err(why))
            }
        };
        janitor_metrics::agent_probe(outcome, started.elapsed());
        answer
    }
}

enum Failure {
    Down(String),
    Timeout(String),
    Malformed(String),
}

/// The body of `GET url` (HTTP/1.1, one connection per request) when the status is 200.
async fn get(url: &str) -> Result<Bytes, Failure> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| Failure::Down(format!("bad URL {url:?}: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| Failure::Down(format!("no host in {url:?}")))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| Failure::Down(format!("connecting to {host}:{port}: {e}")))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Down(format!("handshake with {host}:{port}: {e}")))?;
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Down(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Failure::Down(format!("asking {host}:{port}: {e}")))?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| Failure::Malformed(format!("reading the answer: {e}")))?
        .to_bytes();
    driver.abort();
    if status != hyper::StatusCode::OK {
        return Err(Failure::Malformed(format!("answered HTTP {status}")));
    }
    Ok(body)
}

fn parse(body: &[u8]) -> Result<AgentRuns, Failure> {
    let wire: Wire = serde_json::from_slice(body)
        .map_err(|e| Failure::Malformed(format!("not the expected JSON: {e}")))?;
    Ok(AgentRuns {
        running: wire
            .executions
            .into_iter()
            .filter_map(|e| e.execution_id)
            .collect(),
        pending: wire.pending_ids.into_iter().collect(),
        recently_completed: wire.recently_completed_ids.into_iter().collect(),
    })
}

/// Every byte but `A–Z a–z 0–9 - . _ ~` as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_defensively() {
        let runs = parse(
            br#"{"executions":[{"execution_id":"a"},{"pid":3}],"recently_completed_ids":["b"],"pending_ids":["c"]}"#,
        )
        .ok()
        .unwrap_or_default();
        let id = |s: &str| ExecutionId::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(runs.says(&id("a")), AgentSays::Running);
        assert_eq!(runs.says(&id("b")), AgentSays::RecentlyCompleted);
        assert_eq!(runs.says(&id("c")), AgentSays::Pending);
        assert_eq!(runs.says(&id("d")), AgentSays::Absent);
        // An older agent image answers only `executions`.
        assert!(parse(br#"{"executions":[]}"#).is_ok());
        assert!(parse(b"<html>").is_err());
        assert!(parse(br#"{"executions":"x"}"#).is_err());
    }

    #[test]
    fn agent_names_are_encoded() {
        assert_eq!(percent_encode("ops/β 1"), "ops%2F%CE%B2%201");
        assert_eq!(percent_encode("reporter"), "reporter");
    }

    #[test]
    fn the_template_must_name_the_agent() {
        let settings = |t: &str| ProbeSettings {
            url_template: t.into(),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            cache_ttl: Duration::from_secs(1),
        };
        assert!(AgentProbe::new(settings(PLATFORM_PROBE_URL)).is_ok());
        assert!(AgentProbe::new(settings("http://agent:8000/x")).is_err());
        assert!(AgentProbe::new(settings("https://agent-{agent}/x")).is_err());
    }
}
