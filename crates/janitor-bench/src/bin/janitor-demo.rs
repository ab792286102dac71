//! `make demo`'s helper: shapes an SQLite file and Redis like a platform in the middle of
//! the incident, and runs the operators' stuck-records query.
//!
//! `janitor-demo seed` / `janitor-demo query`, configured by the same environment as
//! `janitor` (`DATABASE_URL`, `REDIS_URL`, `JANITOR_SLOT_PREFIX`, `JANITOR_SLOT_META_PREFIX`).

use anyhow::{bail, Context as _};
use sqlx::{Connection as _, Row as _};

const TRINITY: &str = include_str!("../../../../tests/fixtures/trinity-sqlite.sql");

/// (id, agent, status, started seconds ago, started format, session, slot (age, timeout))
type Run = (
    &'static str,
    &'static str,
    &'static str,
    f64,
    &'static str,
    Option<&'static str>,
    Option<(f64, i64)>,
);

const MIN: f64 = 60.0;

/// The incident and its neighbours.
const RUNS: [Run; 9] = [
    // The slot the platform's global 20-minute TTL reclaimed: 21 minutes old, its own
    // timeout 3900 s. Alive.
    (
        "run-long",
        "reporter",
        "running",
        21.0 * MIN,
        "naive",
        Some("dispatched"),
        Some((21.0 * MIN, 3900)),
    ),
    // Past its own deadline (3600 + 300 s), row still running/dispatched: reclaim + fail.
    (
        "run-stale",
        "reporter",
        "running",
        70.0 * MIN,
        "zulu",
        Some("dispatched"),
        Some((70.0 * MIN, 3600)),
    ),
    // Skipped 15 minutes ago (agent busy): finalize as cancelled.
    (
        "run-skipped",
        "reporter",
        "skipped",
        15.0 * MIN,
        "naive",
        None,
        None,
    ),
    // Finished, but its slot was never released: leaked capacity.
    (
        "run-done",
        "support bot",
        "success",
        4.0 * MIN,
        "zulu",
        Some("sess-41"),
        Some((4.0 * MIN, 1200)),
    ),
    // Healthy.
    (
        "run-fresh",
        "support bot",
        "running",
        2.0 * MIN,
        "sqlite",
        Some("sess-42"),
        Some((2.0 * MIN, 1200)),
    ),
    // Running for three hours without a slot: an orphan.
    (
        "run-orphan",
        "ops/β",
        "running",
        180.0 * MIN,
        "sqlite",
        Some("dispatched"),
        None,
    ),
    // Never got a session in five minutes: a silent launch failure holding a slot.
    (
        "run-mute",
        "ops/β",
        "running",
        5.0 * MIN,
        "naive",
        None,
        Some((5.0 * MIN, 900)),
    ),
    // Its slot's renewal was missed (past its own deadline), but the platform's in-flight
    // marker says the dispatch is alive in a backend: left alone.
    (
        "run-marked",
        "ops/β",
        "running",
        30.0 * MIN,
        "zulu",
        Some("dispatched"),
        Some((30.0 * MIN, 900)),
    ),
    // Waiting for a slot by design: reported, left alone.
    (
        "run-queued",
        "ops/β",
        "queued",
        1.0 * MIN,
        "naive",
        None,
        None,
    ),
];

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("seed") => seed().await,
        Some("query") => query().await,
        _ => bail!("usage: janitor-demo seed|query"),
    }
}

fn sqlite_path() -> anyhow::Result<String> {
    Ok(env("DATABASE_URL")?
        .trim_start_matches("sqlite://")
        .to_owned())
}

async fn seed() -> anyhow::Result<()> {
    let slots = env("JANITOR_SLOT_PREFIX")?;
    let meta = env("JANITOR_SLOT_META_PREFIX")?;
    let mut redis = redis::Client::open(env("REDIS_URL")?)?
        .get_multiplexed_async_connection()
        .await?;
    // A clean demo key space (slots and queue share the demo's own prefix).
    let namespace = slots.split(':').next().unwrap_or("demo").to_owned();
    let old: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{namespace}:*"))
        .query_async(&mut redis)
        .await?;
    if !old.is_empty() {
        redis::cmd("DEL")
            .arg(&old)
            .query_async::<()>(&mut redis)
            .await?;
    }
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut redis).await?;
    let ts = |ago: f64, style: &str| {
        let t = chrono::DateTime::from_timestamp(secs - ago as i64, 0).unwrap_or_default();
        match style {
            "zulu" => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "sqlite" => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            _ => t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        }
    };
    let mut db =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", sqlite_path()?)).await?;
    sqlx::raw_sql(TRINITY)
        .execute(&mut db)
        .await
        .context("creating the platform's schema")?;
    let mut pipe = redis::pipe();
    for (id, agent, status, ago, style, session, slot) in RUNS {
        let started = ts(ago, style);
        sqlx::query(
            "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, claude_session_id) \
             VALUES ($1, 's-daily', $2, $3, $4, 'demo run', 'schedule', $5)",
        )
        .bind(id)
        .bind(agent)
        .bind(status)
        .bind(&started)
        .bind(session)
        .execute(&mut db)
        .await?;
        if status == "running" || status == "success" {
            sqlx::query(
                "INSERT INTO agent_activities (id, agent_name, activity_type, activity_state, started_at, related_execution_id, created_at) \
                 VALUES ($1, $2, 'schedule_start', $3, $4, $5, $4)",
            )
            .bind(format!("act-{id}"))
            .bind(agent)
            .bind(if status == "running" { "started" } else { "completed" })
            .bind(&started)
            .bind(id)
            .execute(&mut db)
            .await?;
        }
        if let Some((age, timeout)) = slot {
            let hash = format!("{meta}{agent}:{id}");
            pipe.cmd("ZADD")
                .arg(format!("{slots}{agent}"))
                .arg(secs as f64 - age)
                .arg(id)
                .ignore();
            pipe.cmd("HSET")
                .arg(&hash)
                .arg("started_at")
                .arg(ts(age, "naive"))
                .arg("message_preview")
                .arg("demo run")
                .arg("slot_number")
                .arg(1)
                .arg("timeout_seconds")
                .arg(timeout)
                .ignore();
            pipe.cmd("EXPIRE").arg(&hash).arg(timeout + 300).ignore();
        }
    }
    // The in-flight marker of run-marked, as the platform's backend keeps it.
    let namespace_prefix = slots.strip_suffix("agent:slots:").unwrap_or_default();
    pipe.cmd("SET")
        .arg(format!("{namespace_prefix}execution:inflight:run-marked"))
        .arg("backend-1")
        .arg("EX")
        .arg(600)
        .ignore();
    // The backlog drain's sentinel: a member with no row by design, a minute old. Left
    // alone.
    pipe.cmd("ZADD")
        .arg(format!("{slots}reporter"))
        .arg(secs as f64 - MIN)
        .arg("drain-5c1e")
        .ignore();
    // A pull-mode run: queued two hours ago, claimed by a worker a minute ago with a lease
    // for another hour, no slot. Left to its lease.
    sqlx::query(
        "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, \
         claude_session_id, queued_at, claim_token, lease_expires_at, claimed_by_worker, redelivery_count) \
         VALUES ('run-leased', 's-daily', 'reporter', 'running', $1, 'demo run', 'schedule', 'dispatched_async', $1, \
         'tok-1', $2, 'pull-worker-1', 0)",
    )
    .bind(ts(120.0 * MIN, "naive"))
    .bind(ts(-60.0 * MIN, "zulu"))
    .execute(&mut db)
    .await?;
    // A slot whose run does not exist at all: leaked capacity too.
    pipe.cmd("ZADD")
        .arg(format!("{slots}support bot"))
        .arg(secs as f64 - 3.0 * MIN)
        .arg("run-ghost")
        .ignore();
    pipe.query_async::<()>(&mut redis).await?;
    db.close().await?;
    println!(
        "seeded a platform-shaped SQLite file with {} runs and their slots",
        RUNS.len() + 1
    );
    Ok(())
}

async fn query() -> anyhow::Result<()> {
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", sqlite_path()?)).await?;
    let sql = "SELECT agent_name, status, claude_session_id FROM schedule_executions \
               WHERE status NOT IN ('completed','failed','cancelled','success')";
    println!("the operators' stuck-records query:");
    for row in sqlx::query(sql).fetch_all(&mut db).await? {
        let agent: String = row.try_get(0)?;
        let status: String = row.try_get(1)?;
        let session: Option<String> = row.try_get(2)?;
        println!(
            "  {agent:<12} {status:<8} {}",
            session.unwrap_or_else(|| "NULL".into())
        );
    }
    Ok(())
}
