//! The scheduler's HTTP intake: `POST /api/v1/skip` on a release `janitor serve`, driven over
//! keep-alive connections on loopback, for a burst of distinct skips (each a row read and a
//! push) and for repeats of one skip (each a row read and an `already_queued`). Every answer
//! must be a 202, and afterwards every distinct run must be queued exactly once.

use std::io::BufRead as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use janitor_queue::JobState;
use janitor_testkit::{ts_ago, Kind};

use crate::{name, Args, Stage};

const TOKEN: &str = "bench-t0ken";

/// One burst's figures.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Distinct skips, then repeats of one, against one server.
pub async fn skip_intake(args: &Args, kind: Kind) -> anyhow::Result<(Burst, Burst)> {
    let stage = Stage::new(kind, janitor_queue::DEFAULT_BACKLOG_CAP).await?;
    let n = args.skip_requests;
    let now = stage.sandbox.redis_now().await?;
    let started = ts_ago(now, 60.0, "naive");
    let ids: Vec<String> = (0..n).map(|i| format!("skip{i:07}")).collect();
    for chunk in ids.chunks(1_000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| {
                format!("('{id}', 's', 'agent one', 'skipped', '{started}', 'm', 'schedule')")
            })
            .collect();
        stage
            .sandbox
            .sql(&format!(
                "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by) VALUES {}",
                values.join(",")
            ))
            .await?;
    }
    let mut server = stage
        .janitor(args, &["serve", "--listen", "127.0.0.1:0"])
        .env("JANITOR_ADMIN_TOKEN", TOKEN)
        .spawn()?;
    let mut first = String::new();
    std::io::BufReader::new(server.stdout.take().context("serve's stdout")?)
        .read_line(&mut first)?;
    let addr = first
        .trim()
        .strip_prefix("listening on http://")
        .with_context(|| format!("serve said {first:?}"))?
        .to_owned();
    let ready = Instant::now();
    while !matches!(request(&addr, "GET", "/readyz", "").await, Ok((200, _))) {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("janitor serve was not ready in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bodies = |pick: &dyn Fn(usize) -> String| -> Vec<String> {
        (0..n)
            .map(|i| format!("{{\"execution_id\":\"{}\"}}", pick(i)))
            .collect()
    };
    let distinct = burst(&addr, args.skip_connections, bodies(&|i| ids[i].clone())).await?;
    let repeats = burst(&addr, args.skip_connections, bodies(&|_| ids[0].clone())).await?;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    server.wait()?;
    let mut queued = 0;
    let mut cursor = 0;
    loop {
        let page = stage
            .queue
            .list(JobState::Scheduled, None, cursor, 500)
            .await?;
        queued += page.jobs.len();
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    stage.sandbox.clear_redis().await?;
    if queued != n {
        bail!("{queued} finalize jobs queued for {n} distinct skips");
    }
    eprintln!(
        "skip intake on {}: {n} distinct at {:.0}/s, {n} repeats at {:.0}/s",
        name(kind),
        distinct.per_sec,
        repeats.per_sec
    );
    Ok((distinct, repeats))
}

/// Sends every body once over `connections` keep-alive connections; every answer must be 202.
async fn burst(addr: &str, connections: usize, bodies: Vec<String>) -> anyhow::Result<Burst> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (addr, bodies, next) = (addr.to_owned(), bodies.clone(), next.clone());
        tasks.spawn(async move {
            let mut sender = connect(&addr).await?;
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return anyhow::Ok(latencies);
                };
                let at = Instant::now();
                let (status, answer) =
                    send(&mut sender, &addr, "POST", "/api/v1/skip", body).await?;
                latencies.push(at.elapsed());
                if status != 202 {
                    bail!("skip answered {status}: {answer}");
                }
            }
        });
    }
    let mut latencies = Vec::with_capacity(bodies.len());
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
    };
    Ok(Burst {
        per_sec: bodies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn send(
    sender: &mut Sender,
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    sender.ready().await?;
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(body.to_owned())))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let answer = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&answer).into_owned()))
}

/// One request on its own connection.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    send(&mut connect(addr).await?, addr, method, path, body).await
}
