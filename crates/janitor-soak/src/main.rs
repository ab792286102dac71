//! `janitor-soak`: plays a platform whose truth is known, runs janitor beside it as separate
//! processes (one producer, several workers), breaks everything around janitor while it
//! works — SIGKILLed processes, Redis killed -9 and restarted from its AOF, database
//! outages longer than a retry budget, cut connections, processes started while a store is
//! down — and then checks every run against the truth.
//!
//! `make soak` runs both databases at full size; `make test` runs `--short` on both.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use janitor_testkit::{Kind, TestDb};
use rand::Rng as _;

mod db;
mod oracle;
mod platform;
mod procs;

use db::Db;
use oracle::{AuditRow, Verdicts, World};
use platform::{now, Class, Fate, Platform, Timing, Truth};
use procs::{Janitor, Launch, Redis, Role};

#[derive(Debug, Parser)]
#[command(about = "A chaos soak of janitor against a simulated platform, checked by an oracle")]
struct Args {
    /// Which database(s).
    #[arg(long, value_enum, default_value_t = Which::Both)]
    db: Which,
    /// The short soak of `make test`: 1,200 runs in about a minute, one worker kill (at
    /// least), one Redis restart, one database outage.
    #[arg(long)]
    short: bool,
    /// Runs per database (default 10,000; 1,200 with --short).
    #[arg(long)]
    runs: Option<usize>,
    /// Runs started per second (default 30; 20 with --short).
    #[arg(long)]
    rate: Option<f64>,
    /// Replay a soak: the fleet, every run's fate and the fault schedule follow the seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Worker processes (0: none ever start — the oracle must report misses).
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// The TTL buffer janitor is told, in seconds (default: the platform's true one, 3 s).
    /// A smaller value misconfigures janitor to judge slots by too short a TTL — the oracle
    /// must report false reaps.
    #[arg(long)]
    janitor_ttl_buffer_secs: Option<i64>,
    /// The janitor binary (default: next to this one).
    #[arg(long)]
    janitor_bin: Option<PathBuf>,
    /// Keep the soak's directory (logs, Redis AOF, SQLite file) even when it passes.
    #[arg(long)]
    keep: bool,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Sqlite,
    Postgres,
    Both,
}

/// The platform's thresholds in the soak: seconds, so thousands of runs live and die
/// within minutes. janitor is told the same (unless a validation run says otherwise).
const TIMING: Timing = Timing {
    ttl_buffer: 3.0,
    missing_row_grace: 3.0,
    session_grace: 4.0,
    skipped_after: 4.0,
    renew_every: 1.0,
};
/// janitor's retry settings in the soak: 8 tries capped at 2 s is an ~11 s budget, so a
/// 15 s outage outlasts it and work goes dead, to be re-driven 8 s later.
const RETRY_MAX_DELAY_SECS: u64 = 2;
const DEAD_RETRY_AFTER_SECS: u64 = 8;
/// Seconds between janitor's full sweeps in the soak (see the launch settings).
const SWEEP_INTERVAL_SECS: u64 = 5;
/// No fault for this long after the start (10 s with --short): the calm sample.
const CALM_SECS: f64 = 45.0;
const CALM_SECS_SHORT: f64 = 10.0;
/// A stale slot due this close to the first fault is not in the calm sample.
const CALM_MARGIN_SECS: f64 = 3.0;
/// The calm sample's p99 reap latency must be within this (issue 14), in the full soak.
const CALM_P99_SECS: f64 = 2.0;
/// A producer killed mid-sweep leaves its sweep lease for this long.
const SWEEP_LEASE_SECS: f64 = 30.0;
/// The blast-radius breaker in the soak: when an outage ends, every run it hid is due at
/// once and the breaker trips (as it must: that is the fleet-outage pattern). It holds for
/// this long, then drains at this rate; both shortened from 300 s and 100/min so the held
/// work is done within the soak's bound.
const BREAKER_COOL_OFF_SECS: u64 = 15;
const BREAKER_DRAIN_PER_MINUTE: u64 = 3_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    KillWorker { restart_after: f64 },
    KillProducer { restart_after: f64 },
    RestartRedis { down_for: f64 },
    DbOutage { secs: f64 },
    CutConnections,
}

#[derive(Debug, Default, serde::Serialize)]
struct FaultCounts {
    worker_kills: u32,
    producer_kills: u32,
    redis_restarts: u32,
    db_outages: u32,
    db_outage_secs: f64,
    connection_cuts: u32,
    started_while_down: u32,
    /// Times the producer's breaker tripped (read from its logs).
    breaker_trips: u32,
    unexpected_exits: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct Outcome {
    db: &'static str,
    short: bool,
    seed: u64,
    runs: usize,
    elapsed_secs: f64,
    bound_secs: f64,
    fates: Vec<(String, usize)>,
    faults: FaultCounts,
    verdicts: Verdicts,
    #[serde(skip)]
    histories: Vec<String>,
    #[serde(skip)]
    dir: PathBuf,
}

impl Outcome {
    fn failures(&self) -> usize {
        self.verdicts.failures() + self.faults.unexpected_exits.len() + usize::from(self.slow())
    }

    /// The calm sample's p99 is over its bound (judged in the full soak; the short one
    /// of `make test` shares two cores with the test suite).
    fn slow(&self) -> bool {
        !self.short
            && oracle::percentile(&self.verdicts.calm_latencies, 0.99)
                .is_some_and(|p99| p99 > CALM_P99_SECS)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("janitor-soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let seed = args.seed.unwrap_or_else(|| rand::thread_rng().gen());
        let kinds: &[Kind] = match args.db {
            Which::Sqlite => &[Kind::Sqlite],
            Which::Postgres => &[Kind::Postgres],
            Which::Both => &[Kind::Sqlite, Kind::Postgres],
        };
        let mut outcomes = Vec::new();
        for &kind in kinds {
            match soak(kind, seed, &args).await {
                Ok(outcome) => {
                    print!("{}", render(&outcome));
                    outcomes.push(outcome);
                }
                Err(e) => {
                    eprintln!("janitor-soak ({kind:?}, seed {seed}): {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        if let Some(path) = &args.json {
            if let Err(e) = std::fs::write(
                path,
                serde_json::to_string_pretty(&outcomes).unwrap_or_default(),
            ) {
                eprintln!("janitor-soak: writing {}: {e}", path.display());
            }
        }
        let failed: usize = outcomes.iter().map(Outcome::failures).sum();
        if failed > 0 {
            eprintln!("janitor-soak: FAILED ({failed} findings); replay with --seed {seed}");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

fn janitor_bin(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(bin) = &args.janitor_bin {
        return Ok(bin.clone());
    }
    let me = std::env::current_exe()?;
    let dir = me.parent().context("no directory for this binary")?;
    // A test binary lives in target/<profile>/deps; the binaries one level up.
    for candidate in [dir.join("janitor"), dir.join("../janitor")] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "no janitor binary next to {} (build it: cargo build -p janitor, or pass --janitor-bin)",
        me.display()
    )
}

async fn soak(kind: Kind, seed: u64, args: &Args) -> anyhow::Result<Outcome> {
    let runs = args.runs.unwrap_or(if args.short { 1_200 } else { 10_000 });
    let rate = args.rate.unwrap_or(if args.short { 20.0 } else { 30.0 });
    let load_secs = runs as f64 / rate;
    let db_name = match kind {
        Kind::Sqlite => "sqlite",
        Kind::Postgres => "postgres",
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("janitor-soak-{db_name}-"))
        .tempdir()?;
    let mut redis = Redis::start(dir.path())?;
    // PostgreSQL: a fresh database, dropped when the soak ends (TestDb's drop).
    let pg = match kind {
        Kind::Postgres => Some(TestDb::postgres().await?),
        Kind::Sqlite => None,
    };
    let url = match &pg {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite://{}", dir.path().join("platform.db").display()),
    };
    let janitor_url = match kind {
        Kind::Sqlite => url.clone(),
        Kind::Postgres => format!("{url}?application_name={}", db::JANITOR_APP),
    };
    let buffer = args
        .janitor_ttl_buffer_secs
        .unwrap_or(TIMING.ttl_buffer as i64);
    let mut fleet_rng = platform::rng(seed, 1);
    let agents = platform::fleet(&mut fleet_rng);
    let max_timeout = agents.iter().map(|a| a.timeout).max().unwrap_or(9);
    let launch = Launch {
        bin: janitor_bin(args)?,
        dir: dir.path().to_owned(),
        env: vec![
            ("DATABASE_URL".into(), janitor_url),
            ("REDIS_URL".into(), redis.url()),
            ("JANITOR_QUEUE".into(), "soak".into()),
            ("JANITOR_TTL_BUFFER_SECS".into(), buffer.to_string()),
            (
                "JANITOR_MISSING_ROW_GRACE_SECS".into(),
                (TIMING.missing_row_grace as i64).to_string(),
            ),
            (
                "JANITOR_SESSION_GRACE_SECS".into(),
                (TIMING.session_grace as i64).to_string(),
            ),
            (
                "JANITOR_SKIPPED_AFTER_SECS".into(),
                (TIMING.skipped_after as i64).to_string(),
            ),
            (
                "JANITOR_DEFAULT_TIMEOUT_SECS".into(),
                max_timeout.to_string(),
            ),
            // Full sweeps below the soak's shortest deadline (a 4 s timeout + 3 s buffer),
            // as the default 60 s is below the platform's (60 s + 300 s); due passes at
            // their default, every second.
            (
                "JANITOR_SWEEP_INTERVAL_SECS".into(),
                SWEEP_INTERVAL_SECS.to_string(),
            ),
            ("JANITOR_HEARTBEAT_SECS".into(), "1".into()),
            ("JANITOR_MISSED_HEARTBEATS".into(), "3".into()),
            (
                "JANITOR_RETRY_MAX_DELAY_SECS".into(),
                RETRY_MAX_DELAY_SECS.to_string(),
            ),
            (
                "JANITOR_DEAD_RETRY_AFTER_SECS".into(),
                DEAD_RETRY_AFTER_SECS.to_string(),
            ),
            (
                "JANITOR_BREAKER_COOL_OFF_SECS".into(),
                BREAKER_COOL_OFF_SECS.to_string(),
            ),
            (
                "JANITOR_BREAKER_DRAIN_PER_MINUTE".into(),
                BREAKER_DRAIN_PER_MINUTE.to_string(),
            ),
            ("JANITOR_LOG_FORMAT".into(), "text".into()),
            ("RUST_LOG".into(), "info".into()),
        ],
    };

    // The platform's tables, as a new user creates them.
    let status = std::process::Command::new(&launch.bin)
        .args(["migrate", "--create-platform-tables"])
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .env("DATABASE_URL", &url)
        .current_dir(dir.path())
        .output()
        .context("running janitor migrate")?;
    anyhow::ensure!(
        status.status.success(),
        "janitor migrate failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let db = Db::connect(&url).await?;
    db.seed_agents(&agents).await?;

    let client = redis::Client::open(redis.url())?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let conn = redis::aio::ConnectionManager::new_with_config(client, config).await?;

    let mut producer = Janitor::new(Role::Producer, 0);
    let mut workers: Vec<Janitor> = (0..args.workers)
        .map(|i| Janitor::new(Role::Worker, i))
        .collect();
    producer.start(&launch)?;
    for worker in &mut workers {
        worker.start(&launch)?;
    }

    let mut plan_rng = platform::rng(seed, 2);
    let plans = platform::plans(&mut plan_rng, runs, rate, agents.len());
    let faults = fault_plan(
        &mut platform::rng(seed, 3),
        kind,
        args.short,
        load_secs,
        args.workers,
    );
    let bound = faults
        .iter()
        .filter_map(|(_, f)| match f {
            Fault::DbOutage { secs } => Some(*secs),
            _ => None,
        })
        .fold(0.0, f64::max)
        + DEAD_RETRY_AFTER_SECS as f64
        + SWEEP_LEASE_SECS
        + BREAKER_COOL_OFF_SECS as f64
        + 30.0;

    // Runs due before the first fault (less a margin) are the calm sample of the reap
    // latency: what janitor does at its default cadences, nothing in its way.
    let first_fault = faults.first().map_or(load_secs, |(t, _)| *t);
    let base = now() + 0.5;
    let calm_until = base + first_fault - CALM_MARGIN_SECS;
    let platform = Arc::new(Platform {
        redis: conn.clone(),
        db: db.clone(),
        timing: TIMING,
        agents: agents.clone(),
        base,
    });
    let tasks: Vec<_> = plans
        .into_iter()
        .map(|plan| tokio::spawn(platform.clone().play(plan)))
        .collect();

    // The faults, on schedule, while the platform plays; every process that exits by
    // itself is recorded and restarted.
    let mut counts = FaultCounts::default();
    let mut pending: Vec<(f64, Fault)> = faults;
    let mut restarts: Vec<(f64, Option<usize>)> = Vec::new();
    let mut outage: Option<(f64, db::Outage)> = None;
    let mut redis_back_at: Option<f64> = None;
    let mut fault_rng = platform::rng(seed, 4);
    while !tasks.iter().all(|t| t.is_finished()) || outage.is_some() || redis_back_at.is_some() {
        let t = now() - base;
        while let Some(&(at, fault)) = pending.first() {
            if at > t {
                break;
            }
            pending.remove(0);
            match fault {
                Fault::KillWorker { restart_after } if !workers.is_empty() => {
                    let i = fault_rng.gen_range(0..workers.len());
                    workers[i].kill();
                    counts.worker_kills += 1;
                    restarts.push((t + restart_after, Some(i)));
                }
                Fault::KillWorker { .. } => {}
                Fault::KillProducer { restart_after } => {
                    producer.kill();
                    counts.producer_kills += 1;
                    restarts.push((t + restart_after, None));
                }
                Fault::RestartRedis { down_for } if redis_back_at.is_none() => {
                    redis.kill();
                    counts.redis_restarts += 1;
                    redis_back_at = Some(t + down_for);
                    // A process started while its store is down must wait, not exit.
                    if let Some(w) = workers.first_mut() {
                        w.kill();
                        w.start(&launch)?;
                        counts.started_while_down += 1;
                    }
                }
                Fault::RestartRedis { .. } => {}
                Fault::DbOutage { secs } if outage.is_none() => {
                    outage = Some((t + secs, db::Outage::begin(&url).await?));
                    counts.db_outages += 1;
                    counts.db_outage_secs += secs;
                    producer.kill();
                    producer.start(&launch)?;
                    counts.started_while_down += 1;
                }
                Fault::DbOutage { .. } => {}
                Fault::CutConnections => {
                    if kind == Kind::Postgres {
                        db::cut_connections(&url).await?;
                        counts.connection_cuts += 1;
                    }
                }
            }
        }
        if redis_back_at.is_some_and(|at| at <= t) {
            redis.up()?;
            redis_back_at = None;
        }
        if outage.as_ref().is_some_and(|(until, _)| *until <= t) {
            if let Some((_, o)) = outage.take() {
                o.end().await?;
            }
        }
        restarts.retain(|&(at, which)| {
            if at > t {
                return true;
            }
            let _ = match which {
                Some(i) => workers[i].start(&launch),
                None => producer.start(&launch),
            };
            false
        });
        producer.check(&launch)?;
        for w in &mut workers {
            w.check(&launch)?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, which) in restarts.drain(..) {
        match which {
            Some(i) => workers[i].start(&launch)?,
            None => producer.start(&launch)?,
        }
    }
    let mut truths: Vec<Truth> = Vec::with_capacity(tasks.len());
    for task in tasks {
        truths.push(task.await.context("a platform task panicked")?);
    }

    // Quiesce: until nothing dead is outstanding, or the bound has passed for every run.
    let last_due = truths.iter().filter_map(|t| t.due).fold(now(), f64::max);
    loop {
        producer.check(&launch)?;
        for w in &mut workers {
            w.check(&launch)?;
        }
        let world = read_world(&db, conn.clone(), &agents).await?;
        let v = oracle::judge(&truths, &world, now(), bound, calm_until);
        if v.outstanding == 0 || now() > last_due + bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    producer.stop(Duration::from_secs(10));
    for w in &mut workers {
        w.stop(Duration::from_secs(10));
    }
    let end = now();
    counts.breaker_trips = count_in_logs(dir.path(), "producer-", "blast-radius breaker tripped");
    let world = read_world(&db, conn, &agents).await?;
    let verdicts = oracle::judge(&truths, &world, end, bound, calm_until);
    counts.unexpected_exits = producer
        .unexpected_exits
        .iter()
        .chain(workers.iter().flat_map(|w| w.unexpected_exits.iter()))
        .cloned()
        .collect();

    // Up to four offending runs of each finding, so every kind of failure is shown.
    let mut shown: HashSet<&String> = HashSet::new();
    let mut histories = Vec::new();
    for (finding, ids) in [
        ("false reap", &verdicts.false_reaps),
        ("miss", &verdicts.misses),
        ("duplicate", &verdicts.duplicates),
        ("change without its audit row", &verdicts.missing_audit),
        ("audit row without its change", &verdicts.phantom_audit),
        ("wrong effect", &verdicts.wrong_effects),
    ] {
        for id in ids.iter().filter(|id| shown.insert(id)).take(4) {
            if let Some(t) = truths.iter().find(|t| &t.id == id) {
                histories.push(format!("[{finding}] {}", oracle::history(t, &world, base)));
            }
        }
    }
    let fates = oracle::fates(&truths)
        .into_iter()
        .map(|(f, n)| (f.label().to_owned(), n))
        .collect();
    let outcome = Outcome {
        db: db_name,
        short: args.short,
        seed,
        runs,
        elapsed_secs: end - base,
        bound_secs: bound,
        fates,
        faults: counts,
        verdicts,
        histories,
        dir: dir.path().to_owned(),
    };
    if outcome.failures() > 0 || args.keep {
        std::fs::write(dir.path().join("report.md"), render(&outcome))?;
        let kept = dir.keep();
        eprintln!(
            "janitor-soak: logs, AOF and database kept in {}",
            kept.display()
        );
    }
    drop(redis);
    Ok(outcome)
}

/// The faults of one soak, by time after the start: kills throughout, Redis restarts and
/// database outages at fixed fractions of the load.
fn fault_plan(
    rng: &mut rand::rngs::StdRng,
    kind: Kind,
    short: bool,
    load: f64,
    workers: usize,
) -> Vec<(f64, Fault)> {
    let mut plan = Vec::new();
    let calm = if short { CALM_SECS_SHORT } else { CALM_SECS };
    let mut t = calm - 5.0;
    while workers > 0 && t < load {
        t += rng.gen_range(if short { 5.0..12.0 } else { 8.0..20.0 });
        plan.push((
            t,
            Fault::KillWorker {
                restart_after: rng.gen_range(0.0..1.5),
            },
        ));
    }
    let mut t = calm + 7.0;
    while t < load {
        plan.push((
            t,
            Fault::KillProducer {
                restart_after: rng.gen_range(0.0..2.0),
            },
        ));
        t += rng.gen_range(20.0..45.0);
    }
    if kind == Kind::Postgres {
        let mut t = calm + 2.0;
        while t < load {
            plan.push((t, Fault::CutConnections));
            t += rng.gen_range(10.0..25.0);
        }
    }
    let (redis_at, outages): (&[f64], &[(f64, f64)]) = if short {
        (&[0.25], &[(0.45, 16.0)])
    } else {
        (&[0.2, 0.65], &[(0.35, 20.0), (0.75, 45.0)])
    };
    for &at in redis_at {
        plan.push((
            at * load,
            Fault::RestartRedis {
                down_for: rng.gen_range(1.0..3.0),
            },
        ));
    }
    for &(at, secs) in outages {
        // No kill or cut from an outage's start to 20 s past its end: janitor's own
        // sessions and processes must recover from it, not a restart that happens to
        // come along (a session opened read-only stays read-only until it is replaced).
        let (from, to) = (at * load, at * load + secs + 20.0);
        plan.retain(|(t, f)| {
            !(matches!(
                f,
                Fault::KillWorker { .. } | Fault::KillProducer { .. } | Fault::CutConnections
            ) && (from..to).contains(t))
        });
        plan.push((at * load, Fault::DbOutage { secs }));
    }
    plan.sort_by(|a, b| a.0.total_cmp(&b.0));
    plan
}

/// Lines containing `needle` in the logs whose names start with `prefix`.
fn count_in_logs(dir: &std::path::Path, prefix: &str, needle: &str) -> u32 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|log| log.lines().filter(|l| l.contains(needle)).count() as u32)
        .sum()
}

/// Rows, activities, audit rows and slots, as they are now.
async fn read_world(
    db: &Db,
    mut conn: redis::aio::ConnectionManager,
    agents: &[platform::Agent],
) -> anyhow::Result<World> {
    let mut world = World::default();
    for r in db
        .rows("SELECT id, status, error, completed_at FROM schedule_executions")
        .await?
    {
        let mut it = r.into_iter();
        let (Some(Some(id)), Some(Some(status)), Some(error), Some(completed)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        world.rows.insert(id, (status, error, completed));
    }
    for r in db
        .rows("SELECT related_execution_id, activity_state FROM agent_activities")
        .await?
    {
        if let [Some(id), Some(state)] = r.as_slice() {
            world
                .activities
                .entry(id.clone())
                .or_default()
                .push(state.clone());
        }
    }
    for r in db
        .rows(
            "SELECT at, action, execution_id, agent_name, change_key, status_after \
             FROM janitor_audit",
        )
        .await?
    {
        let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let at = janitor_core::parse_timestamp(&get(0))
            .map(janitor_core::to_unix_seconds)
            .unwrap_or(f64::NAN);
        world.audit.push(AuditRow {
            at,
            action: get(1),
            execution_id: get(2),
            agent: get(3),
            change_key: get(4),
            status_after: get(5),
        });
    }
    for agent in agents {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("agent:slots:{}", agent.name))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        for m in members {
            world.slots.insert((agent.name.clone(), m));
        }
    }
    Ok(world)
}

/// The outcome as the table `make soak` prints (Markdown, for the README).
fn render(o: &Outcome) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let v = &o.verdicts;
    let f = &o.faults;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "janitor soak — {} — seed {} — {} runs in {:.0} s (dir {})",
        o.db,
        o.seed,
        o.runs,
        o.elapsed_secs,
        o.dir.display()
    );
    let _ = writeln!(out, "| fate | runs |");
    let _ = writeln!(out, "|---|---:|");
    for (label, n) in &o.fates {
        let _ = writeln!(out, "| {label} | {n} |");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "faults: {} worker kills, {} producer kills, {} Redis kill -9 + restart, {} database outages ({:.0} s), \
         {} connection cuts, {} processes started while a store was down, {} exited by themselves; \
         the breaker tripped {} times (held {} s, then drained)",
        f.worker_kills,
        f.producer_kills,
        f.redis_restarts,
        f.db_outages,
        f.db_outage_secs,
        f.connection_cuts,
        f.started_while_down,
        f.unexpected_exits.len(),
        f.breaker_trips,
        BREAKER_COOL_OFF_SECS
    );
    let _ = writeln!(out);
    let pct = |p: f64| {
        v.latency(p)
            .map(|s| format!("{s:.2} s"))
            .unwrap_or_else(|| "-".into())
    };
    let calm = |p: f64| {
        oracle::percentile(&v.calm_latencies, p)
            .map(|s| format!("{s:.2} s"))
            .unwrap_or_else(|| "-".into())
    };
    let must_be_zero = |n: usize| (n.to_string(), "0");
    let rows = [
        ("false reaps".to_owned(), must_be_zero(v.false_reaps.len())),
        (
            "alive runs the simulator let lag (excluded) / of them touched".to_owned(),
            (
                format!("{} / {}", v.lagged.len(), v.lagged_reaped.len()),
                "—",
            ),
        ),
        (
            format!(
                "misses (dead, not cleaned {:.0} s after its deadline)",
                o.bound_secs
            ),
            must_be_zero(v.misses.len()),
        ),
        ("duplicates".to_owned(), must_be_zero(v.duplicates.len())),
        (
            "changes without their audit row".to_owned(),
            must_be_zero(v.missing_audit.len()),
        ),
        (
            "audit rows without their change".to_owned(),
            must_be_zero(v.phantom_audit.len()),
        ),
        (
            "wrong effects".to_owned(),
            must_be_zero(v.wrong_effects.len()),
        ),
        (
            "activities the platform opened after janitor finalized their run (left open)"
                .to_owned(),
            (v.late_activities.len().to_string(), "—"),
        ),
        (
            "processes that exited by themselves".to_owned(),
            must_be_zero(f.unexpected_exits.len()),
        ),
        (
            "reap latency after the deadline p50 / p99 / max".to_owned(),
            (format!("{} / {} / {}", pct(0.5), pct(0.99), pct(1.0)), "—"),
        ),
        (
            format!(
                "reap latency of the {} stale slots due before the first fault, p50 / p99 / max",
                v.calm_latencies.len()
            ),
            (
                format!("{} / {} / {}", calm(0.5), calm(0.99), calm(1.0)),
                "p99 ≤ 2 s",
            ),
        ),
    ];
    let _ = writeln!(out, "| oracle | value | must be |");
    let _ = writeln!(out, "|---|---:|---:|");
    for (label, (value, must)) in rows {
        let _ = writeln!(out, "| {label} | {value} | {must} |");
    }
    for exit in &f.unexpected_exits {
        let _ = writeln!(out, "exit: {exit}");
    }
    if !o.histories.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "offending runs (up to four of each finding):");
        for h in &o.histories {
            out.push_str(h);
        }
    }
    let dead = o
        .fates
        .iter()
        .filter(|(label, _)| {
            Fate::ALL
                .iter()
                .any(|f| f.label() == label && f.class() == Class::Dead)
        })
        .map(|(_, n)| n)
        .sum::<usize>();
    let _ = writeln!(
        out,
        "({dead} dead runs; replay: janitor-soak --db {} --seed {}{})",
        o.db,
        o.seed,
        if o.short { " --short" } else { "" }
    );
    out
}
