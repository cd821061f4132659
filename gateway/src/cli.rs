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
    /// The response cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
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

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Hit rate against false-hit rate on labelled prompt pairs (the
    /// cache-eval TSV format) for every semantic-tier setting, and the
    /// setting to use for a target false-hit rate.
    Calibrate {
        /// Pairs file: `id category label prompt_a prompt_b`, tab-separated.
        #[arg(long)]
        pairs: PathBuf,
        /// The embedding model folder (sentence-transformers layout).
        #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
        model: PathBuf,
        /// Largest acceptable false-hit rate (0.01 = 1%).
        #[arg(long, default_value_t = 0.01)]
        target: f64,
    },
    /// A running gateway's cache counters, memory tier and vector store
    /// (`GET /admin/cache/stats`).
    Stats {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Removes cached answers from a running gateway, both tiers
    /// (`POST /admin/cache/purge`); with neither filter, everything.
    Purge {
        /// Only this tenant's entries.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this model group's entries.
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// How to reach a running gateway's admin API.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The master key (`auth.master_key`).
    #[arg(long, env = "SWITCHYARD_MASTER_KEY", hide_env_values = true)]
    master_key: String,
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
        Command::Cache {
            command:
                CacheCommand::Calibrate {
                    pairs,
                    model,
                    target,
                },
        } => match calibrate(&pairs, &model, target) {
            Ok(report) => {
                let _ = write!(std::io::stdout(), "{report}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Cache {
            command: CacheCommand::Stats { admin },
        } => print_admin(admin_call(&admin, reqwest::Method::GET, "stats", None).await),
        Command::Cache {
            command:
                CacheCommand::Purge {
                    tenant,
                    model,
                    admin,
                },
        } => {
            let body = serde_json::json!({"tenant": tenant, "model": model});
            print_admin(admin_call(&admin, reqwest::Method::POST, "purge", Some(body)).await)
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

/// Calls `/admin/cache/{action}` and returns the answer's JSON, or the
/// gateway's error message.
async fn admin_call(
    admin: &AdminArgs,
    method: reqwest::Method,
    action: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let url = format!("{}/admin/cache/{action}", admin.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(&admin.master_key)
        .timeout(std::time::Duration::from_secs(60));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let json: serde_json::Value = response
        .json()
        .await
        .map_err(|e| format!("{url}: {status}: {e}"))?;
    if status.is_success() {
        Ok(json)
    } else {
        let message = json
            .pointer("/error/message")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("(no message)");
        Err(format!("{url}: {status}: {message}"))
    }
}

fn print_admin(answer: Result<serde_json::Value, String>) -> ExitCode {
    match answer.and_then(|j| serde_json::to_string_pretty(&j).map_err(|e| e.to_string())) {
        Ok(text) => {
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Embeds both sides of every pair with the real model and reports.
fn calibrate(
    pairs: &std::path::Path,
    model: &std::path::Path,
    target: f64,
) -> Result<String, String> {
    use crate::cache::calibrate::{Setting, read_pairs, report};
    use switchyard_embedder::{CandleEmbedder, DeviceSpec, Embedder, ModelDir, Precision};
    if !(0.0..=1.0).contains(&target) {
        return Err(format!("--target must be between 0 and 1, not {target}"));
    }
    let pairs = read_pairs(pairs)?;
    let dir = ModelDir::open(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let embedder = CandleEmbedder::load(&dir, DeviceSpec::Cpu, Precision::F32)
        .map_err(|e| format!("{}: {e}", model.display()))?;
    let embed = |texts: Vec<String>| -> Result<Vec<Vec<f32>>, String> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(32) {
            out.extend(embedder.embed(chunk).map_err(|e| e.to_string())?.vectors);
        }
        Ok(out)
    };
    let a = embed(pairs.iter().map(|p| p.cached.clone()).collect())?;
    let b = embed(pairs.iter().map(|p| p.incoming.clone()).collect())?;
    let similarities: Vec<f32> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum())
        .collect();
    let default = Setting {
        threshold: crate::cache::DEFAULT_SIMILARITY,
        verifier: Some(crate::cache::verify::Verifier::default()),
    };
    Ok(report(&pairs, &similarities, default, target))
}
