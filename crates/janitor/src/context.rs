//! Opening the stores from the settings, with errors that name the resource.

use anyhow::Context as _;
use janitor_store::{redact_url, Database, ExecutionStore, SlotStore};

use crate::settings::Settings;

pub async fn slot_store(settings: &Settings) -> anyhow::Result<SlotStore> {
    SlotStore::connect(
        &settings.redis_url,
        settings.slot_keys.clone(),
        settings.policy.ttl_buffer_secs,
    )
    .await
    .with_context(|| format!("connecting to Redis at {}", redact_url(&settings.redis_url)))
}

pub async fn database(settings: &Settings, create: bool) -> anyhow::Result<Database> {
    Database::connect(&settings.database_url, create)
        .await
        .with_context(|| format!("opening database {}", redact_url(&settings.database_url)))
}

pub async fn execution_store(settings: &Settings) -> anyhow::Result<ExecutionStore> {
    let db = database(settings, false).await?;
    ExecutionStore::open(db)
        .await
        .with_context(|| format!("checking database {}", redact_url(&settings.database_url)))
}
