//! Command line (clap only; the work is done elsewhere).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::agent::{AgentConfig, AgentSource};
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
    /// Virtual keys of a running gateway (`/admin/keys`, docs/access.md).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Usage from a running gateway's ledger, aggregated (`GET /admin/usage`).
    Usage {
        /// Comma-separated: tenant, key, model_group, provider, placement,
        /// cache, day.
        #[arg(long, default_value = "tenant")]
        group_by: String,
        #[arg(long)]
        tenant: Option<String>,
        /// Unix seconds, inclusive.
        #[arg(long)]
        start: Option<u64>,
        /// Unix seconds, exclusive.
        #[arg(long)]
        end: Option<u64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A running gateway's audit log of admin actions, newest first
    /// (`GET /admin/audit`).
    Audit {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replay a request trace against a SIMULATED fleet in virtual time and
    /// compare placement policies (see docs/scheduling.md).
    Replay {
        /// Azure LLM inference trace (.csv) or Mooncake trace (.jsonl).
        #[arg(long)]
        trace: PathBuf,
        /// Fleet and policy (TOML): simulated GPUs, external deployments.
        #[arg(long)]
        fleet: PathBuf,
        /// `switchyard`, `round-robin`, `least-loaded`, `always-external`,
        /// `queue:K`, or `all` (each of them, with queue:K for K in 1, 4,
        /// 16, 64), side by side.
        #[arg(long, default_value = "all")]
        policy: String,
        /// Arrivals this many times faster than the trace's.
        #[arg(long, default_value_t = 1.0)]
        rate_scale: f64,
        /// Only the trace's first this many seconds (before scaling).
        #[arg(long)]
        duration: Option<f64>,
        /// LiteLLM-format price catalog.
        #[arg(long, default_value = "models/litellm_prices.json")]
        catalog: PathBuf,
        /// Print JSON instead of a Markdown table.
        #[arg(long)]
        json: bool,
    },
    /// Run SIMULATED GPU inference engines: OpenAI-compatible servers that
    /// stream tokens at a simulated GPU's rate, with vLLM-named `/metrics`
    /// and NVML-like `/sim/telemetry` (see docs/scheduling.md). No GPU is
    /// used.
    Sim {
        /// One engine per flag: `PROFILE:MODEL[,MODEL…]`, e.g.
        /// `h100:llama-3.1-8b`; profiles: h100, a100, l4.
        #[arg(long = "engine", required = true)]
        engines: Vec<String>,
        /// The first engine's address; the others take the next ports.
        #[arg(long, default_value = "127.0.0.1:9910")]
        listen: SocketAddr,
        /// Simulated seconds per wall-clock second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Tokens generated when a request sets no `max_tokens`.
        #[arg(long, default_value_t = 128)]
        default_output_tokens: u32,
        /// GB of host memory per engine for evicted KV blocks (as LMCache
        /// or SGLang's HiCache keep); 0: none.
        #[arg(long, default_value_t = 0.0)]
        host_kv_gb: f64,
    },
    /// Run a node agent: serve this machine's GPU telemetry (NVML) over
    /// gRPC to the gateways whose backends say `telemetry = "agent"` (see
    /// docs/scheduling.md).
    Agent {
        #[arg(long, default_value = "0.0.0.0:9950")]
        listen: SocketAddr,
        /// `nvml` (fail without a driver), `auto` (NVML, or no GPUs with a
        /// log line) or `sim` (relay SIMULATED engines given by `--sim`).
        #[arg(long, default_value = "auto", value_parser = ["nvml", "auto", "sim"])]
        telemetry: String,
        /// A `switchyard sim` engine's root URL (e.g.
        /// `http://127.0.0.1:9910`), with `--telemetry sim`; repeatable.
        #[arg(long = "sim")]
        sims: Vec<String>,
        /// Reported with every sample; default: the host name.
        #[arg(long)]
        node: Option<String>,
        /// Milliseconds between samples.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..))]
        interval_ms: u64,
        /// Require subscribers to send `authorization: Bearer <token>`, the
        /// token read from this environment variable (gateways set it as
        /// the backend's `agent_token`).
        #[arg(long)]
        token_env: Option<String>,
        /// Serve over TLS with this PEM certificate (chain), with
        /// `--tls-key`; gateways then address the agent as `https://`.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of `--tls-cert`.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require subscribers to present a client certificate signed by
        /// this PEM CA (mutual TLS; needs `--tls-cert`).
        #[arg(long, requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
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
        /// Milliseconds a batch (OpenAI Batch API, Anthropic Message
        /// Batches) stays in progress before its requests run.
        #[arg(long, default_value_t = 1000)]
        batch_delay_ms: u64,
        /// Runtime worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        /// The tenant (team, customer) the key belongs to.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        attrs: KeyArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List keys (never their secrets), with today's and this month's spend.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change a key's attributes; limits not given keep their values.
    Update {
        id: String,
        /// Move the key to another tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        attrs: KeyArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A new secret for the key (same id, limits and usage); the old one
    /// stops working at once.
    Rotate {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a key for good.
    Revoke {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// A key's attributes on the command line.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    #[arg(long)]
    name: Option<String>,
    /// Model groups the key may use (comma-separated); default: all.
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u32>,
    /// Tokens per minute.
    #[arg(long)]
    tpm: Option<u64>,
    /// Requests in flight at once.
    #[arg(long)]
    max_concurrent: Option<u32>,
    /// Spend per UTC day, USD.
    #[arg(long)]
    budget_daily_usd: Option<f64>,
    /// Spend per UTC month, USD.
    #[arg(long)]
    budget_monthly_usd: Option<f64>,
    /// The key stops working this many seconds from now.
    #[arg(long)]
    expires_in: Option<u64>,
    /// Free-form JSON object kept with the key.
    #[arg(long)]
    metadata: Option<String>,
}

impl KeyArgs {
    /// The admin API's body; `limits` merges the flags over `current`.
    fn body(
        &self,
        tenant: Option<&str>,
        current: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let mut body = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            body.insert(k.into(), v);
        };
        if let Some(t) = tenant {
            put("tenant", t.into());
        }
        if let Some(n) = &self.name {
            put("name", n.as_str().into());
        }
        if let Some(m) = &self.models {
            put("models", serde_json::json!(m));
        }
        if let Some(e) = self.expires_in {
            put("expires_in", e.into());
        }
        if let Some(m) = &self.metadata {
            let v: serde_json::Value =
                serde_json::from_str(m).map_err(|e| format!("--metadata: not JSON: {e}"))?;
            put("metadata", v);
        }
        let mut limits = current
            .and_then(|c| c.get("limits"))
            .and_then(serde_json::Value::as_object)
            .cloned()
            .unwrap_or_default();
        let flags = [
            ("rpm", self.rpm.map(serde_json::Value::from)),
            ("tpm", self.tpm.map(serde_json::Value::from)),
            (
                "max_concurrent",
                self.max_concurrent.map(serde_json::Value::from),
            ),
            (
                "budget_daily_usd",
                self.budget_daily_usd.map(serde_json::Value::from),
            ),
            (
                "budget_monthly_usd",
                self.budget_monthly_usd.map(serde_json::Value::from),
            ),
        ];
        let changed = flags.iter().any(|(_, v)| v.is_some());
        for (k, v) in flags {
            if let Some(v) = v {
                limits.insert(k.into(), v);
            }
        }
        if changed || current.is_none() {
            put("limits", serde_json::Value::Object(limits));
        }
        Ok(serde_json::Value::Object(body))
    }
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
        /// Weight precision on the CPU, as the gateway's `[[embedding_models]]
        /// precision` (whose default on the CPU is `bf16`): calibrate with the
        /// precision you serve.
        #[arg(long, default_value = "bf16")]
        precision: switchyard_embedder::Precision,
        /// Calibrate with the verifier's `backstory` check off, as for a
        /// group that sets `backstory = false`.
        #[arg(long)]
        no_backstory: bool,
        /// Also list the pairs the default setting gets wrong (false hits,
        /// then missed same-answer pairs, with their cosine and reason).
        #[arg(long)]
        misjudged: bool,
        /// Also list every pair with the default setting's decision (hit,
        /// false hit, missed, refused), its cosine and the reason it was not
        /// a hit.
        #[arg(long)]
        decisions: bool,
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
    /// Forgets audit outcomes in a running gateway, saved and in memory
    /// (`POST /admin/cache/audits/reset`), so the thresholds they raised go
    /// back to the configured similarity; without `--model`, every group's.
    ResetAudits {
        /// Only this model group's outcomes.
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
            let _log_guard = match crate::logging::init_with(&config.logging, &config.tracing) {
                Ok(g) => g,
                Err((_g, e)) => return fail(&format!("tracing: {e}")),
            };
            if let Some(e) = &config.tracing.otlp_endpoint {
                tracing::info!(endpoint = %e, sample_ratio = config.tracing.sample_ratio, "exporting request spans over OTLP");
            }
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
                    precision,
                    no_backstory,
                    misjudged,
                    decisions,
                },
        } => match calibrate(
            &pairs,
            &model,
            target,
            precision,
            !no_backstory,
            misjudged,
            decisions,
        ) {
            Ok(report) => {
                let _ = write!(std::io::stdout(), "{report}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Cache {
            command: CacheCommand::Stats { admin },
        } => print_admin(admin_call(&admin, reqwest::Method::GET, "cache/stats", None).await),
        Command::Keys { command } => print_admin(keys_command(command).await),
        Command::Usage {
            group_by,
            tenant,
            start,
            end,
            admin,
        } => {
            let mut path = format!("usage?group_by={group_by}");
            for (k, v) in [
                ("tenant", tenant),
                ("start", start.map(|s| s.to_string())),
                ("end", end.map(|s| s.to_string())),
            ] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={v}"));
                }
            }
            print_admin(admin_call(&admin, reqwest::Method::GET, &path, None).await)
        }
        Command::Audit { limit, admin } => print_admin(
            admin_call(
                &admin,
                reqwest::Method::GET,
                &format!("audit?limit={limit}"),
                None,
            )
            .await,
        ),
        Command::Cache {
            command:
                CacheCommand::Purge {
                    tenant,
                    model,
                    admin,
                },
        } => {
            let body = serde_json::json!({"tenant": tenant, "model": model});
            print_admin(admin_call(&admin, reqwest::Method::POST, "cache/purge", Some(body)).await)
        }
        Command::Cache {
            command: CacheCommand::ResetAudits { model, admin },
        } => {
            let body = serde_json::json!({"model": model});
            print_admin(
                admin_call(
                    &admin,
                    reqwest::Method::POST,
                    "cache/audits/reset",
                    Some(body),
                )
                .await,
            )
        }
        Command::Replay {
            trace,
            fleet,
            policy,
            rate_scale,
            duration,
            catalog,
            json,
        } => match replay(
            &trace, &fleet, &policy, rate_scale, duration, &catalog, json,
        ) {
            Ok(out) => {
                let _ = write!(std::io::stdout(), "{out}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Sim {
            engines,
            listen,
            speed,
            default_output_tokens,
            host_kv_gb,
        } => {
            let _log_guard = crate::logging::init(&LoggingConfig::default());
            let host_kv_tokens = match switchyard_scheduler::profile::kv_tokens_in_gb(host_kv_gb) {
                Ok(t) => t,
                Err(e) => return fail(&format!("--host-kv-gb: {e}")),
            };
            match start_sim(
                &engines,
                listen,
                speed,
                default_output_tokens,
                host_kv_tokens,
            )
            .await
            {
                Ok(running) => {
                    tokio::select! {
                        _ = futures_util::future::join_all(running.into_iter().map(|e| e.wait())) => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Agent {
            listen,
            telemetry,
            sims,
            node,
            interval_ms,
            token_env,
            tls_cert,
            tls_key,
            tls_client_ca,
        } => {
            let _log_guard = crate::logging::init(&LoggingConfig::default());
            let token = match token_env
                .map(|name| crate::config::SecretRef::Env(name).resolve(&|k| std::env::var(k).ok()))
                .transpose()
            {
                Ok(token) => token,
                Err(e) => return fail(&format!("--token-env: {e}")),
            };
            if !listen.ip().is_loopback() {
                if token.is_none() && tls_client_ca.is_none() {
                    tracing::warn!(%listen, "no --token-env nor --tls-client-ca: any host that can reach this port can read the GPU telemetry");
                } else if tls_cert.is_none() {
                    tracing::warn!(%listen, "no --tls-cert: the token crosses the network in the clear");
                }
            }
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(crate::agent::AgentTls {
                    cert,
                    key,
                    client_ca: tls_client_ca,
                }),
                _ => None,
            };
            let (tls_on, mtls) = (
                tls.is_some(),
                tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            );
            let source = match (telemetry.as_str(), sims.is_empty()) {
                ("sim", false) => AgentSource::Sim(sims),
                ("sim", true) => return fail("--telemetry sim needs at least one --sim URL"),
                (_, false) => return fail("--sim is only used with --telemetry sim"),
                ("nvml", true) => AgentSource::Nvml,
                _ => AgentSource::Auto,
            };
            let node = node.unwrap_or_else(host_name);
            let config = AgentConfig {
                node: node.clone(),
                source,
                interval: Duration::from_millis(interval_ms),
                token,
                tls,
            };
            match crate::agent::start(listen, config).await {
                Ok(agent) => {
                    let simulated = if agent.source == "sim" {
                        " (SIMULATED GPUs)"
                    } else {
                        ""
                    };
                    tracing::info!(addr = %agent.addr, node = %node, source = agent.source, tls = tls_on, client_certificates = mtls, "listening{simulated}");
                    tokio::select! {
                        r = agent.wait() => match r {
                            Ok(()) => ExitCode::SUCCESS,
                            Err(e) => fail(&e),
                        },
                        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
                    }
                }
                Err(e) => fail(&e),
            }
        }
        Command::FakeUpstream {
            listen,
            token_delay_ms,
            api_key_env,
            no_record,
            batch_delay_ms,
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
                batch_delay: std::time::Duration::from_millis(batch_delay_ms),
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

/// Starts one simulated engine per `PROFILE:MODEL[,MODEL…]` spec on
/// consecutive ports from `listen`.
async fn start_sim(
    specs: &[String],
    listen: SocketAddr,
    speed: f64,
    default_output_tokens: u32,
    host_kv_tokens: u64,
) -> Result<Vec<switchyard_fakes::sim::SimEngine>, String> {
    use switchyard_fakes::sim::{SimConfig, SimEngine};
    use switchyard_scheduler::profile::GpuProfile;
    let mut running = Vec::with_capacity(specs.len());
    let mut counts = std::collections::HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let (profile, models) = spec
            .split_once(':')
            .ok_or_else(|| format!("--engine {spec}: expected PROFILE:MODEL[,MODEL…]"))?;
        let profile = GpuProfile::named(profile).ok_or_else(|| {
            format!(
                "--engine {spec}: unknown GPU profile `{profile}` (known: {})",
                GpuProfile::NAMES.join(", ")
            )
        })?;
        let models: Vec<String> = models
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        if models.is_empty() {
            return Err(format!("--engine {spec}: name at least one model"));
        }
        let n = counts.entry(profile.name).or_insert(0u32);
        let name = format!("sim-{}-{n}", profile.name);
        *n += 1;
        let port = listen
            .port()
            .checked_add(u16::try_from(i).unwrap_or(u16::MAX))
            .ok_or("--listen: port range overflows")?;
        let addr = SocketAddr::new(listen.ip(), if listen.port() == 0 { 0 } else { port });
        let config = SimConfig {
            name: name.clone(),
            profile,
            models: models.clone(),
            speed,
            default_output_tokens,
            gpu_index: i as u32,
            host_kv_tokens,
        };
        let engine = SimEngine::start(addr, config)
            .await
            .map_err(|e| format!("{name}: cannot start on {addr}: {e}"))?;
        tracing::info!(engine = %name, addr = %engine.addr(), url = %format!("{}/v1", engine.url()), models = ?models, speed, "listening (SIMULATED engine: no GPU, simulated timing)");
        running.push(engine);
    }
    Ok(running)
}

/// `switchyard keys …` through the admin API.
async fn keys_command(command: KeysCommand) -> Result<serde_json::Value, String> {
    use reqwest::Method;
    match command {
        KeysCommand::Create {
            tenant,
            attrs,
            admin,
        } => {
            let body = attrs.body(Some(&tenant), None)?;
            admin_call(&admin, Method::POST, "keys", Some(body)).await
        }
        KeysCommand::List { tenant, admin } => {
            let path = match tenant {
                Some(t) => format!("keys?tenant={t}"),
                None => "keys".into(),
            };
            admin_call(&admin, Method::GET, &path, None).await
        }
        KeysCommand::Update {
            id,
            tenant,
            attrs,
            admin,
        } => {
            let current = admin_call(&admin, Method::GET, &format!("keys/{id}"), None).await?;
            let body = attrs.body(tenant.as_deref(), Some(&current))?;
            admin_call(&admin, Method::PATCH, &format!("keys/{id}"), Some(body)).await
        }
        KeysCommand::Rotate { id, admin } => {
            admin_call(&admin, Method::POST, &format!("keys/{id}/rotate"), None).await
        }
        KeysCommand::Revoke { id, admin } => {
            admin_call(&admin, Method::POST, &format!("keys/{id}/revoke"), None).await
        }
    }
}

/// Calls `/admin/{path}` and returns the answer's JSON, or the gateway's
/// error message. The operator's login goes in `x-switchyard-actor` for
/// the audit log.
async fn admin_call(
    admin: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let url = format!("{}/admin/{path}", admin.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(&admin.master_key)
        .timeout(std::time::Duration::from_secs(60));
    if let Some(who) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        request = request.header(crate::api::keys::ACTOR_HEADER, who);
    }
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

/// Runs `switchyard replay`; the output (a table or JSON).
fn replay(
    trace: &std::path::Path,
    fleet: &std::path::Path,
    policy: &str,
    rate_scale: f64,
    duration: Option<f64>,
    catalog: &std::path::Path,
    json: bool,
) -> Result<String, String> {
    use switchyard_scheduler::catalog::Catalog;
    use switchyard_scheduler::replay::{self, Fleet, Strategy};
    if !(rate_scale.is_finite() && rate_scale > 0.0) {
        return Err(format!("--rate-scale must be above 0, not {rate_scale}"));
    }
    let strategies = if policy == "all" {
        let mut all = vec![
            Strategy::Switchyard,
            Strategy::RoundRobin,
            Strategy::LeastLoaded,
            Strategy::AlwaysExternal,
        ];
        all.extend([1, 4, 16, 64].map(Strategy::QueueThreshold));
        all
    } else {
        vec![Strategy::parse(policy)?]
    };
    let text = std::fs::read_to_string(fleet).map_err(|e| format!("{}: {e}", fleet.display()))?;
    let fleet_config: Fleet =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", fleet.display()))?;
    let catalog = Catalog::load(catalog)?;
    let mut requests = replay::read_trace(trace)?;
    if let Some(limit) = duration {
        requests.retain(|r| r.at <= limit);
    }
    let mut reports = Vec::with_capacity(strategies.len());
    for s in strategies {
        let started = std::time::Instant::now();
        let report = replay::replay(&requests, &fleet_config, &catalog, s, rate_scale)?;
        tracing::debug!(policy = %s.name(), seconds = started.elapsed().as_secs_f64(), "replayed");
        reports.push(report);
    }
    if json {
        serde_json::to_string_pretty(&reports)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string())
    } else {
        Ok(format!(
            "{} requests from {}, rate ×{rate_scale}, TTFT SLO {} s (SIMULATED fleet)\n\n{}",
            requests.len(),
            trace.display(),
            fleet_config.policy.ttft_slo_s,
            replay::table(&reports)
        ))
    }
}

/// Embeds both sides of every pair with the real model and reports.
fn calibrate(
    pairs: &std::path::Path,
    model: &std::path::Path,
    target: f64,
    precision: switchyard_embedder::Precision,
    backstory: bool,
    list_misjudged: bool,
    list_decisions: bool,
) -> Result<String, String> {
    use crate::cache::calibrate::{Setting, decisions, misjudged, read_pairs, report};
    use switchyard_embedder::{CandleEmbedder, DeviceSpec, Embedder, ModelDir};
    if !(0.0..=1.0).contains(&target) {
        return Err(format!("--target must be between 0 and 1, not {target}"));
    }
    let pairs = read_pairs(pairs)?;
    let dir = ModelDir::open(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let embedder = CandleEmbedder::load(&dir, DeviceSpec::Cpu, precision)
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
        verifier: Some(crate::cache::verify::Verifier {
            backstory,
            ..Default::default()
        }),
    };
    let mut out = report(&pairs, &similarities, default, target);
    // Every pair already includes the misjudged ones.
    if list_decisions {
        out.push_str(&decisions(&pairs, &similarities, default));
    } else if list_misjudged {
        out.push_str(&misjudged(&pairs, &similarities, default));
    }
    Ok(out)
}

/// This machine's name, for an agent's samples.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
