//! Steady state: a fleet of live slots of which 1% die each minute, under `janitor run` as
//! it was before the deadline index (a full sweep every 10 s, no due pass) and as it is by
//! default (a full sweep a minute, a due pass a second), in the same process one after the
//! other. For each: how late after its deadline every dead run was reaped (from the audit
//! trail: `at - deadline` of each reclaim), and the CPU Redis, the database and janitor
//! spent over the same window, scaled to an hour.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use janitor_store::{sql::audit, AuditFilter};
use janitor_testkit::Kind;

use crate::cpu::Cpu;
use crate::procs::Procs;
use crate::{name, Args, Stage};

/// How `janitor run` is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// Before issue 14: a full sweep every 10 s, nothing in between.
    Sweeps,
    /// The defaults: a full sweep every 60 s and a due pass every second.
    DuePass,
}

impl Design {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Sweeps => "full sweeps every 10 s (before)",
            Self::DuePass => "due pass every 1 s + full sweeps every 60 s (defaults)",
        }
    }

    fn env(self) -> [(&'static str, &'static str); 2] {
        match self {
            Self::Sweeps => [
                ("JANITOR_SWEEP_INTERVAL_SECS", "10"),
                ("JANITOR_DUE_INTERVAL_MS", "0"),
            ],
            // janitor's defaults, spelled out.
            Self::DuePass => [
                ("JANITOR_SWEEP_INTERVAL_SECS", "60"),
                ("JANITOR_DUE_INTERVAL_MS", "1000"),
            ],
        }
    }
}

/// What one design did.
#[derive(Debug, Clone)]
pub struct Steady {
    pub dead: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// CPU seconds per hour of steady state.
    pub redis_cpu: f64,
    /// PostgreSQL's server processes (all of them); 0 for SQLite, which runs inside janitor.
    pub db_cpu: f64,
    pub janitor_cpu: f64,
    /// Of `janitor_cpu`, its SQLite connections' threads (SQLite only; `None` when a
    /// thread ended in the window, which would leave its seconds out).
    pub sqlite_cpu: Option<f64>,
}

impl Steady {
    /// Several legs of one design as one: the mean of their CPU, the worst of their
    /// latencies (SQLite's threads only if every leg could count them).
    pub fn combine(legs: &[Steady]) -> Steady {
        let n = legs.len().max(1) as f64;
        let mean = |f: fn(&Steady) -> f64| legs.iter().map(f).sum::<f64>() / n;
        let worst = |f: fn(&Steady) -> f64| legs.iter().map(f).fold(0.0, f64::max);
        Steady {
            dead: legs.iter().map(|l| l.dead).max().unwrap_or(0),
            p50: worst(|l| l.p50),
            p99: worst(|l| l.p99),
            max: worst(|l| l.max),
            redis_cpu: mean(|l| l.redis_cpu),
            db_cpu: mean(|l| l.db_cpu),
            janitor_cpu: mean(|l| l.janitor_cpu),
            sqlite_cpu: legs
                .iter()
                .map(|l| l.sqlite_cpu)
                .sum::<Option<f64>>()
                .map(|s| s / n),
        }
    }

    /// The database's CPU: PostgreSQL's processes, or for SQLite (which runs inside
    /// janitor) its connections' threads, or janitor's whole process when those could
    /// not be counted.
    pub fn database_cpu(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Postgres => self.db_cpu,
            Kind::Sqlite => self.sqlite_cpu.unwrap_or(self.janitor_cpu),
        }
    }
}

/// The platform's shortest deadline: a 60 s timeout plus the 300 s buffer.
const SHORT_TIMEOUT: i64 = 60;
const BUFFER: f64 = 300.0;
/// Deaths start this long after seeding began (seeding and janitor's first sweep are done
/// by then, and are not measured).
const LEAD_SECS: f64 = 75.0;
/// After the last death, how long the window stays open for its reap.
const TAIL_SECS: f64 = 15.0;

pub async fn steady(args: &Args, kind: Kind, design: Design) -> anyhow::Result<Steady> {
    // The before leg may run a build of older code: its stage also has the indexes that
    // code names.
    let before = match design {
        Design::Sweeps => args.before_janitor.as_deref(),
        Design::DuePass => None,
    };
    let program = before.unwrap_or(&args.janitor);
    let stage =
        Stage::migrated_by(kind, janitor_queue::DEFAULT_BACKLOG_CAP, before.is_some()).await?;
    let n = args.steady_slots;
    let per_sec = n as f64 / 100.0 / 60.0;
    let dying = (args.steady_secs * per_sec).round() as usize;
    let t0 = stage.sandbox.redis_now().await?;
    // Run i < dying is due at t0 + LEAD + i / per_sec (timeout 60 s, acquired long enough
    // ago); every other run is live for an hour.
    stage
        .seed_each(n, args.sweep_agents, t0, |i| {
            if i < dying {
                let due_in = LEAD_SECS + i as f64 / per_sec;
                (SHORT_TIMEOUT as f64 + BUFFER - due_in, SHORT_TIMEOUT)
            } else {
                (((i * 7_919) % 3_000) as f64, 3_600)
            }
        })
        .await?;
    let seeded = stage.sandbox.redis_now().await? - t0;
    if seeded > LEAD_SECS - 20.0 {
        bail!("seeding took {seeded:.0} s, too close to the first death");
    }
    eprintln!(
        "steady on {}, {}: {}",
        name(kind),
        design.describe(),
        program.display()
    );
    let mut cmd = stage.janitor_at(program, &["run", "--listen", "off"]);
    for (k, v) in design.env() {
        cmd.env(k, v);
    }
    // Its log (errors only) goes to a file the failure message below points at.
    let log_path = std::env::temp_dir().join(format!(
        "janitor-bench-steady-{}-{}.log",
        name(kind).to_lowercase(),
        std::process::id()
    ));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let child = cmd.stdout(log).spawn()?;
    let pid = child.id();
    let run = Procs::new(vec![child]);
    let result = measure(&stage, kind, pid, t0, args.steady_secs).await;
    let stopped = run.stop();
    let (cpu, sqlite, window, commands) = result?;
    stopped?;

    // Every death reaped, each once; latencies from the audit trail.
    let failed = stage.failed().await? as usize;
    if failed != dying {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        bail!(
            "{failed} runs failed, {dying} died; {}'s errors are in {}, the last:\n{}",
            program.display(),
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let _ = std::fs::remove_file(&log_path);
    let records = audit::query(
        stage.rows.database(),
        &AuditFilter {
            limit: u32::MAX,
            ..AuditFilter::default()
        },
    )
    .await?;
    let mut latencies: Vec<f64> = records
        .iter()
        .filter(|r| r.action == "slot_reclaimed")
        .map(|r| -> anyhow::Result<f64> {
            let at = janitor_core::parse_timestamp(&r.at)?;
            let deadline =
                janitor_core::parse_timestamp(r.deadline.as_deref().context("no deadline")?)?;
            Ok((at - deadline).as_seconds_f64().max(0.0))
        })
        .collect::<anyhow::Result<_>>()?;
    if latencies.len() != dying {
        bail!("{} reclaims audited, {dying} died", latencies.len());
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let per_hour = 3_600.0 / window;
    eprintln!(
        "steady on {}, {}: Redis commands by CPU (s/h, calls/s): {}",
        name(kind),
        design.describe(),
        commands
            .iter()
            .take(10)
            .map(|(c, usec, calls)| format!(
                "{c} {:.1} ({:.0})",
                usec / 1e6 * per_hour,
                calls / window
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = Steady {
        dead: dying,
        p50: pct(0.5),
        p99: pct(0.99),
        max: pct(1.0),
        redis_cpu: cpu.redis * per_hour,
        db_cpu: cpu.db * per_hour,
        janitor_cpu: cpu.janitor * per_hour,
        sqlite_cpu: sqlite.map(|s| s * per_hour),
    };
    stage.sandbox.clear_redis().await?;
    eprintln!(
        "steady on {}, {}: {} deaths, reap p50 {:.2} s p99 {:.2} s max {:.2} s; CPU s/h: Redis {:.0}, database {:.0}, janitor {:.0}{}",
        name(kind),
        design.describe(),
        out.dead,
        out.p50,
        out.p99,
        out.max,
        out.redis_cpu,
        out.database_cpu(kind),
        out.janitor_cpu,
        match (kind, out.sqlite_cpu) {
            (Kind::Sqlite, Some(_)) => " (of which SQLite's threads the database)",
            (Kind::Sqlite, None) => " (an SQLite thread ended in the window: janitor's whole process counted as the database)",
            (Kind::Postgres, _) => "",
        }
    );
    Ok(out)
}

/// Waits for the first death, reads every CPU counter, waits out the deaths and their
/// reaps, reads them again. Returns the difference, the window's length in seconds and
/// Redis' commands over it (name, microseconds, calls), costliest first.
async fn measure(
    stage: &Stage,
    kind: Kind,
    pid: u32,
    t0: f64,
    span: f64,
) -> anyhow::Result<(Cpu, Option<f64>, f64, Vec<(String, f64, f64)>)> {
    let begin = t0 + LEAD_SECS;
    let end = begin + span + TAIL_SECS;
    until(stage, begin).await?;
    let before = Cpu::read(stage, kind, &[pid]).await?;
    let threads_before = crate::cpu::sqlite_threads(pid)?;
    let commands_before = commandstats(stage).await?;
    let started = Instant::now();
    until(stage, end).await?;
    let after = Cpu::read(stage, kind, &[pid]).await?;
    let threads_after = crate::cpu::sqlite_threads(pid)?;
    let commands_after = commandstats(stage).await?;
    let sqlite = match kind {
        Kind::Sqlite => crate::cpu::sqlite_between(&threads_before, &threads_after),
        Kind::Postgres => None,
    };
    let mut commands: Vec<(String, f64, f64)> = commands_after
        .into_iter()
        .map(|(name, (usec, calls))| {
            let (u0, c0) = commands_before.get(&name).copied().unwrap_or_default();
            (name, usec - u0, calls - c0)
        })
        .filter(|(_, _, calls)| *calls > 0.0)
        .collect();
    commands.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok((
        after - before,
        sqlite,
        started.elapsed().as_secs_f64(),
        commands,
    ))
}

/// Redis' `INFO commandstats`: command → (microseconds, calls).
async fn commandstats(
    stage: &Stage,
) -> anyhow::Result<std::collections::HashMap<String, (f64, f64)>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut stage.sandbox.redis().await?)
        .await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| -> Option<f64> {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            Some((name.to_owned(), (field("usec")?, field("calls")?)))
        })
        .collect())
}

async fn until(stage: &Stage, at: f64) -> anyhow::Result<()> {
    loop {
        let now = stage.sandbox.redis_now().await?;
        if now >= at {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs_f64((at - now).min(1.0))).await;
    }
}
