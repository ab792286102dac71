//! `janitor skip`: the scheduler's hook, run when it skips a run because the agent is busy.

use anyhow::Context as _;
use janitor_core::{AgentName, ExecutionId};
use janitor_producer::enqueue_skip;

use crate::cli::SkipArgs;
use crate::{context, settings::Settings};

pub async fn run(settings: &Settings, args: &SkipArgs) -> anyhow::Result<()> {
    let execution = ExecutionId::parse(args.execution_id.clone()).context("--execution-id")?;
    let agent = args
        .agent
        .clone()
        .map(AgentName::parse)
        .transpose()
        .context("--agent")?;
    let slots = context::slot_store(settings).await?;
    let rows = context::execution_store(settings).await?;
    let queue = context::queue(settings, &slots);
    let receipt = enqueue_skip(
        &queue,
        &slots,
        &rows,
        &settings.policy,
        &execution,
        agent.as_ref(),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&receipt)?);
    } else if receipt.queue.enqueued > 0 {
        println!(
            "enqueued {} (due in {}s)",
            receipt.task_id, receipt.delay_secs
        );
    } else {
        println!("already queued: {}", receipt.task_id);
    }
    Ok(())
}
