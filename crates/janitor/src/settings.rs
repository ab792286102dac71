//! The one settings struct, loaded once in `main`: flags and environment beat the settings
//! file, which beats the built-in defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use janitor_core::{ErrorStyle, LeasePolicy, Policy, SkippedPolicy, UnreachablePolicy};
use janitor_producer::Breaker;
use janitor_queue::QueueSettings;
use janitor_store::{
    redact_url, AgentProbe, ProbeSettings, SlotKeys, DEFAULT_SLOT_META_PREFIX, DEFAULT_SLOT_PREFIX,
    PLATFORM_PROBE_URL,
};
use serde::{Deserialize, Serialize};

use crate::cli::{ErrorStyleArg, GlobalArgs, LeasePolicyArg, SkippedPolicyArg, UnreachableArg};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://janitor.db";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Rows and slots read per page: at a million slots, 500-row pages spent a fifth of a
/// sweep on per-page round trips; a 2,000-row page holds about 2 MB in flight.
pub const DEFAULT_SCAN_BATCH: usize = 2_000;
/// Jobs in flight per worker process. They wait on batched applies, not on CPU: more in
/// flight means bigger batches (fewer statements and round trips per job); `make bench`
/// measured 32 → 2,956, 64 → 3,573, 128 → 4,160 pairs/s on PostgreSQL with batches of at
/// most 64. With batches of at most 512 ([`janitor_worker::MAX_BATCH`]), two of them keep
/// one batch writing while the next reads.
pub const DEFAULT_CONCURRENCY: usize = janitor_worker::DEFAULT_CONCURRENCY;
pub const DEFAULT_MAX_ATTEMPTS: usize = 5;
pub const DEFAULT_SWEEP_INTERVAL_SECS: u64 = 60;
/// Milliseconds between due passes by default.
pub const DEFAULT_DUE_INTERVAL_MS: u64 = 1_000;
/// The agent probe's per-request timeout. Shorter than the platform's 15 s: a sweep waits
/// for its slowest agent, and an agent that slow counts as unreachable.
pub const DEFAULT_AGENT_PROBE_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_AGENT_PROBE_CONCURRENCY: usize = 8;
pub const DEFAULT_AGENT_PROBE_CACHE_SECS: u64 = 5;
const DEFAULT_CONFIG_FILE: &str = "janitor.toml";

/// `janitor.toml`: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    database_url: Option<String>,
    redis_url: Option<String>,
    slot_prefix: Option<String>,
    slot_meta_prefix: Option<String>,
    inflight_prefix: Option<String>,
    sentinel_prefix: Option<String>,
    sentinel_report_after_secs: Option<i64>,
    queued_expire_after_secs: Option<i64>,
    activity_stale_after_secs: Option<i64>,
    lease_policy: Option<LeasePolicy>,
    lease_max_redelivery: Option<i64>,
    default_timeout_secs: Option<i64>,
    ttl_buffer_secs: Option<i64>,
    missing_row_grace_secs: Option<i64>,
    session_grace_secs: Option<i64>,
    skipped_after_secs: Option<i64>,
    skipped_policy: Option<SkippedPolicy>,
    error_style: Option<ErrorStyle>,
    agent_probe_url: Option<String>,
    agent_probe_timeout_ms: Option<u64>,
    agent_probe_concurrency: Option<usize>,
    agent_probe_cache_secs: Option<u64>,
    agent_unreachable: Option<UnreachablePolicy>,
    scan_batch: Option<usize>,
    queue: Option<String>,
    backlog_cap: Option<u64>,
    concurrency: Option<usize>,
    max_attempts: Option<usize>,
    dead_retry_after_secs: Option<u64>,
    retry_max_delay_secs: Option<u64>,
    heartbeat_secs: Option<u64>,
    missed_heartbeats: Option<usize>,
    sweep_interval_secs: Option<u64>,
    due_interval_ms: Option<u64>,
    census_interval_secs: Option<u64>,
    breaker_max_fraction: Option<f64>,
    breaker_min_reclaims: Option<u64>,
    breaker_cool_off_secs: Option<u64>,
    breaker_drain_per_minute: Option<u64>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A flag or its environment variable.
    Flag,
    File,
    Default,
}

/// The effective settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub redis_url: String,
    pub slot_keys: SlotKeys,
    pub policy: Policy,
    pub scan_batch: usize,
    pub queue: QueueSettings,
    pub concurrency: usize,
    pub max_attempts: usize,
    /// Cap of the in-delivery backoff.
    pub retry_max_delay: Duration,
    pub sweep_interval: Duration,
    /// Between due passes (`None`: off).
    pub due_interval: Option<Duration>,
    /// How long the census of slot ZSET keys takes to walk the whole keyspace, a share per
    /// sweep.
    pub census_interval: Duration,
    pub breaker: Breaker,
    /// The agent liveness probe (`None`: off).
    pub probe: Option<ProbeSettings>,
    /// Bearer token for mutating HTTP endpoints (`JANITOR_ADMIN_TOKEN` only: never a flag,
    /// never in the settings file, never printed).
    pub admin_token: Option<String>,
    pub config_file: Option<PathBuf>,
    /// (setting name, source), in display order.
    pub sources: Vec<(&'static str, Source)>,
}

impl Settings {
    pub fn load(args: &GlobalArgs) -> anyhow::Result<Self> {
        let (file, config_file) = read_file(args.config.as_deref())?;
        let mut sources = Vec::new();
        let s = &mut sources;
        let defaults = Policy::default();
        let database_url = layer(
            s,
            "database_url",
            args.database_url.clone(),
            file.database_url,
            DEFAULT_DATABASE_URL.to_owned(),
        );
        let redis_url = layer(
            s,
            "redis_url",
            args.redis_url.clone(),
            file.redis_url,
            DEFAULT_REDIS_URL.to_owned(),
        );
        let slot_prefix = layer(
            s,
            "slot_prefix",
            args.slot_prefix.clone(),
            file.slot_prefix,
            DEFAULT_SLOT_PREFIX.to_owned(),
        );
        let slot_meta_prefix = layer(
            s,
            "slot_meta_prefix",
            args.slot_meta_prefix.clone(),
            file.slot_meta_prefix,
            DEFAULT_SLOT_META_PREFIX.to_owned(),
        );
        let platform_keys = SlotKeys::new(slot_prefix.clone(), slot_meta_prefix.clone());
        let inflight_prefix = layer(
            s,
            "inflight_prefix",
            args.inflight_prefix.clone(),
            file.inflight_prefix,
            platform_keys.inflight_prefix().to_owned(),
        );
        let sentinel_prefix = layer(
            s,
            "sentinel_prefix",
            args.sentinel_prefix.clone(),
            file.sentinel_prefix,
            platform_keys.sentinel_prefix().to_owned(),
        );
        let sentinel_report_after_secs = layer(
            s,
            "sentinel_report_after_secs",
            args.sentinel_report_after_secs,
            file.sentinel_report_after_secs,
            defaults.sentinel_report_after_secs,
        );
        let activity_stale_after_secs = layer(
            s,
            "activity_stale_after_secs",
            args.activity_stale_after_secs,
            file.activity_stale_after_secs,
            defaults.activity_stale_after_secs,
        );
        let lease_policy = layer(
            s,
            "lease_policy",
            args.lease_policy.map(|l| match l {
                LeasePolicyArg::Platform => LeasePolicy::Platform,
                LeasePolicyArg::Requeue => LeasePolicy::Requeue,
                LeasePolicyArg::Fail => LeasePolicy::Fail,
            }),
            file.lease_policy,
            defaults.lease,
        );
        let lease_max_redelivery = layer(
            s,
            "lease_max_redelivery",
            args.lease_max_redelivery,
            file.lease_max_redelivery,
            defaults.lease_max_redelivery,
        );
        let queued_expire_after_secs = layer(
            s,
            "queued_expire_after_secs",
            args.queued_expire_after_secs,
            file.queued_expire_after_secs,
            defaults.queued_expire_after_secs,
        );
        let default_timeout_secs = layer(
            s,
            "default_timeout_secs",
            args.default_timeout_secs,
            file.default_timeout_secs,
            defaults.default_timeout_secs,
        );
        let ttl_buffer_secs = layer(
            s,
            "ttl_buffer_secs",
            args.ttl_buffer_secs,
            file.ttl_buffer_secs,
            defaults.ttl_buffer_secs,
        );
        let missing_row_grace_secs = layer(
            s,
            "missing_row_grace_secs",
            args.missing_row_grace_secs,
            file.missing_row_grace_secs,
            defaults.missing_row_grace_secs,
        );
        let session_grace_secs = layer(
            s,
            "session_grace_secs",
            args.session_grace_secs,
            file.session_grace_secs,
            defaults.session_grace_secs,
        );
        let skipped_after_secs = layer(
            s,
            "skipped_after_secs",
            args.skipped_after_secs,
            file.skipped_after_secs,
            defaults.skipped_after_secs,
        );
        let skipped_flag = args.skipped_policy.map(|p| match p {
            SkippedPolicyArg::Finalize => SkippedPolicy::Finalize,
            SkippedPolicyArg::Terminal => SkippedPolicy::Terminal,
            SkippedPolicyArg::Platform => SkippedPolicy::Platform,
        });
        let skipped = layer(
            s,
            "skipped_policy",
            skipped_flag,
            file.skipped_policy,
            defaults.skipped,
        );
        let error_style = layer(
            s,
            "error_style",
            args.error_style.map(|style| match style {
                ErrorStyleArg::Janitor => ErrorStyle::Janitor,
                ErrorStyleArg::Platform => ErrorStyle::Platform,
            }),
            file.error_style,
            defaults.error_style,
        );
        let scan_batch = layer(
            s,
            "scan_batch",
            args.scan_batch,
            file.scan_batch,
            DEFAULT_SCAN_BATCH,
        );
        let qd = QueueSettings::default();
        let queue_name = layer(s, "queue", args.queue.clone(), file.queue, qd.name.clone());
        let backlog_cap = layer(
            s,
            "backlog_cap",
            args.backlog_cap,
            file.backlog_cap,
            qd.backlog_cap,
        );
        let concurrency = layer(
            s,
            "concurrency",
            args.concurrency,
            file.concurrency,
            DEFAULT_CONCURRENCY,
        );
        let max_attempts = layer(
            s,
            "max_attempts",
            args.max_attempts,
            file.max_attempts,
            DEFAULT_MAX_ATTEMPTS,
        );
        let dead_retry_after_secs = layer(
            s,
            "dead_retry_after_secs",
            args.dead_retry_after_secs,
            file.dead_retry_after_secs,
            qd.dead_retry_after.as_secs(),
        );
        let retry_max_delay_secs = layer(
            s,
            "retry_max_delay_secs",
            args.retry_max_delay_secs,
            file.retry_max_delay_secs,
            janitor_worker::runner::DEFAULT_RETRY_MAX_DELAY_SECS,
        );
        let heartbeat_secs = layer(
            s,
            "heartbeat_secs",
            args.heartbeat_secs,
            file.heartbeat_secs,
            qd.heartbeat_interval.as_secs(),
        );
        let missed_heartbeats = layer(
            s,
            "missed_heartbeats",
            args.missed_heartbeats,
            file.missed_heartbeats,
            qd.missed_heartbeats,
        );
        let sweep_interval_secs = layer(
            s,
            "sweep_interval_secs",
            args.sweep_interval_secs,
            file.sweep_interval_secs,
            DEFAULT_SWEEP_INTERVAL_SECS,
        );
        let due_interval_ms = layer(
            s,
            "due_interval_ms",
            args.due_interval_ms,
            file.due_interval_ms,
            DEFAULT_DUE_INTERVAL_MS,
        );
        let census_interval_secs = layer(
            s,
            "census_interval_secs",
            args.census_interval_secs,
            file.census_interval_secs,
            janitor_producer::DEFAULT_CENSUS_INTERVAL.as_secs(),
        );
        let bd = Breaker::default();
        let breaker_max_fraction = layer(
            s,
            "breaker_max_fraction",
            args.breaker_max_fraction,
            file.breaker_max_fraction,
            bd.max_fraction,
        );
        let breaker_min_reclaims = layer(
            s,
            "breaker_min_reclaims",
            args.breaker_min_reclaims,
            file.breaker_min_reclaims,
            bd.min_reclaims,
        );
        let breaker_cool_off_secs = layer(
            s,
            "breaker_cool_off_secs",
            args.breaker_cool_off_secs,
            file.breaker_cool_off_secs,
            bd.cool_off_secs,
        );
        let breaker_drain_per_minute = layer(
            s,
            "breaker_drain_per_minute",
            args.breaker_drain_per_minute,
            file.breaker_drain_per_minute,
            bd.drain_per_minute,
        );
        let agent_probe_url = layer(
            s,
            "agent_probe_url",
            args.agent_probe_url.clone(),
            file.agent_probe_url,
            String::new(),
        );
        let agent_probe_timeout_ms = layer(
            s,
            "agent_probe_timeout_ms",
            args.agent_probe_timeout_ms,
            file.agent_probe_timeout_ms,
            DEFAULT_AGENT_PROBE_TIMEOUT_MS,
        );
        let agent_probe_concurrency = layer(
            s,
            "agent_probe_concurrency",
            args.agent_probe_concurrency,
            file.agent_probe_concurrency,
            DEFAULT_AGENT_PROBE_CONCURRENCY,
        );
        let agent_probe_cache_secs = layer(
            s,
            "agent_probe_cache_secs",
            args.agent_probe_cache_secs,
            file.agent_probe_cache_secs,
            DEFAULT_AGENT_PROBE_CACHE_SECS,
        );
        let agent_unreachable = layer(
            s,
            "agent_unreachable",
            args.agent_unreachable.map(|u| match u {
                UnreachableArg::Skip => UnreachablePolicy::Skip,
                UnreachableArg::Hold => UnreachablePolicy::Hold,
            }),
            file.agent_unreachable,
            defaults.agent_unreachable,
        );
        let probe = match agent_probe_url.trim() {
            "" => None,
            url => {
                let settings = ProbeSettings {
                    url_template: if url == "platform" {
                        PLATFORM_PROBE_URL.to_owned()
                    } else {
                        url.to_owned()
                    },
                    timeout: Duration::from_millis(agent_probe_timeout_ms),
                    concurrency: agent_probe_concurrency,
                    cache_ttl: Duration::from_secs(agent_probe_cache_secs),
                };
                // Checks the template now: a bad one is a startup error, not a quiet no-op.
                AgentProbe::new(settings.clone())?;
                Some(settings)
            }
        };
        let policy = Policy {
            default_timeout_secs,
            ttl_buffer_secs,
            missing_row_grace_secs,
            session_grace_secs,
            skipped_after_secs,
            skipped,
            sentinel_report_after_secs,
            error_style,
            agent_unreachable,
            queued_expire_after_secs,
            activity_stale_after_secs,
            lease: lease_policy,
            lease_max_redelivery,
        };
        policy
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        if !(1..=10_000).contains(&scan_batch) {
            anyhow::bail!(
                "invalid settings: scan_batch must be between 1 and 10000, got {scan_batch}"
            );
        }
        if slot_prefix.is_empty() || slot_meta_prefix.is_empty() {
            anyhow::bail!("invalid settings: slot prefixes must not be empty");
        }
        if queue_name.is_empty() {
            anyhow::bail!("invalid settings: queue name must not be empty");
        }
        if !(1..=1024).contains(&concurrency) {
            anyhow::bail!(
                "invalid settings: concurrency must be between 1 and 1024, got {concurrency}"
            );
        }
        if !(1..=100).contains(&max_attempts) {
            anyhow::bail!(
                "invalid settings: max_attempts must be between 1 and 100, got {max_attempts}"
            );
        }
        if heartbeat_secs == 0
            || missed_heartbeats == 0
            || sweep_interval_secs == 0
            || census_interval_secs == 0
        {
            anyhow::bail!("invalid settings: heartbeat_secs, missed_heartbeats, sweep_interval_secs and census_interval_secs must be at least 1");
        }
        if breaker_drain_per_minute == 0 {
            anyhow::bail!("invalid settings: breaker_drain_per_minute must be at least 1 (a tripped breaker must drain by itself)");
        }
        if !(0.0..=1.0).contains(&breaker_max_fraction) {
            anyhow::bail!("invalid settings: breaker_max_fraction must be between 0 and 1, got {breaker_max_fraction}");
        }
        Ok(Self {
            database_url,
            redis_url,
            slot_keys: platform_keys
                .with_inflight_prefix(inflight_prefix)
                .with_sentinel_prefix(sentinel_prefix),
            policy,
            scan_batch,
            queue: QueueSettings {
                name: queue_name,
                // Never fetch more than can run at once: fetched-but-waiting jobs would
                // sit in this worker's inflight set without heartbeat progress.
                batch_size: concurrency.min(64),
                backlog_cap,
                heartbeat_interval: Duration::from_secs(heartbeat_secs),
                missed_heartbeats,
                dead_retry_after: Duration::from_secs(dead_retry_after_secs),
                ..qd
            },
            concurrency,
            max_attempts,
            retry_max_delay: Duration::from_secs(retry_max_delay_secs.max(1)),
            sweep_interval: Duration::from_secs(sweep_interval_secs),
            due_interval: (due_interval_ms > 0).then(|| Duration::from_millis(due_interval_ms)),
            census_interval: Duration::from_secs(census_interval_secs),
            breaker: Breaker {
                max_fraction: breaker_max_fraction,
                min_reclaims: breaker_min_reclaims,
                cool_off_secs: breaker_cool_off_secs,
                drain_per_minute: breaker_drain_per_minute,
                window_secs: sweep_interval_secs as f64,
            },
            probe,
            admin_token: {
                let token = args.admin_token.clone().filter(|t| !t.is_empty());
                sources.push((
                    "admin_token",
                    if token.is_some() {
                        Source::Flag
                    } else {
                        Source::Default
                    },
                ));
                token
            },
            config_file,
            sources,
        })
    }

    /// The settings as (name, value, source) with every URL's password redacted.
    pub fn redacted(&self) -> Vec<(&'static str, String, Source)> {
        let p = &self.policy;
        let values = [
            redact_url(&self.database_url),
            redact_url(&self.redis_url),
            self.slot_keys.slot_prefix().to_owned(),
            self.slot_keys.meta_prefix().to_owned(),
            self.slot_keys.inflight_prefix().to_owned(),
            self.slot_keys.sentinel_prefix().to_owned(),
            p.sentinel_report_after_secs.to_string(),
            p.activity_stale_after_secs.to_string(),
            match p.lease {
                LeasePolicy::Platform => "platform".to_owned(),
                LeasePolicy::Requeue => "requeue".to_owned(),
                LeasePolicy::Fail => "fail".to_owned(),
            },
            p.lease_max_redelivery.to_string(),
            p.queued_expire_after_secs.to_string(),
            p.default_timeout_secs.to_string(),
            p.ttl_buffer_secs.to_string(),
            p.missing_row_grace_secs.to_string(),
            p.session_grace_secs.to_string(),
            p.skipped_after_secs.to_string(),
            match p.skipped {
                SkippedPolicy::Finalize => "finalize".to_owned(),
                SkippedPolicy::Terminal => "terminal".to_owned(),
                SkippedPolicy::Platform => "platform".to_owned(),
            },
            match p.error_style {
                ErrorStyle::Janitor => "janitor".to_owned(),
                ErrorStyle::Platform => "platform".to_owned(),
            },
            self.scan_batch.to_string(),
            self.queue.name.clone(),
            self.queue.backlog_cap.to_string(),
            self.concurrency.to_string(),
            self.max_attempts.to_string(),
            self.queue.dead_retry_after.as_secs().to_string(),
            self.retry_max_delay.as_secs().to_string(),
            self.queue.heartbeat_interval.as_secs().to_string(),
            self.queue.missed_heartbeats.to_string(),
            self.sweep_interval.as_secs().to_string(),
            self.due_interval
                .map_or(0, |d| d.as_millis() as u64)
                .to_string(),
            self.census_interval.as_secs().to_string(),
            self.breaker.max_fraction.to_string(),
            self.breaker.min_reclaims.to_string(),
            self.breaker.cool_off_secs.to_string(),
            self.breaker.drain_per_minute.to_string(),
            self.probe
                .as_ref()
                .map_or_else(String::new, |p| p.url_template.clone()),
            self.probe
                .as_ref()
                .map_or(DEFAULT_AGENT_PROBE_TIMEOUT_MS, |p| {
                    p.timeout.as_millis() as u64
                })
                .to_string(),
            self.probe
                .as_ref()
                .map_or(DEFAULT_AGENT_PROBE_CONCURRENCY, |p| p.concurrency)
                .to_string(),
            self.probe
                .as_ref()
                .map_or(DEFAULT_AGENT_PROBE_CACHE_SECS, |p| p.cache_ttl.as_secs())
                .to_string(),
            match p.agent_unreachable {
                UnreachablePolicy::Skip => "skip".to_owned(),
                UnreachablePolicy::Hold => "hold".to_owned(),
            },
            if self.admin_token.is_some() {
                "(set)"
            } else {
                "(unset)"
            }
            .to_owned(),
        ];
        self.sources
            .iter()
            .zip(values)
            .map(|((name, source), value)| (*name, value, *source))
            .collect()
    }
}

/// Picks the first of flag (or env), file and default, and records which one it was.
fn layer<T>(
    sources: &mut Vec<(&'static str, Source)>,
    name: &'static str,
    flag: Option<T>,
    from_file: Option<T>,
    default: T,
) -> T {
    let (value, source) = match (flag, from_file) {
        (Some(v), _) => (v, Source::Flag),
        (None, Some(v)) => (v, Source::File),
        (None, None) => (default, Source::Default),
    };
    sources.push((name, source));
    value
}

fn read_file(explicit: Option<&Path>) -> anyhow::Result<(FileSettings, Option<PathBuf>)> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            if !default.exists() {
                return Ok((FileSettings::default(), None));
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading settings file {}", path.display()))?;
    let file = toml::from_str(&text)
        .with_context(|| format!("parsing settings file {}", path.display()))?;
    Ok((file, Some(path)))
}
