//! `janitor run`: single-node mode — a startup sweep, a sweep every interval and workers,
//! with graceful shutdown; or `--once`: one sweep, every due job processed, one report.

use std::time::Duration;

use futures::FutureExt as _;
use janitor_producer::SweepReport;
use janitor_worker::{runner, Applier, Tally};
use serde::Serialize;

use crate::cli::RunArgs;
use crate::commands::sweep::{print_report, sweep_once};
use crate::{context, settings::Settings};

/// Both sides of one cycle, correlated: what the sweep found and what the jobs did.
#[derive(Debug, Serialize)]
struct CycleReport {
    sweep: SweepReport,
    jobs: Tally,
}

pub async fn run(settings: &Settings, args: &RunArgs) -> anyhow::Result<()> {
    let slots = context::slot_store(settings).await?;
    let rows = context::execution_store(settings).await?;
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
            settings, &slots, &rows, &queue, false, args.force, lease_wait,
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

    let shutdown = context::shutdown_signal().boxed().shared();
    let workers = tokio::spawn(runner::run(
        applier,
        queue.clone(),
        options,
        shutdown.clone(),
    ));
    let mut ticker = tokio::time::interval(settings.sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.clone() => break,
            _ = ticker.tick() => {}
        }
        match sweep_once(
            settings, &slots, &rows, &queue, false, args.force, lease_wait,
        )
        .await
        {
            Ok(report) => {
                let found: u64 = report.kinds.values().map(|k| k.found).sum();
                let enqueued: u64 = report.kinds.values().map(|k| k.queue.enqueued).sum();
                tracing::info!(
                    found,
                    enqueued,
                    slots = report.stats.slots_scanned,
                    rows = report.stats.rows_scanned,
                    breaker_tripped = report.breaker_tripped,
                    "sweep done"
                );
            }
            // A failed sweep is retried at the next tick; the workers keep running.
            Err(err) => tracing::error!(error = format!("{err:#}"), "sweep failed"),
        }
    }
    let tally = workers.await?;
    tracing::info!(tally = ?tally, "stopped");
    Ok(())
}

fn print_cycle(report: &CycleReport) {
    print_report(&report.sweep);
    let k = |name: &str| report.jobs.kinds.get(name).copied().unwrap_or_default();
    let (reclaim, release, fail, skip) = (
        k("reclaim_slot"),
        k("release_slot"),
        k("fail_run"),
        k("finalize_skipped"),
    );
    let no_ops: u64 = report.jobs.kinds.values().map(|t| t.no_longer_needed).sum();
    let errors: u64 = report.jobs.kinds.values().map(|t| t.errors).sum();
    let dead: u64 = report.jobs.kinds.values().map(|t| t.dead).sum::<u64>() + report.jobs.malformed;
    println!(
        "cycle: stale slots reclaimed {} (runs failed with them {}), leaked slots released {}, \
         orphaned/never-launched runs failed {}, skipped runs finalized {}, no-ops {}, errors {}, dead {}",
        reclaim.slots_reclaimed,
        reclaim.runs_failed,
        release.slots_released + fail.slots_released,
        fail.runs_failed,
        skip.runs_cancelled,
        no_ops,
        errors,
        dead
    );
}
