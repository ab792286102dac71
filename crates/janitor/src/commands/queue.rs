//! `janitor queue`: what the queue holds, and re-driving dead jobs.

use anyhow::bail;
use janitor_core::JobKind;
use janitor_queue::{JobInfo, Queue, RetryOutcome};
use janitor_store::sql::audit::{self, AuditFilter};
use serde_json::json;

use crate::cli::{ListArgs, PurgeArgs, PurgeState, QueueCommand, RetryArgs};
use crate::{context, settings::Settings};

pub async fn run(settings: &Settings, command: &QueueCommand) -> anyhow::Result<()> {
    // Validate before connecting: a typo is a usage error whether or not Redis is up.
    let kind = match command {
        QueueCommand::Retry(RetryArgs { kind: Some(k), .. })
        | QueueCommand::List(ListArgs { kind: Some(k), .. }) => Some(parse_kind(k)?),
        _ => None,
    };
    let slots = context::slot_store(settings).await?;
    let queue = context::queue(settings, &slots);
    match command {
        QueueCommand::Stats { json } => stats(&queue, *json).await,
        QueueCommand::List(args) => list(&queue, args, kind).await,
        QueueCommand::Show { id, json } => show(settings, &queue, id, *json).await,
        QueueCommand::Retry(args) => retry(&queue, args, kind).await,
        QueueCommand::Purge(args) => purge(&queue, args).await,
    }
}

fn parse_kind(name: &str) -> anyhow::Result<JobKind> {
    match JobKind::parse(name) {
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
    println!("  workers    {} alive", stats.workers_alive);
    match stats.oldest_due_age_secs {
        Some(age) => println!("  oldest due job waiting {age:.1}s"),
        None => println!("  no job is due"),
    }
    Ok(())
}

async fn list(queue: &Queue, args: &ListArgs, kind: Option<JobKind>) -> anyhow::Result<()> {
    let state = args.state;
    let page = queue
        .list(state, kind, args.cursor, usize::from(args.limit))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    for job in &page.jobs {
        println!("{}", summary(job));
    }
    match page.next {
        Some(next) => println!("more: --cursor {next}"),
        None => println!("({} shown, end of list)", page.jobs.len()),
    }
    Ok(())
}

/// One line per job: id, kind, run, agent, attempts, next run, last error.
fn summary(job: &JobInfo) -> String {
    let mut line = job.id.clone();
    match &job.job {
        Some(payload) => line.push_str(&format!(
            "  {} run={} agent={}",
            payload.kind.as_str(),
            payload.execution_id,
            payload.agent
        )),
        None => line.push_str("  (unreadable payload)"),
    }
    line.push_str(&format!("  attempts={}", job.attempts));
    if let Some(at) = job.next_run.and_then(janitor_core::from_unix_seconds) {
        line.push_str(&format!("  next={}", janitor_core::format_timestamp(at)));
    }
    if let Some(worker) = &job.worker {
        line.push_str(&format!("  worker={worker}"));
    }
    if let Some(error) = &job.last_error {
        line.push_str(&format!("  error={error}"));
    }
    line
}

async fn show(settings: &Settings, queue: &Queue, id: &str, json: bool) -> anyhow::Result<()> {
    let Some(job) = queue.show(id).await? else {
        bail!("no job {id:?} in queue {}", queue.keys().name());
    };
    let trail = match &job.job {
        Some(payload) => {
            let rows = context::execution_store(settings).await?;
            let filter = AuditFilter {
                execution_id: Some(payload.execution_id.as_str().to_owned()),
                agent: None,
                since: None,
                limit: 50,
            };
            audit::query(rows.database(), &filter).await?
        }
        None => Vec::new(),
    };
    if json {
        let value = json!({ "job": job, "audit": trail });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("{}", summary(&job));
    println!(
        "state: {}",
        serde_json::to_value(job.state)?.as_str().unwrap_or("?")
    );
    match (&job.job, &job.raw_payload) {
        (Some(payload), _) => println!("payload: {}", serde_json::to_string(payload)?),
        (None, Some(raw)) => println!("payload (unreadable): {raw}"),
        (None, None) => println!("payload: (gone)"),
    }
    if trail.is_empty() {
        println!("audit: nothing applied for this run yet");
    }
    for row in &trail {
        println!(
            "audit: {} {} {} -> {} by {} (job {})",
            row.at,
            row.action,
            row.status_before.as_deref().unwrap_or("-"),
            row.status_after.as_deref().unwrap_or("-"),
            row.worker,
            row.job_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

async fn purge(queue: &Queue, args: &PurgeArgs) -> anyhow::Result<()> {
    let dead = args.state == PurgeState::Dead;
    let report = queue.purge(dead, args.older_than).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "purged {} {} jobs finished at least {}s ago; kept {} recent, {} scheduled again, {} without a finish time",
        report.purged,
        if dead { "dead" } else { "done" },
        args.older_than.as_secs(),
        report.kept_recent,
        report.kept_scheduled,
        report.kept_undated
    );
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
