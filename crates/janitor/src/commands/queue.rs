//! `janitor queue`: what the queue holds, and re-driving dead jobs.

use anyhow::bail;
use janitor_core::JobKind;
use janitor_queue::{Queue, RetryOutcome};
use serde_json::json;

use crate::cli::{QueueCommand, RetryArgs};
use crate::{context, settings::Settings};

pub async fn run(settings: &Settings, command: &QueueCommand) -> anyhow::Result<()> {
    // Validate before connecting: a typo is a usage error whether or not Redis is up.
    let kind = match command {
        QueueCommand::Retry(RetryArgs {
            kind: Some(kind), ..
        }) => Some(parse_kind(kind)?),
        _ => None,
    };
    let slots = context::slot_store(settings).await?;
    let queue = context::queue(settings, &slots);
    match command {
        QueueCommand::Stats { json } => stats(&queue, *json).await,
        QueueCommand::Retry(args) => retry(&queue, args, kind).await,
    }
}

fn parse_kind(name: &str) -> anyhow::Result<JobKind> {
    match JobKind::ALL.into_iter().find(|k| k.as_str() == name) {
        Some(kind) => Ok(kind),
        None => {
            let known: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
            bail!(
                "unknown job kind {name:?}: expected one of {}",
                known.join(", ")
            )
        }
    }
}

async fn stats(queue: &Queue, json: bool) -> anyhow::Result<()> {
    let stats = queue.stats().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    let in_flight: u64 = stats.in_flight.values().sum();
    println!("queue {}", queue.keys().name());
    println!(
        "  scheduled  {} due, {} later",
        stats.scheduled_due, stats.scheduled_future
    );
    println!("  retrying   {}", stats.retrying);
    println!("  active     {}", stats.active);
    println!("  in flight  {in_flight}");
    for (worker, held) in &stats.in_flight {
        println!("    {worker}  {held}");
    }
    println!("  dead       {}", stats.dead);
    println!("  done       {}", stats.done);
    match stats.oldest_due_age_secs {
        Some(age) => println!("  oldest due job waiting {age:.1}s"),
        None => println!("  no job is due"),
    }
    Ok(())
}

async fn retry(queue: &Queue, args: &RetryArgs, kind: Option<JobKind>) -> anyhow::Result<()> {
    let outcomes = if args.all_dead {
        queue.retry_all_dead(kind).await?
    } else {
        let outcomes = queue.retry_dead(&args.ids).await?;
        args.ids.iter().cloned().zip(outcomes).collect()
    };
    let (mut moved, mut not_dead) = (Vec::new(), Vec::new());
    for (id, outcome) in outcomes {
        match outcome {
            RetryOutcome::Moved => moved.push(id),
            RetryOutcome::NotDead => not_dead.push(id),
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "moved": moved, "not_dead": not_dead }))?
        );
        return Ok(());
    }
    for id in &moved {
        println!("re-driven: {id}");
    }
    for id in &not_dead {
        println!("not dead (left alone): {id}");
    }
    println!(
        "{} moved back to due, {} not dead",
        moved.len(),
        not_dead.len()
    );
    Ok(())
}
