//! Command line (clap only; the work is done elsewhere).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{App, process_env};
use crate::config::{Config, LoggingConfig};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard: an OpenAI-compatible AI gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Listen address; overrides `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a configuration file (secrets included) and exit.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
    /// Run a FAKE upstream (OpenAI, Azure OpenAI and Anthropic wire formats)
    /// for demos and tests. It is not a model: it answers deterministically.
    FakeUpstream {
        #[arg(long, default_value = "127.0.0.1:9901")]
        listen: SocketAddr,
        /// Milliseconds between streamed tokens.
        #[arg(long, default_value_t = 0)]
        token_delay_ms: u64,
        /// Require this key (read from the named environment variable).
        #[arg(long)]
        api_key_env: Option<String>,
        /// Do not keep a log of requests (for load benchmarks).
        #[arg(long)]
        no_record: bool,
        /// Runtime worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::FakeUpstream {
        threads: Some(n), ..
    } = &cli.command
    {
        builder.worker_threads((*n).max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(cli.command))
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "switchyard: {message}");
    ExitCode::FAILURE
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve { config, listen } => {
            let mut config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(&format!("{}: {e}", config.display())),
            };
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            let _log_guard = crate::logging::init(&config.logging);
            let app = match App::build(&config, &process_env) {
                Ok(app) => app,
                Err(e) => return fail(&e.to_string()),
            };
            match crate::server::serve(&config, app).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::CheckConfig { file } => {
            match Config::load(&file).and_then(|c| App::build(&c, &process_env).map(|a| (c, a))) {
                Ok((config, _)) => {
                    let _ = writeln!(
                        std::io::stdout(),
                        "{}: OK ({} providers, {} model groups)",
                        file.display(),
                        config.providers.len(),
                        config.model_groups.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("{}: {e}", file.display())),
            }
        }
        Command::FakeUpstream {
            listen,
            token_delay_ms,
            api_key_env,
            no_record,
            threads: _,
        } => {
            let _log_guard = crate::logging::init(&LoggingConfig::default());
            let api_key = match api_key_env.map(|n| std::env::var(&n).map_err(|_| n)) {
                Some(Err(name)) => return fail(&format!("environment variable {name} is not set")),
                Some(Ok(k)) => Some(k),
                None => None,
            };
            let config = switchyard_fakes::FakeConfig {
                token_delay: std::time::Duration::from_millis(token_delay_ms),
                api_key,
                record_requests: !no_record,
            };
            match switchyard_fakes::FakeUpstream::start(listen, config).await {
                Ok(fake) => {
                    tracing::info!(addr = %fake.addr(), "listening (FAKE upstream: deterministic answers, not a model)");
                    tokio::select! {
                        _ = fake.wait() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("cannot bind {listen}: {e}")),
            }
        }
    }
}
