//! Command-line surface. Every global option also reads an environment variable; both beat
//! `janitor.toml`, which beats the built-in defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// janitor keeps an agent platform's concurrency slots (Redis) and execution records (SQL)
/// consistent.
#[derive(Debug, Parser)]
#[command(name = "janitor", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Settings file (TOML). Default: ./janitor.toml when it exists.
    #[arg(long, global = true, env = "JANITOR_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://PATH (embedded default) or postgres://…
    #[arg(long, global = true, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis URL (slot store and job queue).
    #[arg(long, global = true, env = "REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of the per-agent slot ZSETs.
    #[arg(
        long,
        global = true,
        env = "JANITOR_SLOT_PREFIX",
        value_name = "PREFIX"
    )]
    pub slot_prefix: Option<String>,
    /// Prefix of the per-slot metadata HASHes.
    #[arg(
        long,
        global = true,
        env = "JANITOR_SLOT_META_PREFIX",
        value_name = "PREFIX"
    )]
    pub slot_meta_prefix: Option<String>,
    /// Timeout of a run whose schedule and agent declare none, in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_DEFAULT_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub default_timeout_secs: Option<i64>,
    /// Added to every timeout before a slot or run counts as dead, in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_TTL_BUFFER_SECS",
        value_name = "SECS"
    )]
    pub ttl_buffer_secs: Option<i64>,
    /// How long a slot may exist without its row before it is leaked, in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_MISSING_ROW_GRACE_SECS",
        value_name = "SECS"
    )]
    pub missing_row_grace_secs: Option<i64>,
    /// How long a running row may go without a session, in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_SESSION_GRACE_SECS",
        value_name = "SECS"
    )]
    pub session_grace_secs: Option<i64>,
    /// Age after which a skipped row is finalized as cancelled, in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_SKIPPED_AFTER_SECS",
        value_name = "SECS"
    )]
    pub skipped_after_secs: Option<i64>,
    /// What to do with skipped rows.
    #[arg(long, global = true, env = "JANITOR_SKIPPED_POLICY", value_enum)]
    pub skipped_policy: Option<SkippedPolicyArg>,
    /// Keys / rows read per batch while scanning.
    #[arg(long, global = true, env = "JANITOR_SCAN_BATCH", value_name = "N")]
    pub scan_batch: Option<usize>,
    /// Log format on stderr; `auto` is text on a terminal, JSON otherwise.
    #[arg(long, global = true, env = "JANITOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SkippedPolicyArg {
    /// Finalize old skipped rows as cancelled.
    Finalize,
    /// Treat skipped as terminal; never change it.
    Terminal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create janitor's table and indexes (and the platform's tables when missing). Never
    /// alters or drops an existing table.
    Migrate,
    /// Every open run and every slot without a live run, with the verdict the rules give.
    Stuck(StuckArgs),
    /// Print the effective settings (passwords redacted) and where each came from.
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct StuckArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Only pairs whose verdict changes something.
    #[arg(long)]
    pub actionable: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}
