//! The `hookrelay` binary: parses the command line, loads the config, sets
//! up logging and signals, and calls the library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hookrelay::config::{Config, ConfigError};
use hookrelay::{Gateway, GatewayError};

#[derive(Parser)]
#[command(
    name = "hookrelay",
    version,
    about = "Webhook relay and fan-out gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run(ConfigArg),
    /// Validate a config file: exit 0, or print every problem and exit 2.
    CheckConfig(ConfigArg),
    /// Apply the PostgreSQL store's schema migrations (`run` applies them
    /// too, under the same lock) and exit.
    Migrate(ConfigArg),
    /// Shrink the embedded store's file after a burst (offline: stop the
    /// gateway first).
    Compact(ConfigArg),
    /// Inspect and replay dead letters through the admin API.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Run a local subscriber that verifies and prints each delivery
    /// (for development and debugging).
    Sink(SinkArgs),
}

#[derive(Args)]
struct SinkArgs {
    /// Address to listen on (plain HTTP); port 0 picks a free port, printed
    /// at start.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Signing secret (`whsec_…`) to verify `webhook-signature` with;
    /// repeat during a rotation. Without it, signatures are not checked.
    #[arg(long = "secret", value_name = "WHSEC")]
    secrets: Vec<String>,
    /// Answer 500 to the first N requests of each delivery (same path and
    /// `webhook-id`), then 200: the gateway's retries get through.
    #[arg(long, value_name = "N", conflicts_with = "status")]
    fail_first: Option<u32>,
    /// Answer this status to every request.
    #[arg(long, value_name = "CODE", value_parser = clap::value_parser!(u16).range(200..=599))]
    status: Option<u16>,
    /// Wait this long before answering (`250ms`, `2s`, `1m`).
    #[arg(long, value_name = "DURATION", value_parser = hookrelay::config::duration::parse)]
    delay: Option<Duration>,
    /// Print each body after its line (JSON indented, other text as is).
    #[arg(long)]
    body: bool,
}

#[derive(Args)]
struct ConfigArg {
    /// The YAML config file.
    #[arg(long, env = "HOOKRELAY_CONFIG")]
    config: PathBuf,
}

#[derive(Args)]
struct AdminArgs {
    /// Base URL of the admin listener.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    admin: String,
    /// Bearer token of the admin API.
    #[arg(long, env = "HOOKRELAY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// List dead letters, newest first.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only this subscriber.
        #[arg(long)]
        subscriber: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Requeue dead letters by id, or all of one subscriber.
    Replay {
        #[command(flatten)]
        admin: AdminArgs,
        /// Delivery ids (repeat the flag).
        #[arg(long = "id", conflicts_with_all = ["route", "subscriber"], required_unless_present_all = ["route", "subscriber"])]
        ids: Vec<String>,
        /// Route of the subscriber whose dead letters to replay.
        #[arg(long, requires = "subscriber")]
        route: Option<String>,
        /// Subscriber whose dead letters to replay.
        #[arg(long, requires = "route")]
        subscriber: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hookrelay: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::CheckConfig(arg) => match Config::load(&arg.config) {
            Ok(_) => {
                println!("{}: ok", arg.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&arg.config, &e),
        },
        Command::Run(arg) => {
            let config = match Config::load(&arg.config) {
                Ok(c) => c,
                Err(e) => return config_failure(&arg.config, &e),
            };
            init_logging(&config);
            match runtime.block_on(run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hookrelay: {e:#}");
                    let invalid = e
                        .downcast_ref::<GatewayError>()
                        .is_some_and(|g| matches!(g, GatewayError::Config(_)));
                    ExitCode::from(if invalid { 2 } else { 1 })
                }
            }
        }
        Command::Migrate(arg) => {
            let config = match Config::load(&arg.config) {
                Ok(c) => c,
                Err(e) => return config_failure(&arg.config, &e),
            };
            match runtime.block_on(hookrelay::gateway::migrate(&config)) {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hookrelay: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Compact(arg) => {
            let config = match Config::load(&arg.config) {
                Ok(c) => c,
                Err(e) => return config_failure(&arg.config, &e),
            };
            if config.store.postgres.is_some() {
                println!(
                    "the PostgreSQL store reuses freed space through autovacuum; to give it \
                     back to the disk, run VACUUM FULL (or pg_repack) on the schema's tables \
                     in a maintenance window"
                );
                return ExitCode::SUCCESS;
            }
            let mib = |n: u64| n as f64 / (1024.0 * 1024.0);
            match hookrelay::store::embedded::compact(&config.store.path, config.store.cache_bytes)
            {
                Ok((before, after)) => {
                    println!(
                        "{}: {:.1} MiB -> {:.1} MiB",
                        config
                            .store
                            .path
                            .join(hookrelay::store::embedded::FILE_NAME)
                            .display(),
                        mib(before),
                        mib(after)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hookrelay: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::DeadLetters { action } => match runtime.block_on(dead_letters(action)) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hookrelay: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Sink(args) => {
            use hookrelay::sink::{Options, Reply};
            // Checked here, not by clap: clap's message would quote the
            // value, and a secret must never reach an error message.
            let keys = match Options::decode_secrets(&args.secrets) {
                Ok(keys) => keys,
                Err(e) => {
                    eprintln!("hookrelay: --secret: {e}");
                    return ExitCode::from(2);
                }
            };
            let reply = match (args.fail_first, args.status) {
                (Some(n), _) => Reply::FailFirst(n),
                (None, Some(code)) => Reply::Status(
                    http::StatusCode::from_u16(code).expect("clap keeps it in 200..=599"),
                ),
                (None, None) => Reply::Ok,
            };
            let options = Options {
                keys,
                reply,
                delay: args.delay.unwrap_or_default(),
                print_body: args.body,
            };
            init_stderr_logging();
            match runtime.block_on(sink(args.listen, options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hookrelay: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Warnings (such as failed accepts) to stderr, for commands without a
/// config; `RUST_LOG` overrides the level.
fn init_stderr_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn sink(listen: SocketAddr, options: hookrelay::sink::Options) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers before the "listening" line: a Ctrl-C right after it stops
    // the sink cleanly instead of killing it.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let sink = hookrelay::sink::Sink::bind(listen, options, Box::new(std::io::stdout())).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stop.cancel();
    });
    sink.serve(shutdown).await;
    Ok(())
}

fn config_failure(path: &std::path::Path, e: &ConfigError) -> ExitCode {
    // Each problem names its key and line, never a value (it may be a secret).
    let problems = e.problems();
    eprintln!(
        "hookrelay: {} is not a valid config ({} problem{}):",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for problem in problems {
        eprintln!("  - {problem}");
    }
    ExitCode::from(2)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a signal that arrives while the gateway starts (or
    // right after it reports "listening") is queued, not fatal.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let gateway = Gateway::start(config).await?;
    let shutdown = gateway.shutdown_token();
    let shared = gateway.shared.clone();
    let signals = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    let _ = shared.reload_from_file().await;
                }
            }
        }
        tracing::info!("signal received; shutting down");
        shutdown.cancel();
    });
    gateway.wait().await;
    signals.abort();
    Ok(())
}

async fn dead_letters(action: DeadLetterAction) -> anyhow::Result<String> {
    use hookrelay::cli::{call, dead_letter_table};
    match action {
        DeadLetterAction::List {
            admin,
            route,
            subscriber,
            limit,
        } => {
            let mut query = format!("/api/v1/dead-letters?limit={limit}");
            if let Some(r) = route {
                query.push_str(&format!("&route={r}"));
            }
            if let Some(s) = subscriber {
                query.push_str(&format!("&subscriber={s}"));
            }
            let answer = call(
                &admin.admin,
                admin.token.as_deref(),
                http::Method::GET,
                &query,
                None,
            )
            .await
            .context("listing dead letters")?;
            Ok(if admin.json {
                format!("{answer}\n")
            } else {
                dead_letter_table(&answer)
            })
        }
        DeadLetterAction::Replay {
            admin,
            ids,
            route,
            subscriber,
        } => {
            let body = if ids.is_empty() {
                serde_json::json!({ "route": route, "subscriber": subscriber })
            } else {
                serde_json::json!({ "ids": ids })
            };
            let answer = call(
                &admin.admin,
                admin.token.as_deref(),
                http::Method::POST,
                "/api/v1/dead-letters/replay",
                Some(body),
            )
            .await
            .context("replaying dead letters")?;
            Ok(if admin.json {
                format!("{answer}\n")
            } else {
                format!(
                    "requeued {} dead letter(s)\n",
                    answer.get("requeued").and_then(|n| n.as_u64()).unwrap_or(0)
                )
            })
        }
    }
}
