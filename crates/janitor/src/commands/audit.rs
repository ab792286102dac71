//! `janitor audit`: what janitor changed and why, newest first.

use anyhow::Context as _;
use janitor_core::{parse_timestamp, Timestamp};
use janitor_store::sql::audit::{self, AuditFilter};

use crate::cli::{parse_duration, AuditArgs};
use crate::{context, settings::Settings};

pub async fn run(settings: &Settings, args: &AuditArgs) -> anyhow::Result<()> {
    let since = args.since.as_deref().map(since).transpose()?;
    let rows = context::execution_store(settings).await?;
    let filter = AuditFilter {
        execution_id: args.execution.clone(),
        agent: args.agent.clone(),
        since,
        limit: args.limit,
    };
    let trail = audit::query(rows.database(), &filter).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&trail)?);
        return Ok(());
    }
    if trail.is_empty() {
        println!("no audit rows match");
    }
    for row in &trail {
        let mut line = format!(
            "{}  {}  run={} agent={}",
            row.at, row.action, row.execution_id, row.agent_name
        );
        if row.status_before.is_some() || row.status_after.is_some() {
            line.push_str(&format!(
                "  {} -> {}",
                row.status_before.as_deref().unwrap_or("-"),
                row.status_after.as_deref().unwrap_or("-")
            ));
        }
        if let Some(score) = row.slot_score {
            line.push_str(&format!("  slot_score={score}"));
        }
        if let Some(deadline) = &row.deadline {
            line.push_str(&format!("  deadline={deadline}"));
        }
        line.push_str(&format!("  by={}", row.worker));
        if let Some(job) = &row.job_id {
            line.push_str(&format!("  job={job}"));
        }
        if let Some(detail) = &row.detail {
            line.push_str(&format!("  detail={detail}"));
        }
        println!("{line}");
    }
    Ok(())
}

/// An ISO-8601 instant, or a duration meaning that long ago.
pub fn since(value: &str) -> anyhow::Result<Timestamp> {
    if let Ok(ago) = parse_duration(value) {
        let ago = chrono::TimeDelta::from_std(ago).context("--since is too far back")?;
        return chrono::Utc::now()
            .checked_sub_signed(ago)
            .context("--since is too far back");
    }
    parse_timestamp(value).map_err(|e| anyhow::anyhow!("--since: {e} (or a duration like 12h)"))
}
