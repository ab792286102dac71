//! `janitor work`: process cleanup jobs until SIGTERM/SIGINT (or until idle).

use janitor_worker::{runner, Applier};

use crate::cli::WorkArgs;
use crate::{context, settings::Settings};

pub async fn run(settings: &Settings, args: &WorkArgs) -> anyhow::Result<()> {
    let (slots, rows) = tokio::select! {
        stores = context::stores_when_ready(settings) => stores?,
        () = context::shutdown_signal() => return Ok(()),
    };
    let queue = context::queue(settings, &slots);
    let options = context::worker_options(settings, args.exit_when_idle);
    let applier = Applier::new(slots, rows, settings.policy, options.name_prefix.clone());
    let tally = runner::run(applier, queue, options, context::shutdown_signal()).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tally)?);
    } else {
        for (kind, t) in &tally.kinds {
            println!(
                "{kind:<17} applied {:>6}  no longer needed {:>6}  errors {:>4}  dead {:>4}",
                t.applied, t.no_longer_needed, t.errors, t.dead
            );
        }
        if tally.malformed > 0 {
            println!("malformed payloads (dead): {}", tally.malformed);
        }
    }
    Ok(())
}
