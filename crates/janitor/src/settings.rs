//! The one settings struct, loaded once in `main`: flags and environment beat the settings
//! file, which beats the built-in defaults.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use janitor_core::{Policy, SkippedPolicy};
use janitor_store::{redact_url, SlotKeys, DEFAULT_SLOT_META_PREFIX, DEFAULT_SLOT_PREFIX};
use serde::{Deserialize, Serialize};

use crate::cli::{GlobalArgs, SkippedPolicyArg};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://janitor.db";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_SCAN_BATCH: usize = 500;
const DEFAULT_CONFIG_FILE: &str = "janitor.toml";

/// `janitor.toml`: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    database_url: Option<String>,
    redis_url: Option<String>,
    slot_prefix: Option<String>,
    slot_meta_prefix: Option<String>,
    default_timeout_secs: Option<i64>,
    ttl_buffer_secs: Option<i64>,
    missing_row_grace_secs: Option<i64>,
    session_grace_secs: Option<i64>,
    skipped_after_secs: Option<i64>,
    skipped_policy: Option<SkippedPolicy>,
    scan_batch: Option<usize>,
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
        });
        let skipped = layer(
            s,
            "skipped_policy",
            skipped_flag,
            file.skipped_policy,
            defaults.skipped,
        );
        let scan_batch = layer(
            s,
            "scan_batch",
            args.scan_batch,
            file.scan_batch,
            DEFAULT_SCAN_BATCH,
        );
        let policy = Policy {
            default_timeout_secs,
            ttl_buffer_secs,
            missing_row_grace_secs,
            session_grace_secs,
            skipped_after_secs,
            skipped,
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
        Ok(Self {
            database_url,
            redis_url,
            slot_keys: SlotKeys::new(slot_prefix, slot_meta_prefix),
            policy,
            scan_batch,
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
            p.default_timeout_secs.to_string(),
            p.ttl_buffer_secs.to_string(),
            p.missing_row_grace_secs.to_string(),
            p.session_grace_secs.to_string(),
            p.skipped_after_secs.to_string(),
            match p.skipped {
                SkippedPolicy::Finalize => "finalize".to_owned(),
                SkippedPolicy::Terminal => "terminal".to_owned(),
            },
            self.scan_batch.to_string(),
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
