//! Opening the stores from the settings, with errors that name the resource.

use anyhow::Context as _;
use std::time::Duration;

use janitor_store::{redact_url, Database, ExecutionStore, SlotStore, StoreError};

use crate::settings::Settings;

pub async fn slot_store(settings: &Settings) -> anyhow::Result<SlotStore> {
    let probe = settings
        .probe
        .clone()
        .map(janitor_store::AgentProbe::new)
        .transpose()?;
    Ok(SlotStore::connect(
        &settings.redis_url,
        settings.slot_keys.clone(),
        settings.policy.ttl_buffer_secs,
    )
    .await
    .with_context(|| format!("connecting to Redis at {}", redact_url(&settings.redis_url)))?
    .with_probe(probe))
}

pub async fn database(settings: &Settings, create: bool) -> anyhow::Result<Database> {
    Database::connect(&settings.database_url, create)
        .await
        .with_context(|| format!("opening database {}", redact_url(&settings.database_url)))
}

/// Both stores, waiting while either cannot be reached yet (down, still loading its data,
/// refusing connections, read-only for a while): a log line per attempt, backoff up to 30 s,
/// for as long as it takes — a crash loop instead would be backed off for minutes by an
/// orchestrator. An error that waiting cannot cure (a bad URL or password, a missing
/// table, no such database) is returned at once.
pub async fn stores_when_ready(settings: &Settings) -> anyhow::Result<(SlotStore, ExecutionStore)> {
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let result = async {
            let slots = slot_store(settings).await?;
            let rows = execution_store(settings).await?;
            anyhow::Ok((slots, rows))
        }
        .await;
        match result {
            Ok(stores) => {
                if attempt > 1 {
                    tracing::warn!(attempt, "stores reachable: starting");
                }
                return Ok(stores);
            }
            Err(err) if waiting_helps(&err) => {
                let wait = janitor_worker::runner::backoff(
                    attempt.min(8),
                    Duration::from_millis(500),
                    Duration::from_secs(30),
                );
                tracing::warn!(
                    attempt,
                    retry_in_ms = wait.as_millis() as u64,
                    error = format!("{err:#}"),
                    "waiting for the stores"
                );
                tokio::time::sleep(wait).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Whether an error opening a store may go away by itself.
fn waiting_helps(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<StoreError>()
            .is_some_and(StoreError::is_transient)
    })
}

pub async fn execution_store(settings: &Settings) -> anyhow::Result<ExecutionStore> {
    let db = database(settings, false).await?;
    ExecutionStore::open(db)
        .await
        .with_context(|| format!("checking database {}", redact_url(&settings.database_url)))
}

/// The cleanup queue, sharing the slot store's Redis connection.
pub fn queue(settings: &Settings, slots: &SlotStore) -> janitor_queue::Queue {
    janitor_queue::Queue::new(slots.connection(), settings.queue.clone())
}

/// A name for this process in worker names, leases and the audit trail.
pub fn process_name(role: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("janitor-{role}-{host}-{}", std::process::id())
}

/// Worker options from the settings.
pub fn worker_options(settings: &Settings, exit_when_idle: bool) -> janitor_worker::WorkerOptions {
    janitor_worker::WorkerOptions {
        concurrency: settings.concurrency,
        max_attempts: settings.max_attempts,
        retry_max_delay: settings.retry_max_delay,
        exit_when_idle,
        name_prefix: process_name("worker"),
        ..janitor_worker::WorkerOptions::default()
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested: finishing running jobs");
}
