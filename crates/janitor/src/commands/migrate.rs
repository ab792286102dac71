//! `janitor migrate`: create janitor's table and indexes, and the platform's tables when
//! they are missing. Safe on a live platform database: nothing existing is altered.

use anyhow::Context as _;
use janitor_store::redact_url;

use crate::{context, settings::Settings};

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let db = context::database(settings, true).await?;
    let report = db
        .migrate()
        .await
        .with_context(|| format!("migrating {}", redact_url(&settings.database_url)))?;
    if report.applied.is_empty() {
        println!(
            "{} is up to date (schema version {})",
            redact_url(&settings.database_url),
            report.latest
        );
    } else {
        let applied: Vec<String> = report.applied.iter().map(i64::to_string).collect();
        println!(
            "migrated {}: applied {} (schema version {})",
            redact_url(&settings.database_url),
            applied.join(", "),
            report.latest
        );
    }
    db.close().await;
    Ok(())
}
