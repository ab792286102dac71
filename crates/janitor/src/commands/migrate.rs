//! `janitor migrate`: create janitor's table and indexes on the platform's database (and,
//! with `--create-platform-tables`, the platform's own tables, for a demo or a test). Safe
//! on a live platform database: nothing existing is altered.

use anyhow::Context as _;
use janitor_store::redact_url;

use crate::cli::MigrateArgs;
use crate::{context, settings::Settings};

pub async fn run(settings: &Settings, args: &MigrateArgs) -> anyhow::Result<()> {
    // A missing SQLite file is created only when asked: `sqlite://janitor.db` opened from
    // the wrong directory must not become an empty "platform" database.
    let db = context::database(settings, args.create_platform_tables).await?;
    let report = db
        .migrate(args.create_platform_tables)
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
