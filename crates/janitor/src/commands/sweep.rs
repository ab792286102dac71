//! `janitor sweep`: one pass that enqueues one cleanup job per inconsistency.

use std::time::Duration;

use anyhow::Context as _;
use janitor_producer::{
    due_pass, sweep, DueReport, LeaseOrRedis, SweepError, SweepLease, SweepOptions, SweepReport,
};
use janitor_queue::Queue;
use janitor_store::{ExecutionStore, SlotStore};

use crate::cli::SweepArgs;
use crate::{context, settings::Settings};

/// How long a sweep lease lives without being re-checked.
const LEASE_TTL: Duration = Duration::from_secs(30);

pub async fn run(settings: &Settings, args: &SweepArgs) -> anyhow::Result<()> {
    let slots = context::slot_store(settings).await?;
    let rows = context::execution_store(settings).await?;
    let queue = context::queue(settings, &slots);
    if args.due {
        let wait = Duration::from_secs(args.lease_wait_secs);
        let report = due_once(
            settings,
            &slots,
            &rows,
            &queue,
            args.dry_run,
            args.force,
            wait,
        )
        .await?
        .with_context(|| {
            format!(
                "another producer held the sweep lease for {}s",
                wait.as_secs()
            )
        })?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_due(&report);
        }
        return Ok(());
    }
    let mut options = options(settings, args.dry_run, args.force);
    if args.whole_census {
        options.census = janitor_store::CensusWalk::Whole;
    }
    let report = sweep_once(
        settings,
        &slots,
        &rows,
        &queue,
        &options,
        Duration::from_secs(args.lease_wait_secs),
    )
    .await?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["peak_rss_kib"] = peak_rss_kib().into();
        value["cpu_ms"] = cpu_ms().into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// This process's peak resident memory (`VmHWM`), on Linux.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time this process has used (user + system), in milliseconds, on Linux.
fn cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at `state`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel reports in USER_HZ, 100 on every Linux janitor targets.
    Some(ticks * 10)
}

/// The lease of this process's full sweep while it runs: its due passes share it (they
/// would otherwise wait for the sweep, or skip, for as long as it runs).
static HELD: std::sync::Mutex<Option<SweepLease>> = std::sync::Mutex::new(None);

fn held() -> std::sync::MutexGuard<'static, Option<SweepLease>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sweep options `settings` give, for a pass that starts from the beginning.
pub fn options(settings: &Settings, dry_run: bool, force: bool) -> SweepOptions {
    SweepOptions {
        dry_run,
        force,
        breaker: settings.breaker,
        batch: settings.scan_batch,
        database: janitor_store::redact_url(&settings.database_url),
        no_index: settings.due_interval.is_none(),
        index_horizon: Some(index_horizon(settings.sweep_interval)),
        resume: None,
        census: janitor_producer::census_share(settings.sweep_interval, settings.census_interval),
    }
}

/// How far ahead a full sweep indexes pairs for the due passes: two sweep intervals and a
/// minute (3 minutes at the default 60 s), so a pair is in the index before it is due even
/// when a sweep runs late or slow (the next full sweep indexes what is further out).
pub fn index_horizon(sweep_interval: Duration) -> Duration {
    sweep_interval * 2 + Duration::from_secs(60)
}

/// Takes the sweep lease, waiting up to `wait`; `None` when another producer kept it.
async fn acquire(
    settings: &Settings,
    queue: &Queue,
    wait: Duration,
) -> anyhow::Result<Option<SweepLease>> {
    SweepLease::acquire(
        queue.connection(),
        &settings.queue.name,
        &context::process_name("producer"),
        LEASE_TTL,
        wait,
    )
    .await
    .context("taking the sweep lease")
}

/// One due pass under the lease: this process's sweep's while one runs, else its own
/// (waiting up to `lease_wait`). `None` when another producer kept the lease.
pub async fn due_once(
    settings: &Settings,
    slots: &SlotStore,
    rows: &ExecutionStore,
    queue: &Queue,
    dry_run: bool,
    force: bool,
    lease_wait: Duration,
) -> anyhow::Result<Option<DueReport>> {
    let options = options(settings, dry_run, force);
    if dry_run {
        return Ok(Some(
            due_pass(slots, rows, queue, &settings.policy, None, &options).await?,
        ));
    }
    let shared = held().clone();
    let (lease, own) = match shared {
        Some(lease) => (lease, false),
        None => match acquire(settings, queue, lease_wait).await? {
            Some(lease) => (lease, true),
            None => return Ok(None),
        },
    };
    let result = due_pass(slots, rows, queue, &settings.policy, Some(&lease), &options).await;
    if own {
        if let Err(err) = lease.release().await {
            tracing::warn!(error = %err, "releasing the sweep lease failed; it expires by itself");
        }
    }
    match result {
        Ok(report) => Ok(Some(report)),
        // The sweep whose lease it shared has finished and released it: nothing was
        // pushed after that, and the next pass takes its own.
        Err(SweepError::Lease(LeaseOrRedis::Lost(_))) if !own => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// One sweep with `options` ([`options`]) under the lease (a dry run takes no lease: it
/// changes nothing).
pub async fn sweep_once(
    settings: &Settings,
    slots: &SlotStore,
    rows: &ExecutionStore,
    queue: &Queue,
    options: &SweepOptions,
    lease_wait: Duration,
) -> anyhow::Result<SweepReport> {
    if options.dry_run {
        return Ok(sweep(slots, rows, queue, &settings.policy, None, options).await?);
    }
    let lease = acquire(settings, queue, lease_wait)
        .await?
        .with_context(|| {
            format!(
                "another producer held the sweep lease for {}s",
                lease_wait.as_secs()
            )
        })?;
    *held() = Some(lease.clone());
    let result = sweep(slots, rows, queue, &settings.policy, Some(&lease), options).await;
    *held() = None;
    if let Err(err) = lease.release().await {
        tracing::warn!(error = %err, "releasing the sweep lease failed; it expires by itself");
    }
    Ok(result?)
}

pub fn print_due(report: &DueReport) {
    println!(
        "due pass{}: {} pairs due, {} judged, {} still waiting, {} dropped, {} handed back to the full sweep, in {} ms",
        report
            .now
            .map(|now| format!(" at {}", janitor_core::format_timestamp(now)))
            .unwrap_or_default(),
        report.due,
        report.judged,
        report.rescheduled,
        report.dropped,
        report.handed_back,
        report.elapsed_ms
    );
    for (kind, k) in &report.kinds {
        println!(
            "  {kind:<17} found {:>6}  enqueued {:>6}  already queued {:>6}  deferred {:>6}",
            k.found, k.queue.enqueued, k.queue.already_queued, k.queue.deferred
        );
    }
}

pub fn print_report(report: &SweepReport) {
    let s = &report.stats;
    println!(
        "sweep at {}{}: {} slots and {} open rows scanned in {} ms",
        janitor_core::format_timestamp(report.now),
        if report.dry_run { " (dry run)" } else { "" },
        s.slots_scanned,
        s.rows_scanned,
        report.elapsed_ms
    );
    if report.kinds.is_empty() {
        println!("  nothing to clean up");
    }
    for (kind, k) in &report.kinds {
        if report.dry_run {
            println!("  {kind:<17} found {:>6}", k.found);
        } else {
            println!(
                "  {kind:<17} found {:>6}  enqueued {:>6}  already queued {:>6}  deferred {:>6}  dead {:>4}",
                k.found, k.queue.enqueued, k.queue.already_queued, k.queue.deferred, k.queue.dead
            );
            if k.queue.redriven > 0 {
                println!(
                    "  {kind:<17} re-driven {:>5} (dead for longer than the cool-off: enqueued again under a new id)",
                    k.queue.redriven
                );
            }
        }
    }
    for job in &report.would_enqueue {
        println!("  would enqueue {}", job.task_id());
    }
    if s.corrupt_slots + s.corrupt_rows > 0 {
        println!(
            "  corrupt: {} slots, {} rows (see `janitor stuck`)",
            s.corrupt_slots, s.corrupt_rows
        );
    }
    let b = &report.breaker;
    if let Some(reason) = &b.refused {
        println!("  REFUSED: {reason} Nothing was enqueued (use --force to override).");
    } else if report.breaker_tripped {
        println!(
            "  BREAKER TRIPPED ({}): {} of {} guarded reclaims/releases/fails held back, {} pushed; {} became due since the previous pass (use --force to override)",
            b.state, b.held, b.guarded, b.pushed, b.guarded_new
        );
    }
}
