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
    /// Prefix of the platform's in-flight markers (`{prefix}{execution_id}`); a run whose
    /// marker exists is alive under every rule. Empty: markers are not read.
    #[arg(
        long,
        global = true,
        env = "JANITOR_INFLIGHT_PREFIX",
        value_name = "PREFIX"
    )]
    pub inflight_prefix: Option<String>,
    /// Member prefix of the platform's backlog sentinels in a slot ZSET (never released).
    /// Empty: no member is a sentinel.
    #[arg(
        long,
        global = true,
        env = "JANITOR_SENTINEL_PREFIX",
        value_name = "PREFIX"
    )]
    pub sentinel_prefix: Option<String>,
    /// Age after which a backlog sentinel is reported (never touched), in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_SENTINEL_REPORT_AFTER_SECS",
        value_name = "SECS"
    )]
    pub sentinel_report_after_secs: Option<i64>,
    /// Age after which a queued row without a slot is failed as an expired backlog entry
    /// (the platform's own rule: 24 h), in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_QUEUED_EXPIRE_AFTER_SECS",
        value_name = "SECS"
    )]
    pub queued_expire_after_secs: Option<i64>,
    /// Age after which a started activity with no run that could still finish it is
    /// failed (the platform's own rule: 120 minutes), in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_ACTIVITY_STALE_AFTER_SECS",
        value_name = "SECS"
    )]
    pub activity_stale_after_secs: Option<i64>,
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
    /// The agent liveness probe: a URL template with `{agent}`, asked before a run is
    /// failed or its slot removed (`platform`: the platform's own
    /// http://agent-{agent}:8000/api/executions/running). Empty: off (the default).
    #[arg(
        long,
        global = true,
        env = "JANITOR_AGENT_PROBE_URL",
        value_name = "URL"
    )]
    pub agent_probe_url: Option<String>,
    /// Per-request timeout of the agent probe, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_AGENT_PROBE_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub agent_probe_timeout_ms: Option<u64>,
    /// Agents asked at once by one process.
    #[arg(
        long,
        global = true,
        env = "JANITOR_AGENT_PROBE_CONCURRENCY",
        value_name = "N"
    )]
    pub agent_probe_concurrency: Option<usize>,
    /// How long an agent's answer is reused, in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_AGENT_PROBE_CACHE_SECS",
        value_name = "SECS"
    )]
    pub agent_probe_cache_secs: Option<u64>,
    /// What an unreachable agent means: judge on the stores alone (skip) or act only
    /// when the agent answers (hold).
    #[arg(long, global = true, env = "JANITOR_AGENT_UNREACHABLE", value_enum)]
    pub agent_unreachable: Option<UnreachableArg>,
    /// What to do with a pull-mode run whose lease expired: leave it to the platform's
    /// lease reaper (platform), re-queue it as that reaper does (requeue), or fail it.
    #[arg(long, global = true, env = "JANITOR_LEASE_POLICY", value_enum)]
    pub lease_policy: Option<LeasePolicyArg>,
    /// Re-deliveries before `--lease-policy requeue` fails a run as poison (the platform's
    /// MAX_REDELIVERY).
    #[arg(
        long,
        global = true,
        env = "JANITOR_LEASE_MAX_REDELIVERY",
        value_name = "N"
    )]
    pub lease_max_redelivery: Option<i64>,
    /// Whose words the error texts janitor writes are in.
    #[arg(long, global = true, env = "JANITOR_ERROR_STYLE", value_enum)]
    pub error_style: Option<ErrorStyleArg>,
    /// Slots / rows read per batch while scanning.
    #[arg(long, global = true, env = "JANITOR_SCAN_BATCH", value_name = "N")]
    pub scan_batch: Option<usize>,
    /// Queue name (the prefix of every queue key in Redis).
    #[arg(long, global = true, env = "JANITOR_QUEUE", value_name = "NAME")]
    pub queue: Option<String>,
    /// Most jobs waiting in the queue before pushes are deferred to the next sweep.
    #[arg(long, global = true, env = "JANITOR_BACKLOG_CAP", value_name = "N")]
    pub backlog_cap: Option<u64>,
    /// Jobs handled at once by one worker process.
    #[arg(long, global = true, env = "JANITOR_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Seconds a dead job's work waits before a sweep that still finds it needed enqueues it
    /// again under a new id.
    #[arg(
        long,
        global = true,
        env = "JANITOR_DEAD_RETRY_AFTER_SECS",
        value_name = "SECS"
    )]
    pub dead_retry_after_secs: Option<u64>,
    /// Longest wait between two tries of a job within one delivery when a store is
    /// unavailable (exponential from 200 ms, with jitter), in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_RETRY_MAX_DELAY_SECS",
        value_name = "SECS"
    )]
    pub retry_max_delay_secs: Option<u64>,
    /// Deliveries of one job that failed on a permanent error before it is dead.
    #[arg(long, global = true, env = "JANITOR_MAX_ATTEMPTS", value_name = "N")]
    pub max_attempts: Option<usize>,
    /// Worker heartbeat interval in seconds (every replica must use the same).
    #[arg(
        long,
        global = true,
        env = "JANITOR_HEARTBEAT_SECS",
        value_name = "SECS"
    )]
    pub heartbeat_secs: Option<u64>,
    /// Heartbeats a worker may miss before its jobs are re-enqueued elsewhere.
    #[arg(
        long,
        global = true,
        env = "JANITOR_MISSED_HEARTBEATS",
        value_name = "N"
    )]
    pub missed_heartbeats: Option<usize>,
    /// Seconds between full sweeps in `janitor run` (they discover new slots and rows and
    /// rebuild the deadline index; keep it below the shortest timeout + buffer).
    #[arg(
        long,
        global = true,
        env = "JANITOR_SWEEP_INTERVAL_SECS",
        value_name = "SECS"
    )]
    pub sweep_interval_secs: Option<u64>,
    /// Milliseconds between due passes in `janitor run` (each re-judges only the pairs whose
    /// deadline or grace has come, from the index the full sweeps build); `0` turns them off.
    #[arg(
        long,
        global = true,
        env = "JANITOR_DUE_INTERVAL_MS",
        value_name = "MS"
    )]
    pub due_interval_ms: Option<u64>,
    /// Seconds a walk of the whole Redis keyspace by the census of slot ZSET keys takes,
    /// spread over the full sweeps of that time (the census finds the ZSETs no open run
    /// points at: leaked and rowless slots). A sweep with no walk completed within twice
    /// this walks the whole keyspace at once.
    #[arg(
        long,
        global = true,
        env = "JANITOR_CENSUS_INTERVAL_SECS",
        value_name = "SECS"
    )]
    pub census_interval_secs: Option<u64>,
    /// The breaker trips when the reclaims, releases and fails that became due since the
    /// previous pass exceed this fraction of the pairs judged…
    #[arg(
        long,
        global = true,
        env = "JANITOR_BREAKER_MAX_FRACTION",
        value_name = "F"
    )]
    pub breaker_max_fraction: Option<f64>,
    /// …and more than this many.
    #[arg(
        long,
        global = true,
        env = "JANITOR_BREAKER_MIN_RECLAIMS",
        value_name = "N"
    )]
    pub breaker_min_reclaims: Option<u64>,
    /// How long a tripped breaker holds guarded effects back, in seconds.
    #[arg(
        long,
        global = true,
        env = "JANITOR_BREAKER_COOL_OFF_SECS",
        value_name = "SECS"
    )]
    pub breaker_cool_off_secs: Option<u64>,
    /// After the cool-off, at most this many guarded jobs per minute until the backlog fits.
    #[arg(
        long,
        global = true,
        env = "JANITOR_BREAKER_DRAIN_PER_MINUTE",
        value_name = "N"
    )]
    pub breaker_drain_per_minute: Option<u64>,
    /// Bearer token for mutating HTTP endpoints; without one they are disabled.
    #[arg(
        long = "admin-token-from-env-only",
        hide = true,
        env = "JANITOR_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
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
    /// The platform's own rule: skipped is terminal once completed_at is set; old skipped
    /// rows without it are finalized as failed ("Finalized by cleanup: skipped execution").
    Platform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LeasePolicyArg {
    /// Leave it to the platform's lease reaper; report it.
    Platform,
    /// Re-queue it as the platform's reaper does, failing it as poison at the cap.
    Requeue,
    /// Fail it.
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnreachableArg {
    /// Judge on the stores alone, as without the probe.
    Skip,
    /// Act on a run only when its agent answers.
    Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ErrorStyleArg {
    /// janitor's own texts, naming the evidence.
    Janitor,
    /// The platform's own texts, which its UI and failure classifier read.
    Platform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create janitor's table and indexes on the platform's database. Never alters or drops
    /// an existing table.
    Migrate(MigrateArgs),
    /// Every open run and every slot without a live run, with the verdict the rules give.
    Stuck(StuckArgs),
    /// Print the effective settings (passwords redacted) and where each came from.
    Config(ConfigArgs),
    /// One pass: find every inconsistency and enqueue one cleanup job per change.
    Sweep(SweepArgs),
    /// Process cleanup jobs (any number of replicas).
    Work(WorkArgs),
    /// Single node: sweep on an interval and process jobs, until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Enqueue the finalize job of a run the scheduler just skipped.
    Skip(SkipArgs),
    /// The admin HTTP server alone: `GET /healthz`, `GET /readyz`, `POST /api/v1/skip`
    /// (bearer token required).
    Serve(ServeArgs),
    /// Exit 0 when the admin server at URL answers `GET /healthz` with 200 (for container
    /// health checks: the image needs no curl).
    Healthcheck(HealthcheckArgs),
    /// Inspect the job queue and re-drive dead jobs.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// What janitor changed and why (the audit trail), newest first.
    Audit(AuditArgs),
    /// Print the admin API's OpenAPI 3.1 document (as `GET /api/v1/openapi.json` serves it).
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Jobs per state (scheduled due / future, retrying, active, in flight per worker, dead,
    /// done) and how long the oldest due job has waited.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Jobs in one state, a page at a time: id, kind, run, agent, attempts, last error, next
    /// run.
    List(ListArgs),
    /// Everything about one job: state, payload, attempts, last error, and the audit rows
    /// of its run.
    Show {
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Re-drive dead jobs: out of the dead set, attempts reset, due now. Idempotent.
    Retry(RetryArgs),
    /// Retention: delete done (or dead) jobs that finished at least --older-than ago.
    /// Never touches a job scheduled again.
    Purge(PurgeArgs),
}

/// A finished-job set to purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PurgeState {
    Done,
    Dead,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[arg(long, value_enum)]
    pub state: PurgeState,
    /// Keep what finished within this long: 90s, 30m, 12h, 7d (or plain seconds).
    #[arg(long, value_parser = parse_duration)]
    pub older_than: std::time::Duration,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only changes to this run.
    #[arg(long)]
    pub execution: Option<String>,
    /// Only changes to this agent's runs and slots.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only changes since this instant (ISO-8601) or this long ago (90s, 30m, 12h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Most rows to print, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn parse_job_state(name: &str) -> Result<janitor_queue::JobState, String> {
    janitor_queue::JobState::parse(name).ok_or_else(|| {
        let known: Vec<&str> = janitor_queue::JobState::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        format!("expected one of {}", known.join(", "))
    })
}

/// `90s`, `30m`, `12h`, `7d`, or plain seconds.
pub fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    let value = value.trim();
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{value:?}: expected a number with s, m, h or d (e.g. 7d)"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{value:?}: expected a number with s, m, h or d (e.g. 7d)"))
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// scheduled, retrying, active, in_flight, dead or done.
    #[arg(long, value_parser = parse_job_state)]
    pub state: janitor_queue::JobState,
    /// Only jobs of this kind (reclaim_slot, release_slot, fail_run, finalize_skipped).
    #[arg(long)]
    pub kind: Option<String>,
    /// Ids read per page (at most 500).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub limit: u16,
    /// Where to start: the `next` cursor a previous page printed.
    #[arg(long, default_value_t = 0)]
    pub cursor: u64,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The dead jobs' ids.
    #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
    pub ids: Vec<String>,
    /// Every dead job (of --kind, if given).
    #[arg(long)]
    pub all_dead: bool,
    /// With --all-dead: only jobs of this kind (reclaim_slot, release_slot, fail_run,
    /// finalize_skipped).
    #[arg(long, requires = "all_dead")]
    pub kind: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The health endpoint to ask.
    #[arg(long, default_value = "http://127.0.0.1:8089/healthz")]
    pub url: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, env = "JANITOR_LISTEN", default_value = "127.0.0.1:8089")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Find and print what would be enqueued; enqueue nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Enqueue reclaims even when the blast-radius breaker trips.
    #[arg(long)]
    pub force: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for another producer's sweep to finish, in seconds.
    #[arg(long, default_value_t = 60)]
    pub lease_wait_secs: u64,
    /// One due pass instead of a full sweep: re-judge only the pairs of the deadline index
    /// whose instant has come.
    #[arg(long)]
    pub due: bool,
    /// Walk the whole keyspace for the census of slot ZSETs now, instead of the share of a
    /// walk a sweep of `janitor run` takes (see `--census-interval-secs`).
    #[arg(long)]
    pub whole_census: bool,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Exit 0 once no job is due and none is in flight.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Machine-readable summary on exit.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// One sweep, then process every due job, print the cycle report and exit.
    #[arg(long)]
    pub once: bool,
    /// What this process does: `all` (sweeps and workers), `producer` (sweeps only) or
    /// `worker` (workers only). Scale out with one producer (plus standbys: the sweep lease
    /// lets one sweep at a time) and any number of workers.
    #[arg(long, env = "JANITOR_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Address of the admin HTTP server (health, readiness, API); `off` to not start it.
    /// Not started with --once.
    #[arg(long, env = "JANITOR_LISTEN", default_value = "127.0.0.1:8089", value_parser = parse_listen)]
    pub listen: Listen,
    /// Enqueue reclaims even when the blast-radius breaker trips.
    #[arg(long)]
    pub force: bool,
    /// Machine-readable cycle report (with --once).
    #[arg(long)]
    pub json: bool,
}

/// What a `janitor run` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    All,
    Producer,
    Worker,
}

impl Role {
    /// The name `--role` takes, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Producer => "producer",
            Self::Worker => "worker",
        }
    }

    pub fn sweeps(self) -> bool {
        matches!(self, Self::All | Self::Producer)
    }

    pub fn works(self) -> bool {
        matches!(self, Self::All | Self::Worker)
    }
}

/// Where the admin server listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    On(std::net::SocketAddr),
}

fn parse_listen(value: &str) -> Result<Listen, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(Listen::Off);
    }
    value
        .parse()
        .map(Listen::On)
        .map_err(|e| format!("{e}: expected HOST:PORT (e.g. 127.0.0.1:8089) or `off`"))
}

#[derive(Debug, Args)]
pub struct SkipArgs {
    /// The skipped run.
    #[arg(long)]
    pub execution_id: String,
    /// Its agent (needed when the row is not committed yet).
    #[arg(long)]
    pub agent: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
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

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Also create the platform's own tables where missing (and a missing SQLite file): for
    /// a demo or a test. Without it a database with no `schedule_executions` is refused.
    #[arg(long)]
    pub create_platform_tables: bool,
}
