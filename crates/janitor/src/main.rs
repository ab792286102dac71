//! The `janitor` binary: parses arguments and settings, then hands over to a command.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

mod admin;
mod cli;
mod commands;
mod context;
mod settings;

use cli::{Cli, Command, LogFormat};
use settings::Settings;

/// jemalloc instead of glibc's malloc: a sweep allocates many small strings per item
/// from several threads, and glibc spent a fifth of the sweep's CPU in malloc/free and
/// arena locks.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Needs no settings: it only asks a running janitor.
    if let Command::Healthcheck(args) = &cli.command {
        return commands::healthcheck::run(args).await;
    }
    if let Command::Openapi = &cli.command {
        print!("{}", admin::openapi::document_text());
        return Ok(());
    }
    let settings = Settings::load(&cli.global)?;
    match &cli.command {
        Command::Migrate(args) => commands::migrate::run(&settings, args).await,
        Command::Stuck(args) => commands::stuck::run(&settings, args).await,
        Command::Config(args) => commands::config::run(&settings, args).await,
        Command::Sweep(args) => commands::sweep::run(&settings, args).await,
        Command::Work(args) => commands::work::run(&settings, args).await,
        Command::Run(args) => commands::run::run(&settings, args).await,
        Command::Skip(args) => commands::skip::run(&settings, args).await,
        Command::Serve(args) => commands::serve::run(&settings, args).await,
        Command::Healthcheck(_) | Command::Openapi => unreachable!("handled above"),
        Command::Queue(command) => commands::queue::run(&settings, command).await,
        Command::Audit(args) => commands::audit::run(&settings, args).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("JANITOR_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Colours only for a person at a terminal: escape codes in a log file or pipe break
    // every grep over it.
    // A log line that cannot be written is dropped: by default the subscriber reports it with
    // eprintln!, which panics when stderr is the broken pipe (a dead log collector would
    // take the service down with it).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// The whole context chain on one line ("opening database …: database: …"), without the
/// repeats that appear when an error's message already includes its source's.
fn one_line(err: &anyhow::Error) -> String {
    let mut out: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.last().is_some_and(|prev| prev.contains(&text)) {
            continue;
        }
        out.push(text);
    }
    out.join(": ")
}
