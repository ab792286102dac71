//! `make bench`: janitor's performance targets, each measured next to a sequential cleanup
//! in the platform's style run in the same process on the same machine, so the ratio holds
//! on a noisy machine.
//!
//! - catch-up: N stale slot+row pairs over M agents, reconciled by the real `janitor`
//!   binary (two worker processes, sweeps as the queue drains);
//! - sweep: one pass over many live slots and running rows, its duration and the peak
//!   memory of the `janitor sweep` process at two sizes.
//!
//! - sweep-1m: the same pass over a million slots (100k agents), against 5 s;
//! - steady: 100k live slots of which 1% die each minute, under `janitor run` with 10 s
//!   full sweeps and with the defaults (a due pass a second): reap latency and the CPU of
//!   Redis, the database and janitor (see [`steady`]);
//!
//! - skip intake: `POST /api/v1/skip` requests/s on a release `janitor serve`, for a burst
//!   of distinct skips and for repeats of one (see [`intake`]).
//!
//! Every scenario runs in its own database and Redis key space (the test sandbox).

mod cpu;
mod intake;
mod procs;
mod steady;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use janitor_core::{from_unix_seconds, Policy};
use janitor_producer::{sweep, Breaker, SweepOptions};
use janitor_queue::{Queue, QueueSettings};
use janitor_store::{Database, ExecutionStore, SlotKeys, SlotStore};
use janitor_testkit::{redis_url, ts_ago, Kind, Sandbox};
use sqlx::Connection as _;

use crate::cpu::Cpu;
use crate::procs::Procs;

#[derive(Debug, Parser)]
struct Args {
    /// Stale pairs in the catch-up scenario.
    #[arg(long, default_value_t = 100_000)]
    pairs: usize,
    /// Agents they are spread over.
    #[arg(long, default_value_t = 1_000)]
    agents: usize,
    /// Pairs the sequential baseline reconciles (its rate is what is compared).
    #[arg(long, default_value_t = 5_000)]
    baseline_pairs: usize,
    /// Live slots (and running rows) in the sweep scenario.
    #[arg(long, default_value_t = 100_000)]
    sweep_slots: usize,
    /// Agents in the sweep scenario.
    #[arg(long, default_value_t = 10_000)]
    sweep_agents: usize,
    /// Live slots (and running rows) in the large sweep scenario (`sweep-1m`).
    #[arg(long, default_value_t = 1_000_000)]
    big_slots: usize,
    /// Agents in the large sweep scenario.
    #[arg(long, default_value_t = 100_000)]
    big_agents: usize,
    /// Live slots (and running rows) in the steady-state scenario; 1% of them die each
    /// minute.
    #[arg(long, default_value_t = 100_000)]
    steady_slots: usize,
    /// Seconds over which they die; the window measured is this plus 15 s (120 s: two
    /// full sweeps of the new design, twelve of the old).
    #[arg(long, default_value_t = 105.0)]
    steady_secs: f64,
    /// Rounds of the steady-state scenario: each runs both designs, in turn before-after
    /// and after-before (2 rounds: before, after, after, before), so that a drift of the
    /// machine's speed over the scenario weighs on both designs alike. Each design's CPU
    /// is its mean over the rounds, its latencies the worst.
    #[arg(long, default_value_t = 2)]
    steady_rounds: usize,
    /// Worker processes in the catch-up scenario.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Concurrency of each worker process (janitor's default).
    #[arg(long, default_value_t = janitor_worker::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// The queue's backlog cap (janitor's default is 4,000).
    #[arg(long, default_value_t = janitor_queue::DEFAULT_BACKLOG_CAP)]
    backlog_cap: u64,
    /// Requests in each skip-intake burst (distinct skips, then repeats of one).
    #[arg(long, default_value_t = 5_000)]
    skip_requests: usize,
    /// Keep-alive connections the skip-intake bursts are sent over.
    #[arg(long, default_value_t = 16)]
    skip_connections: usize,
    /// Run only the scenarios whose name contains this (catch-up, sweep, skip-intake;
    /// postgres, sqlite).
    #[arg(long)]
    only: Option<String>,
    /// Seed the sweep scenario's fleet (`--sweep-slots` / `--sweep-agents`) on the database
    /// `--only` names, print the environment that points janitor at it, and exit leaving it
    /// in place (for profiling a sweep by hand).
    #[arg(long)]
    seed_only: bool,
    /// The janitor binary to run (built with `make release`).
    #[arg(long, default_value = "target/release/janitor")]
    janitor: PathBuf,
    /// The janitor binary the steady scenario's "before" leg runs (full sweeps every 10 s,
    /// no due pass); by default `--janitor` with due passes off. A build of the code
    /// before issue 14 (commit b8ab5cf) measures the design as it was, not today's sweep
    /// without its due pass.
    #[arg(long)]
    before_janitor: Option<PathBuf>,
    /// Which designs the steady scenario runs: both (the ratio's table rows), or only
    /// `after` or `before` (each run's figures on stderr, no table row): for comparing
    /// two builds' after legs with `--janitor`.
    #[arg(long, value_enum, default_value_t = SteadyDesigns::Both)]
    steady_designs: SteadyDesigns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SteadyDesigns {
    Both,
    After,
    Before,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Interrupted (Ctrl-C, `timeout`), the scenario is dropped where it stands: its janitor
    // processes are killed and its databases and keys removed, as on any other failure.
    tokio::select! {
        result = bench(args) => result,
        signal = interrupted() => bail!("interrupted by {signal}"),
    }
}

/// The first SIGINT or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn bench(args: Args) -> anyhow::Result<()> {
    if !args.janitor.exists() {
        bail!(
            "{} is missing: run `make release` first",
            args.janitor.display()
        );
    }
    let wanted = |scenario: &str, kind: Kind| {
        args.only.as_deref().is_none_or(|o| {
            format!("{scenario}-{}", name(kind).to_lowercase()).contains(&o.to_lowercase())
        })
    };
    if args.seed_only {
        let kind = if args.only.as_deref().is_some_and(|o| o.contains("sqlite")) {
            Kind::Sqlite
        } else {
            Kind::Postgres
        };
        let stage = Stage::new(kind, janitor_queue::DEFAULT_BACKLOG_CAP).await?;
        stage
            .seed(args.sweep_slots, args.sweep_agents, 60.0, 3_600)
            .await?;
        let cmd = stage.janitor(&args, &[]);
        for (k, v) in cmd.get_envs() {
            if let (Some(v), Some(k)) = (v, k.to_str()) {
                println!("export {k}='{}'", v.to_string_lossy());
            }
        }
        // Left in place on purpose: the sandbox's drop would delete it.
        std::mem::forget(stage);
        return Ok(());
    }
    let mut rows = Vec::new();
    // Issue 14's targets (the floors before it were 5,000 / 3,000).
    for (kind, target) in [(Kind::Postgres, 10_000.0), (Kind::Sqlite, 6_000.0)] {
        if !wanted("catch-up", kind) {
            continue;
        }
        let base = baseline(
            kind,
            args.baseline_pairs,
            args.agents.min(args.baseline_pairs),
        )
        .await?;
        let (rate, spent) = catch_up(&args, kind).await?;
        rows.push(Line {
            what: format!(
                "catch-up, {} pairs / {} agents, {} workers, {}",
                args.pairs,
                args.agents,
                args.workers,
                name(kind)
            ),
            measured: format!("{rate:.0} pairs/s ({spent})"),
            target: format!(">= {target:.0} pairs/s"),
            baseline: format!("{base:.0} pairs/s"),
            ratio: format!("{:.1}x", rate / base),
            ok: rate >= target,
        });
    }
    for kind in [Kind::Postgres, Kind::Sqlite] {
        if wanted("sweep", kind) {
            let base = baseline_scan(kind, args.sweep_slots, args.sweep_agents).await?;
            let lines = sweep_lines(
                &args,
                kind,
                args.sweep_slots,
                args.sweep_agents,
                1_000,
                Some(base),
            );
            rows.extend(lines.await?);
        }
    }
    for kind in [Kind::Postgres, Kind::Sqlite] {
        if wanted("sweep-1m", kind) {
            let lines = sweep_lines(&args, kind, args.big_slots, args.big_agents, 5_000, None);
            rows.extend(lines.await?);
        }
    }
    for kind in [Kind::Postgres, Kind::Sqlite] {
        if !wanted("steady", kind) {
            continue;
        }
        let (mut befores, mut afters) = (Vec::new(), Vec::new());
        for round in 0..args.steady_rounds.max(1) {
            let order = if round % 2 == 0 {
                [steady::Design::Sweeps, steady::Design::DuePass]
            } else {
                [steady::Design::DuePass, steady::Design::Sweeps]
            };
            for design in order {
                let wanted = match args.steady_designs {
                    SteadyDesigns::Both => true,
                    SteadyDesigns::After => design == steady::Design::DuePass,
                    SteadyDesigns::Before => design == steady::Design::Sweeps,
                };
                if !wanted {
                    continue;
                }
                let leg = steady::steady(&args, kind, design).await?;
                match design {
                    steady::Design::Sweeps => befores.push(leg),
                    steady::Design::DuePass => afters.push(leg),
                }
            }
        }
        if befores.is_empty() || afters.is_empty() {
            continue;
        }
        let (before, after) = (
            steady::Steady::combine(&befores),
            steady::Steady::combine(&afters),
        );
        // Which janitor the before leg ran: the old design, or today's without its due pass
        // (whose sweeps are cheaper than the old design's, so the ratio reads worse).
        let leg = match &args.before_janitor {
            Some(path) => format!("10 s sweeps, {}", path.display()),
            None => "10 s sweeps, this build with due passes off".to_owned(),
        };
        let fleet = format!(
            "{} live slots / {} agents, 1% dying per minute ({} deaths a run, {} runs of each design)",
            args.steady_slots,
            args.sweep_agents,
            after.dead,
            afters.len()
        );
        rows.push(Line {
            what: format!("reap latency after the deadline, {fleet}, {}", name(kind)),
            measured: format!(
                "p99 {:.2} s (p50 {:.2} s, max {:.2} s)",
                after.p99, after.p50, after.max
            ),
            target: "p99 <= 2 s".into(),
            baseline: format!(
                "p99 {:.2} s (p50 {:.2} s, max {:.2} s), {leg}",
                before.p99, before.p50, before.max
            ),
            ratio: format!("{:.1}x", before.p99 / after.p99.max(1e-3)),
            ok: after.p99 <= 2.0,
        });
        // SQLite runs inside janitor: its connections' threads are the database, unless a
        // thread ended in either window; then janitor's whole process, in both legs.
        let whole =
            kind == Kind::Sqlite && (after.sqlite_cpu.is_none() || before.sqlite_cpu.is_none());
        let database = |s: &steady::Steady| {
            if whole {
                s.janitor_cpu
            } else {
                s.database_cpu(kind)
            }
        };
        let label = match kind {
            Kind::Postgres => "PostgreSQL",
            Kind::Sqlite if whole => "janitor+SQLite",
            Kind::Sqlite => "SQLite",
        };
        let split = |s: &steady::Steady| {
            let mut text = format!("Redis {:.0}, {label} {:.0}", s.redis_cpu, database(s));
            if kind == Kind::Sqlite && !whole {
                text.push_str(&format!("; janitor's whole process {:.0}", s.janitor_cpu));
            }
            text
        };
        let (a, b) = (
            after.redis_cpu + database(&after),
            before.redis_cpu + database(&before),
        );
        rows.push(Line {
            what: format!(
                "Redis + database CPU per hour of steady state, {fleet}, {}",
                name(kind)
            ),
            measured: format!("{a:.0} s/h ({})", split(&after)),
            target: "<= 1/4 of 10 s sweeps".into(),
            baseline: format!("{b:.0} s/h ({}), {leg}", split(&before)),
            ratio: format!("{:.2}", a / b.max(1e-9)),
            ok: a * 4.0 <= b,
        });
    }
    for kind in [Kind::Postgres, Kind::Sqlite] {
        if !wanted("skip-intake", kind) {
            continue;
        }
        let (distinct, repeats) = intake::skip_intake(&args, kind).await?;
        for (what, b) in [
            ("distinct skips", distinct),
            ("repeats of one skip", repeats),
        ] {
            rows.push(Line {
                what: format!(
                    "skip intake, {} {what} over {} connections, {}",
                    args.skip_requests,
                    args.skip_connections,
                    name(kind)
                ),
                measured: format!(
                    "{:.0} req/s (p50 {:.1} ms, p99 {:.1} ms)",
                    b.per_sec, b.p50_ms, b.p99_ms
                ),
                target: format!(">= {SKIP_INTAKE_TARGET:.0} req/s"),
                baseline: "-".into(),
                ratio: "-".into(),
                ok: b.per_sec >= SKIP_INTAKE_TARGET,
            });
        }
    }
    print_table(&rows);
    Ok(())
}

/// The skip intake's floor: a scheduler skips at most one run per schedule per tick; a
/// thousand a second is a whole fleet's worth of skips in one instant.
const SKIP_INTAKE_TARGET: f64 = 1_000.0;

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => "SQLite",
        Kind::Postgres => "PostgreSQL",
    }
}

struct Line {
    what: String,
    measured: String,
    target: String,
    baseline: String,
    ratio: String,
    ok: bool,
}

fn print_table(rows: &[Line]) {
    println!();
    println!("| scenario | janitor | target | sequential baseline | ratio | |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.what,
            r.measured,
            r.target,
            r.baseline,
            r.ratio,
            if r.ok { "met" } else { "NOT MET" }
        );
    }
}

/// The indexes of the schema before issue 14 (commit b8ab5cf, migrations 2–5) that today's
/// migrations 6 and 7 dropped; the same statements on both databases.
const OLD_INDEXES: &str = "\
CREATE UNIQUE INDEX IF NOT EXISTS janitor_audit_change ON janitor_audit (change_key);
CREATE INDEX IF NOT EXISTS janitor_audit_execution ON janitor_audit (execution_id);
CREATE INDEX IF NOT EXISTS janitor_activities_open ON agent_activities (related_execution_id)
    WHERE activity_state = 'started';
CREATE INDEX IF NOT EXISTS janitor_activities_started_by_id ON agent_activities (id)
    WHERE activity_state = 'started';";

/// A migrated sandbox with its stores.
struct Stage {
    sandbox: Sandbox,
    slots: SlotStore,
    rows: ExecutionStore,
    queue: Queue,
}

impl Stage {
    async fn new(kind: Kind, backlog_cap: u64) -> anyhow::Result<Self> {
        Self::migrated_by(kind, backlog_cap, false).await
    }

    /// [`Stage::new`] for a janitor built from older code (`old_schema`): the indexes
    /// today's migrations dropped are created again beside today's, so that the old
    /// binary finds what it names (its audit insert's `ON CONFLICT (change_key)`) and
    /// pays for what it paid for, while this process reads the schema it knows.
    async fn migrated_by(kind: Kind, backlog_cap: u64, old_schema: bool) -> anyhow::Result<Self> {
        let sandbox = Sandbox::new(kind).await?;
        let db = Database::connect(&sandbox.db.url, true).await?;
        db.migrate(true).await?;
        if old_schema {
            sandbox.sql(OLD_INDEXES).await?;
        }
        let rows = ExecutionStore::open(db).await?;
        let keys = SlotKeys::new(sandbox.slot_prefix.clone(), sandbox.meta_prefix.clone());
        let slots = SlotStore::connect(&redis_url(), keys, 300).await?;
        let queue = Queue::new(
            slots.connection(),
            QueueSettings {
                name: sandbox.queue.clone(),
                backlog_cap,
                ..QueueSettings::default()
            },
        );
        Ok(Self {
            sandbox,
            slots,
            rows,
            queue,
        })
    }

    /// `n` runs over `agents` agents, each holding a slot acquired `age` seconds ago with
    /// a `timeout`, plus each run's open activity; rows `running`/`dispatched`.
    async fn seed(&self, n: usize, agents: usize, age: f64, timeout: i64) -> anyhow::Result<()> {
        let now = self.sandbox.redis_now().await?;
        self.seed_each(n, agents, now, |_| (age, timeout)).await
    }

    /// [`Stage::seed`] with each run's own age (seconds before `now`) and timeout.
    async fn seed_each(
        &self,
        n: usize,
        agents: usize,
        now: f64,
        each: impl Fn(usize) -> (f64, i64),
    ) -> anyhow::Result<()> {
        let mut redis = self.sandbox.redis().await?;
        for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
            let mut pipe = redis::pipe();
            let mut runs = Vec::with_capacity(chunk.len());
            let mut acts = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let (age, timeout) = each(i);
                let started = ts_ago(now, age, "naive");
                let (agent, id) = (format!("agent-{}", i % agents), format!("run{i:07}"));
                pipe.cmd("ZADD")
                    .arg(format!("{}{agent}", self.sandbox.slot_prefix))
                    .arg(now - age)
                    .arg(&id)
                    .ignore();
                pipe.cmd("HSET")
                    .arg(format!("{}{agent}:{id}", self.sandbox.meta_prefix))
                    .arg("timeout_seconds")
                    .arg(timeout)
                    .arg("started_at")
                    .arg(&started)
                    .ignore();
                runs.push(format!("('{id}', 's', '{agent}', 'running', '{started}', 'm', 'schedule', 'dispatched')"));
                acts.push(format!("('a{id}', '{agent}', 'schedule_start', 'started', '{started}', '{id}', '{started}')"));
            }
            pipe.query_async::<()>(&mut redis).await?;
            for (rows, acts) in runs.chunks(1_000).zip(acts.chunks(1_000)) {
                self.sandbox
                    .sql(&format!(
                        "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by, claude_session_id) VALUES {};
                         INSERT INTO agent_activities (id, agent_name, activity_type, activity_state, started_at, related_execution_id, created_at) VALUES {}",
                        rows.join(","),
                        acts.join(",")
                    ))
                    .await?;
            }
        }
        // Settle what the bulk load left behind (PostgreSQL's autovacuum would otherwise
        // vacuum and analyze it during the measured run, on the same two cores), as on a
        // platform database in its steady state. Both the baseline and janitor get this.
        let settle = match self.sandbox.db.kind {
            Kind::Postgres => "VACUUM ANALYZE",
            Kind::Sqlite => "ANALYZE",
        };
        self.sandbox.sql(settle).await?;
        Ok(())
    }

    async fn failed(&self) -> anyhow::Result<i64> {
        Ok(self
            .sandbox
            .sql_text(
                "SELECT CAST(COUNT(*) AS TEXT) FROM schedule_executions WHERE status = 'failed'",
            )
            .await?
            .unwrap_or_default()
            .parse()?)
    }

    fn janitor(&self, args: &Args, cmd: &[&str]) -> Command {
        self.janitor_at(&args.janitor, cmd)
    }

    /// [`Stage::janitor`] with another build of janitor (the steady scenario's "before").
    fn janitor_at(&self, program: &std::path::Path, cmd: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(cmd)
            .env("DATABASE_URL", &self.sandbox.db.url)
            .env("REDIS_URL", redis_url())
            .env("JANITOR_SLOT_PREFIX", &self.sandbox.slot_prefix)
            .env("JANITOR_SLOT_META_PREFIX", &self.sandbox.meta_prefix)
            .env("JANITOR_QUEUE", &self.sandbox.queue)
            .env(
                "JANITOR_BACKLOG_CAP",
                self.queue.settings().backlog_cap.to_string(),
            )
            .env("JANITOR_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        c
    }
}

/// Catch-up: reconciles `args.pairs` stale pairs with two `janitor work` processes, sweeping
/// again whenever the queue has drained below a quarter of its cap. Returns pairs/s and
/// where their CPU went ([`cpu_per_pair`]).
async fn catch_up(args: &Args, kind: Kind) -> anyhow::Result<(f64, String)> {
    let stage = Stage::new(kind, args.backlog_cap).await?;
    stage.seed(args.pairs, args.agents, 7_200.0, 600).await?;
    eprintln!(
        "catch-up on {}: seeded {} stale pairs",
        name(kind),
        args.pairs
    );
    let mut options = SweepOptions {
        force: true, // a catch-up is exactly what the breaker would stop
        batch: 1_000,
        breaker: Breaker::default(),
        dry_run: false,
        database: String::new(),
        no_index: false,
        index_horizon: None,
        resume: None,
        // As `janitor run`'s sweeps at the default intervals (60 s).
        census: janitor_producer::census_share(
            Duration::from_secs(60),
            janitor_producer::DEFAULT_CENSUS_INTERVAL,
        ),
    };
    let cpu_before = Cpu::read(&stage, kind, &[]).await?;
    let start = Instant::now();
    let concurrency = args.concurrency.to_string();
    let mut workers = Procs::new(
        (0..args.workers)
            .map(|_| {
                stage
                    .janitor(args, &["work", "--concurrency", &concurrency])
                    .spawn()
            })
            .collect::<Result<_, _>>()?,
    );
    let target = args.pairs as i64;
    loop {
        let report = sweep(
            &stage.slots,
            &stage.rows,
            &stage.queue,
            &Policy::default(),
            None,
            &options,
        )
        .await?;
        // Everything found is queued: the workers finish it. Otherwise sweep again once
        // they have made room, from where this pass stopped (as `janitor run` does while
        // catching up).
        options.resume = report.resume();
        if !report.has_more() {
            break;
        }
        let low = stage.queue.settings().backlog_cap / 4;
        while stage.queue.backlog().await? > low {
            workers.check()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("catch-up did not finish in 10 minutes");
        }
    }
    // Done when the queue is idle (nothing due, nothing in flight), then checked once in
    // the database. Watched in Redis, not by counting failed rows: a COUNT(*) over the
    // table every few milliseconds took a large share of the database's CPU away from the
    // system under test.
    while !stage.queue.is_idle().await? {
        workers.check()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if start.elapsed() > Duration::from_secs(600) {
            bail!("catch-up did not finish in 10 minutes");
        }
    }
    let elapsed = start.elapsed();
    let cpu = Cpu::read(&stage, kind, &workers.pids()).await? - cpu_before;
    let failed = stage.failed().await?;
    if failed != target {
        bail!("catch-up ended with {failed} of {target} runs failed");
    }
    workers.stop()?;
    stage.sandbox.clear_redis().await?;
    let rate = args.pairs as f64 / elapsed.as_secs_f64();
    let spent = cpu_per_pair(kind, &cpu, args.pairs, elapsed.as_secs_f64());
    eprintln!(
        "catch-up on {}: {} pairs in {:.2}s = {rate:.0} pairs/s; {spent}",
        name(kind),
        args.pairs,
        elapsed.as_secs_f64()
    );
    Ok((rate, spent))
}

/// Where a catch-up's CPU went, per pair: e.g. `CPU per pair 183 µs: PostgreSQL 86,
/// Redis 48, workers 37, sweeps 12; 1.68 of 2 cores busy`. SQLite runs inside the workers.
fn cpu_per_pair(kind: Kind, cpu: &Cpu, pairs: usize, secs: f64) -> String {
    let us = |s: f64| s * 1e6 / pairs.max(1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = match kind {
        Kind::Postgres => "workers",
        Kind::Sqlite => "workers+SQLite",
    };
    let db = match kind {
        Kind::Postgres => format!("PostgreSQL {:.0}, ", us(cpu.db)),
        Kind::Sqlite => String::new(),
    };
    format!(
        "CPU per pair {:.0} µs: {db}Redis {:.0}, {workers} {:.0}, sweeps {:.0}; {:.2} of {cores} cores busy",
        us(cpu.total()),
        us(cpu.redis),
        us(cpu.janitor),
        us(cpu.bench),
        cpu.total() / secs.max(1e-9),
    )
}

/// The platform's style: per agent, read its slots; per slot, read its hash, judge it by its
/// own TTL, remove it, then fail the row with one autocommitted UPDATE. Sequential, one
/// round trip at a time. Returns pairs/s.
async fn baseline(kind: Kind, pairs: usize, agents: usize) -> anyhow::Result<f64> {
    let stage = Stage::new(kind, janitor_queue::DEFAULT_BACKLOG_CAP).await?;
    stage.seed(pairs, agents, 7_200.0, 600).await?;
    let mut redis = stage.sandbox.redis().await?;
    let start = Instant::now();
    let done = match kind {
        Kind::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&stage.sandbox.db.url).await?;
            baseline_pass(&stage, &mut redis, agents, async |id: String, now: String| {
                sqlx::query("UPDATE schedule_executions SET status = 'failed', error = 'Stale execution', completed_at = $1 WHERE id = $2 AND status = 'running'")
                    .bind(now)
                    .bind(id)
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
            })
            .await?
        }
        Kind::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&stage.sandbox.db.url).await?;
            baseline_pass(&stage, &mut redis, agents, async |id: String, now: String| {
                sqlx::query("UPDATE schedule_executions SET status = 'failed', error = 'Stale execution', completed_at = $1 WHERE id = $2 AND status = 'running'")
                    .bind(now)
                    .bind(id)
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
            })
            .await?
        }
    };
    let rate = done as f64 / start.elapsed().as_secs_f64();
    stage.sandbox.clear_redis().await?;
    if done != pairs {
        bail!("baseline reconciled {done} of {pairs}");
    }
    eprintln!(
        "baseline on {}: {done} pairs at {rate:.0} pairs/s",
        name(kind)
    );
    Ok(rate)
}

async fn baseline_pass(
    stage: &Stage,
    redis: &mut redis::aio::MultiplexedConnection,
    agents: usize,
    mut fail: impl AsyncFnMut(String, String) -> Result<(), sqlx::Error>,
) -> anyhow::Result<usize> {
    let mut done = 0;
    for a in 0..agents {
        let agent = format!("agent-{a}");
        let key = format!("{}{agent}", stage.sandbox.slot_prefix);
        let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(redis)
            .await?;
        for (id, score) in members {
            let meta_key = format!("{}{agent}:{id}", stage.sandbox.meta_prefix);
            let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&meta_key)
                .query_async(redis)
                .await?;
            let ttl: f64 = meta
                .get("timeout_seconds")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1200.0);
            let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(redis).await?;
            let now = secs as f64 + micros as f64 / 1e6;
            if now > score + ttl + 300.0 {
                redis::cmd("ZREM")
                    .arg(&key)
                    .arg(&id)
                    .query_async::<()>(redis)
                    .await?;
                redis::cmd("DEL")
                    .arg(&meta_key)
                    .query_async::<()>(redis)
                    .await?;
                let stamp = janitor_core::format_timestamp(from_unix_seconds(now).context("time")?);
                fail(id, stamp).await?;
                done += 1;
            }
        }
    }
    Ok(done)
}

/// The baseline's scan cost for the sweep scenario: the same per-agent, per-slot round
/// trips over the same live slots (nothing to remove), in milliseconds.
async fn baseline_scan(kind: Kind, slots: usize, agents: usize) -> anyhow::Result<u64> {
    let stage = Stage::new(kind, janitor_queue::DEFAULT_BACKLOG_CAP).await?;
    stage.seed(slots, agents, 60.0, 3_600).await?;
    let mut redis = stage.sandbox.redis().await?;
    let start = Instant::now();
    let mut seen = 0;
    for a in 0..agents {
        let agent = format!("agent-{a}");
        let key = format!("{}{agent}", stage.sandbox.slot_prefix);
        let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut redis)
            .await?;
        for (id, _) in members {
            let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(format!("{}{agent}:{id}", stage.sandbox.meta_prefix))
                .query_async(&mut redis)
                .await?;
            seen += usize::from(!meta.is_empty());
        }
    }
    if seen != slots {
        bail!("baseline scan saw {seen} of {slots}");
    }
    let elapsed = start.elapsed().as_millis() as u64;
    stage.sandbox.clear_redis().await?;
    Ok(elapsed)
}

struct SweepCost {
    elapsed_ms: u64,
    rss_kib: i64,
}

/// One `janitor sweep` over `slots` live slots and their running rows: the pass's own
/// duration and the process's peak RSS.
async fn sweep_cost(
    args: &Args,
    kind: Kind,
    slots: usize,
    agents: usize,
) -> anyhow::Result<SweepCost> {
    let stage = Stage::new(kind, janitor_queue::DEFAULT_BACKLOG_CAP).await?;
    // Runs at every point of an hour-long timeout and its 5-minute buffer, down to the
    // last 2 minutes (nothing comes due while the scenario runs): the 1.6% within the
    // deadline index's 3-minute horizon are indexed, as a fleet whose runs all use their
    // whole timeout would have them.
    let now = stage.sandbox.redis_now().await?;
    stage
        .seed_each(slots, agents, now, |i| {
            ((i as f64 * 0.618_033_988_75).fract() * 3_780.0, 3_600)
        })
        .await?;
    // A warm-up pass (connections, caches), then the measured one.
    let mut elapsed_ms = u64::MAX;
    let mut rss_kib = 0;
    let mut indexed = 0;
    for _ in 0..2 {
        let child = stage.janitor(args, &["sweep", "--json"]).spawn()?;
        let (stdout, rss) = wait_with_rss(child)?;
        let report: serde_json::Value = serde_json::from_str(&stdout).context("sweep output")?;
        if report["stats"]["slots_scanned"].as_u64() != Some(slots as u64) {
            bail!(
                "sweep saw {} slots, expected {slots}",
                report["stats"]["slots_scanned"]
            );
        }
        if !report["kinds"].as_object().is_some_and(|k| k.is_empty()) {
            bail!("a healthy fleet got jobs: {}", report["kinds"]);
        }
        indexed = report["due_index"].as_u64().unwrap_or(0);
        elapsed_ms = elapsed_ms.min(report["elapsed_ms"].as_u64().unwrap_or(u64::MAX));
        rss_kib = rss_kib.max(rss);
    }
    stage.sandbox.clear_redis().await?;
    eprintln!(
        "sweep on {}: {slots} slots / {agents} agents in {elapsed_ms} ms ({indexed} indexed), peak RSS {} MiB",
        name(kind),
        rss_kib / 1024
    );
    Ok(SweepCost {
        elapsed_ms,
        rss_kib,
    })
}

/// A sweep of `slots` live slots over `agents` agents against its target (`target_ms`) and
/// the sequential baseline's scan (`base_ms`, when measured), and its peak RSS against a
/// tenth of the size.
async fn sweep_lines(
    args: &Args,
    kind: Kind,
    slots: usize,
    agents: usize,
    target_ms: u64,
    base_ms: Option<u64>,
) -> anyhow::Result<[Line; 2]> {
    let small = sweep_cost(args, kind, slots / 10, (agents / 10).max(1)).await?;
    let big = sweep_cost(args, kind, slots, agents).await?;
    Ok([
        Line {
            what: format!(
                "sweep, {agents} agents / {slots} live slots / {slots} running rows, {}",
                name(kind)
            ),
            measured: format!("{} ms", big.elapsed_ms),
            target: format!("<= {target_ms} ms"),
            baseline: base_ms.map_or("-".into(), |b| format!("{b} ms")),
            ratio: base_ms.map_or("-".into(), |b| {
                format!("{:.1}x", b as f64 / big.elapsed_ms.max(1) as f64)
            }),
            ok: big.elapsed_ms <= target_ms,
        },
        Line {
            what: format!(
                "sweep peak RSS, {} vs {slots} slots, {}",
                slots / 10,
                name(kind)
            ),
            measured: format!("{} MiB vs {} MiB", small.rss_kib / 1024, big.rss_kib / 1024),
            target: "flat in slot count".into(),
            baseline: "-".into(),
            ratio: format!("{:.2}x", big.rss_kib as f64 / small.rss_kib.max(1) as f64),
            ok: (big.rss_kib as f64) < 1.5 * small.rss_kib as f64,
        },
    ])
}

/// Reads the child's output and waits for it; the peak RSS is what the sweep reports of
/// itself (`VmHWM`, in KiB).
fn wait_with_rss(child: Child) -> anyhow::Result<(String, i64)> {
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("janitor sweep failed: {stdout}");
    }
    let report: serde_json::Value = serde_json::from_str(&stdout).context("sweep output")?;
    let rss = report["peak_rss_kib"]
        .as_i64()
        .context("the sweep did not report its peak RSS")?;
    Ok((stdout, rss))
}
