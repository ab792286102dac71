//! `janitor run`: single-node mode — a startup sweep, a sweep every interval and workers,
//! with graceful shutdown; or `--once`: one sweep, every due job processed, one report.
//! `--role producer` sweeps only and `--role worker` works only, for scaling out; each
//! long-running process also serves the admin HTTP API (`--listen`).

use std::time::Duration;

use futures::FutureExt as _;
use janitor_producer::SweepReport;
use janitor_worker::{runner, Applier, Tally};
use serde::Serialize;

use crate::admin;
use crate::cli::{Listen, RunArgs};
use crate::commands::sweep::{due_once, options as sweep_options, print_report, sweep_once};
use crate::{context, settings::Settings};

/// Both sides of one cycle, correlated: what the sweep found and what the jobs did.
#[derive(Debug, Serialize)]
struct CycleReport {
    sweep: SweepReport,
    jobs: Tally,
}

pub async fn run(settings: &Settings, args: &RunArgs) -> anyhow::Result<()> {
    let shutdown = context::shutdown_signal().boxed().shared();
    // A long-running process listens at once and waits for its stores (`/readyz` says
    // "starting" meanwhile); `--once` is a command: a store that is down is its error.
    let starting = match (args.once, args.listen) {
        (false, Listen::On(addr)) => Some(admin::Starting::start(admin::bind(addr).await?)?),
        _ => None,
    };
    let (slots, rows) = if args.once {
        (
            context::slot_store(settings).await?,
            context::execution_store(settings).await?,
        )
    } else {
        // Sweeping every minute for as long as it runs: its sweeps reuse the timeouts they
        // read while a slot's score stays the same.
        let (slots, rows) = tokio::select! {
            stores = context::stores_when_ready(settings) => stores?,
            () = shutdown.clone() => return Ok(()),
        };
        (slots.with_timeout_cache(), rows)
    };
    let queue = context::queue(settings, &slots);
    let options = context::worker_options(settings, args.once);
    let applier = Applier::new(
        slots.clone(),
        rows.clone(),
        settings.policy,
        options.name_prefix.clone(),
    );
    let lease_wait = settings.sweep_interval.max(Duration::from_secs(1));

    if args.once {
        let sweep = sweep_once(
            settings,
            &slots,
            &rows,
            &queue,
            &sweep_options(settings, false, args.force),
            lease_wait,
        )
        .await?;
        let jobs = runner::run(applier, queue, options, std::future::pending()).await;
        let report = CycleReport { sweep, jobs };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_cycle(&report);
        }
        return Ok(());
    }

    let admin = match starting {
        None => None,
        Some(starting) => {
            let listener = starting.ready().await?;
            // Before the first sweep or job, so the metrics miss nothing.
            admin::metrics::Exporter::install()?;
            let (settings, slots, rows, queue, stop) = (
                settings.clone(),
                slots.clone(),
                rows.clone(),
                queue.clone(),
                shutdown.clone(),
            );
            Some(tokio::spawn(async move {
                admin::serve(&settings, listener, slots, rows, queue, stop).await
            }))
        }
    };
    let workers = args.role.works().then(|| {
        tokio::spawn(runner::run(
            applier,
            queue.clone(),
            options,
            shutdown.clone(),
        ))
    });
    // Due passes beside the full sweeps: every pair whose deadline or grace has come is
    // judged within one interval of it.
    let due = match (args.role.sweeps(), settings.due_interval) {
        (true, Some(every)) => {
            let (settings, slots, rows, queue, stop) = (
                settings.clone(),
                slots.clone(),
                rows.clone(),
                queue.clone(),
                shutdown.clone(),
            );
            let force = args.force;
            Some(tokio::spawn(async move {
                due_loop(&settings, &slots, &rows, &queue, force, every, stop).await
            }))
        }
        _ => None,
    };
    tracing::info!(role = args.role.as_str(), "running");
    if !args.role.sweeps() {
        shutdown.clone().await;
    }
    let mut first = true;
    let mut catching_up = false;
    // A forced catch-up's next pass starts where the last one stopped (see
    // `SweepOptions::resume`); any other pass starts from the beginning.
    let mut pass = sweep_options(settings, false, args.force);
    while args.role.sweeps() {
        // Sweep at start, then every interval; while catching up (the last sweep deferred
        // jobs at the backlog cap), again as soon as the workers have drained the queue.
        let wait = async {
            if first {
                return;
            }
            if catching_up {
                wait_for_room(&queue, settings.sweep_interval).await;
            } else {
                tokio::time::sleep(settings.sweep_interval).await;
            }
        };
        tokio::select! {
            () = shutdown.clone() => break,
            () = wait => {}
        }
        first = false;
        match sweep_once(settings, &slots, &rows, &queue, &pass, lease_wait).await {
            Ok(report) => {
                pass.resume = report.resume();
                let found: u64 = report.kinds.values().map(|k| k.found).sum();
                let enqueued: u64 = report.kinds.values().map(|k| k.queue.enqueued).sum();
                let deferred: u64 = report.kinds.values().map(|k| k.queue.deferred).sum();
                catching_up = report.has_more();
                tracing::info!(
                    found,
                    enqueued,
                    deferred,
                    slots = report.stats.slots_scanned,
                    rows = report.stats.rows_scanned,
                    corrupt_slots = report.stats.corrupt_slots,
                    corrupt_rows = report.stats.corrupt_rows,
                    breaker_tripped = report.breaker_tripped,
                    fence = report.fence,
                    duration_ms = report.elapsed_ms,
                    // The next pass goes on where this one stopped.
                    resumes = pass.resume.is_some(),
                    "sweep done"
                );
            }
            // A failed sweep is retried at the next tick; the workers keep running.
            Err(err) => {
                catching_up = false;
                pass.resume = None;
                tracing::error!(error = format!("{err:#}"), "sweep failed");
            }
        }
    }
    if let Some(due) = due {
        due.await?;
    }
    if let Some(workers) = workers {
        let tally = workers.await?;
        let sum =
            |f: fn(&janitor_worker::KindTally) -> u64| tally.kinds.values().map(f).sum::<u64>();
        tracing::info!(
            applied = sum(|k| k.applied),
            no_longer_needed = sum(|k| k.no_longer_needed),
            errors = sum(|k| k.errors),
            dead = sum(|k| k.dead),
            malformed = tally.malformed,
            restarts = tally.restarts,
            "workers stopped"
        );
    }
    if let Some(admin) = admin {
        admin.await??;
    }
    tracing::info!("stopped");
    Ok(())
}

/// A due pass every `every` until `stop`. A pass that fails is logged and the next one
/// tries again; a pass skipped because another producer holds the lease is silent.
async fn due_loop(
    settings: &Settings,
    slots: &janitor_store::SlotStore,
    rows: &janitor_store::ExecutionStore,
    queue: &janitor_queue::Queue,
    force: bool,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticker.tick() => {}
        }
        // A started pass runs to its end (it is short): its own lease is released, not
        // left to expire under a restarting producer.
        match due_once(settings, slots, rows, queue, false, force, Duration::ZERO).await {
            Ok(Some(report)) if report.due > 0 => {
                let found: u64 = report.kinds.values().map(|k| k.found).sum();
                let enqueued: u64 = report.kinds.values().map(|k| k.queue.enqueued).sum();
                tracing::debug!(
                    due = report.due,
                    found,
                    enqueued,
                    rescheduled = report.rescheduled,
                    handed_back = report.handed_back,
                    duration_ms = report.elapsed_ms,
                    "due pass done"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = format!("{err:#}"), "due pass failed"),
        }
    }
}

/// Returns once the queue's backlog is down to a quarter of its cap (or after `limit`).
async fn wait_for_room(queue: &janitor_queue::Queue, limit: Duration) {
    let low = queue.settings().backlog_cap / 4;
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if queue.backlog().await.is_ok_and(|b| b <= low) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_cycle(report: &CycleReport) {
    print_report(&report.sweep);
    let k = |name: &str| report.jobs.kinds.get(name).copied().unwrap_or_default();
    let (reclaim, release, fail, skip, activity) = (
        k("reclaim_slot"),
        k("release_slot"),
        k("fail_run"),
        k("finalize_skipped"),
        k("close_activity"),
    );
    let no_ops: u64 = report.jobs.kinds.values().map(|t| t.no_longer_needed).sum();
    let errors: u64 = report.jobs.kinds.values().map(|t| t.errors).sum();
    let dead: u64 = report.jobs.kinds.values().map(|t| t.dead).sum::<u64>() + report.jobs.malformed;
    println!(
        "cycle: stale slots reclaimed {} (runs failed with them {}), leaked slots released {}, \
         orphaned/never-launched runs failed {}, skipped runs finalized {}, activities closed {}, \
         no-ops {}, errors {}, dead {}",
        reclaim.slots_reclaimed,
        reclaim.runs_failed,
        release.slots_released + fail.slots_released,
        fail.runs_failed,
        skip.runs_cancelled + skip.runs_failed,
        activity.activities_closed,
        no_ops,
        errors,
        dead
    );
}
