//! Configuration: one TOML file, `SWITCHYARD__…` environment overrides, and
//! validation at start-up with messages that name the field and say why.
//!
//! Every field is documented here and in `docs/configuration.md`; a test
//! checks that the two agree.

mod env;
mod secret;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use env::apply_env_overrides;
pub use secret::SecretRef;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listener and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Who may call the gateway.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Log format and level.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Retry policy applied to every deployment unless it overrides it.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Circuit-breaker policy applied to every deployment.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Upstream providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Model groups: the model names clients ask for.
    #[serde(default)]
    pub model_groups: Vec<ModelGroupConfig>,
    /// Embedding models served in-process for `/v1/embeddings`.
    #[serde(default)]
    pub embedding_models: Vec<EmbeddingModelConfig>,
    /// The response cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// GPU-aware placement across local backends and external overflow.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Durable batch jobs: the gRPC BatchService and OpenAI's Files and
    /// Batches API (docs/batch.md).
    #[serde(default)]
    pub batch: BatchConfig,
    /// Prometheus metrics (docs/operations.md).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// OpenTelemetry request spans (docs/operations.md).
    #[serde(default)]
    pub tracing: TracingConfig,
    /// Tenants: limits, budgets, allowed models, DLP (docs/access.md).
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Secret and personal-data detection (docs/access.md).
    #[serde(default)]
    pub dlp: DlpConfig,
}

/// `[tracing]`: OpenTelemetry spans of each request (gateway → cache →
/// placement → upstream), exported over OTLP/gRPC (docs/operations.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`.
    /// Unset: no spans are exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of requests traced, 0 to 1 (a parent's decision is followed).
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "switchyard".into(),
            sample_ratio: 1.0,
        }
    }
}

/// `[metrics]`: Prometheus metrics on `GET /metrics` (docs/operations.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Record metrics and serve `/metrics` (no key needed: it shows no
    /// prompt, answer or secret; keep the listener private or scrape
    /// through a proxy). Off: `/metrics` answers 404 and nothing is
    /// recorded.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[batch]`: durable batch jobs in SQLite under `dir`, run at batch
/// priority on idle local GPUs, overflowing to external deployments only
/// as far as a deadline needs (docs/batch.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Serve `/v1/files`, `/v1/batches` and (with `grpc_listen`) the gRPC
    /// BatchService, and run batches. Off: those answer 404.
    pub enabled: bool,
    /// Directory of the SQLite database (`batches.sqlite3`, WAL mode) and
    /// uploaded files; one gateway process per directory.
    pub dir: std::path::PathBuf,
    /// Address of the gRPC listener (BatchService and reflection); port 0
    /// picks a free port (logged). Unset: no gRPC listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    /// Most items in one batch (up to 10,000,000); a larger batch is
    /// refused whole.
    pub max_items: u64,
    /// Largest uploaded file (`/v1/files`), bytes.
    pub max_file_bytes: u64,
    /// Completion window of a batch that names none, seconds.
    pub default_window_secs: u64,
    /// Most batch items in flight at once (all batches together).
    pub concurrency: usize,
    /// Attempts per item before a retryable failure (429, 5xx, time-outs)
    /// becomes its result.
    pub max_attempts: u32,
    /// A batch item runs on a local backend only while fewer than this
    /// share of the backend's permits are in flight (the rest stay free
    /// for interactive requests).
    pub idle_share: f64,
    /// Part of the completion window kept in reserve when deciding how
    /// much must overflow to external deployments to make the deadline.
    pub deadline_margin: f64,
    /// Items that go external while their batch has more than
    /// `provider_batch_turnaround_secs` left (besides its reserve) go
    /// through the provider's own batch API (OpenAI Batch API, Anthropic
    /// Message Batches) at its batch price, instead of one call each.
    pub provider_batches: bool,
    /// How long a provider batch may take (OpenAI and Anthropic promise
    /// 24 hours), seconds.
    pub provider_batch_turnaround_secs: u64,
    /// How often a provider batch is polled, milliseconds.
    pub provider_batch_poll_ms: u64,
    /// Most items in one provider batch (OpenAI takes 50,000).
    pub provider_batch_max_items: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: "data/batch".into(),
            grpc_listen: None,
            max_items: 100_000,
            max_file_bytes: 200 * 1024 * 1024,
            default_window_secs: 24 * 3_600,
            concurrency: 64,
            max_attempts: 3,
            idle_share: 0.5,
            deadline_margin: 0.1,
            provider_batches: true,
            provider_batch_turnaround_secs: 24 * 3_600,
            provider_batch_poll_ms: 30_000,
            provider_batch_max_items: 10_000,
        }
    }
}

/// `[scheduler]`: how requests for a model group with local GPU backends
/// are placed (docs/scheduling.md). Groups without local backends are
/// dispatched as before.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// `prefer_local`, `cheapest` or `local_only`; a group's `placement`
    /// may override it.
    pub mode: switchyard_scheduler::placement::Mode,
    /// Target time to first token, milliseconds.
    pub ttft_slo_ms: u64,
    /// Longest a request waits for a local backend before it gets 503
    /// (`queue_full`).
    pub max_queue_wait_ms: u64,
    /// LiteLLM-format price catalog for external deployments.
    pub catalog: std::path::PathBuf,
    /// Output tokens assumed for a request without `max_tokens`.
    pub default_output_tokens: u32,
    /// Milliseconds between telemetry polls (GPU samples, engine metrics).
    pub telemetry_interval_ms: u64,
    /// A backend whose telemetry is older than this is drained.
    pub stale_after_ms: u64,
    /// Seconds a GPU stays drained after a new XID or uncorrectable ECC
    /// error.
    pub error_hold_secs: u64,
    /// Expected time to first token of an external deployment without
    /// its own `ttft_ms`, milliseconds.
    pub external_ttft_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            mode: switchyard_scheduler::placement::Mode::PreferLocal,
            ttft_slo_ms: 2_000,
            max_queue_wait_ms: 10_000,
            catalog: "models/litellm_prices.json".into(),
            default_output_tokens: 256,
            telemetry_interval_ms: 500,
            stale_after_ms: 5_000,
            error_hold_secs: 300,
            external_ttft_ms: 1_000,
        }
    }
}

/// `[providers.NAME] local`: the provider is an inference engine on GPUs
/// this gateway schedules (vLLM, SGLang, TGI, `switchyard sim`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalBackendConfig {
    /// GPU profile for the service-rate estimate: `h100`, `a100` or `l4`
    /// (learned corrections are applied on top).
    pub gpu: String,
    /// What its GPUs cost per hour, USD (the local cost model).
    pub gpu_hour_usd: f64,
    /// Most requests in flight at once (its effective batch width).
    #[serde(default = "default_permits")]
    pub permits: u32,
    /// GPU telemetry: `none`, `nvml` (this machine's GPUs listed in
    /// `gpus`), `agent` (the `switchyard agent` at `agent` on the engine's
    /// node, GPUs listed in `gpus`) or `sim` (a `switchyard sim` engine's
    /// `/sim/telemetry`).
    #[serde(default)]
    pub telemetry: TelemetryKind,
    /// GPU indexes or UUIDs of this backend (`telemetry = "nvml"` or
    /// `"agent"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// The node agent's gRPC address, e.g. `http://10.0.0.11:9950`
    /// (`telemetry = "agent"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The token the node agent requires (its `--token-env`), sent as
    /// `authorization: Bearer <token>`; e.g. `{ env = "AGENT_TOKEN" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<SecretRef>,
    /// TLS to the node agent, whose `agent` address is then `https://…`
    /// (an `https://` agent without it is verified against the public web
    /// PKI's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_tls: Option<Box<AgentTlsConfig>>,
    /// GB of host memory the engine keeps evicted KV blocks in (LMCache,
    /// SGLang's HiCache); the ledger remembers prefixes sent here that much
    /// longer. 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_kv_gb: f64,
    /// The engine's Prometheus endpoint (vLLM, SGLang or TGI names);
    /// default: `base_url` without `/v1`, plus `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
}

/// `local.agent_tls`: how a gateway verifies a node agent's certificate and
/// what it presents to an agent that requires client certificates. Paths
/// to PEM files, read at start.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTlsConfig {
    /// CA certificate(s) the agent's certificate must chain to (the agent's
    /// `--tls-cert`); default: the public web PKI's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and its key, for an agent started with
    /// `--tls-client-ca` (both or neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
    /// The name the agent's certificate must carry; default: the host of
    /// `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn default_permits() -> u32 {
    64
}

/// Where a local backend's GPU telemetry comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TelemetryKind {
    /// Health from the engine's metrics endpoint only.
    #[default]
    None,
    /// NVML on this machine.
    Nvml,
    /// A `switchyard agent` on the engine's node (NVML there, over gRPC).
    Agent,
    /// A simulated engine's `/sim/telemetry`.
    Sim,
}

/// `[model_groups.placement]`: a group's placement policy where it differs
/// from `[scheduler]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPlacementConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<switchyard_scheduler::placement::Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_slo_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_wait_ms: Option<u64>,
    /// External deployments (by id) this group may overflow to; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_external: Vec<String>,
}

/// `price` of a deployment: its catalog entry, or explicit prices.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Price as this catalog model (e.g. `gpt-4o-mini`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// USD per million input tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_per_million: Option<f64>,
    /// USD per million output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_per_million: Option<f64>,
    /// USD per million input tokens through the provider's batch API
    /// (default: `input_per_million`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_input_per_million: Option<f64>,
    /// USD per million output tokens through the provider's batch API
    /// (default: `output_per_million`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_output_per_million: Option<f64>,
}

/// `[cache]`: the response cache (docs/cache.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Answer repeated chat requests from the cache.
    pub enabled: bool,
    /// How long an entry is served, in seconds; a request may ask for less
    /// with `x-switchyard-cache-ttl`.
    pub ttl_secs: u64,
    /// Most entries kept in memory; the least recently used go first.
    pub max_entries: usize,
    /// Most bytes of cached responses kept in memory; the least recently
    /// used go first.
    pub max_bytes: usize,
    /// Requests with a higher temperature are not cached (an unset
    /// temperature counts as 1).
    pub max_temperature: f64,
    /// The semantic tier: the `[[embedding_models]]` entry that embeds
    /// prompts. Unset: exact matches only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    /// Where the semantic tier's vectors live: `edge` (embedded qdrant-edge
    /// under `dir`) or `qdrant` (a Qdrant server at `qdrant_url`).
    pub store: StoreKind,
    /// Directory of the semantic tier's embedded vector store (qdrant-edge);
    /// one gateway process per directory.
    pub dir: std::path::PathBuf,
    /// The Qdrant server's gRPC URL (`store = "qdrant"`), e.g.
    /// `http://127.0.0.1:6334`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qdrant_url: Option<String>,
    /// The Qdrant server's API key, if it needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qdrant_api_key: Option<SecretRef>,
    /// The Qdrant collection (created on first use if absent).
    pub qdrant_collection: String,
    /// Least cosine similarity for a semantic candidate.
    pub similarity: f32,
    /// The verifier's substitution limit (docs/cache.md; 0 turns that check
    /// off).
    pub max_substitution: usize,
    /// Compare a prompt that opens with context and ends in a question also
    /// by that question alone (docs/cache.md, Verification).
    pub backstory: bool,
    /// Longest a semantic lookup (embed and search) may take; past it the
    /// request goes on uncached.
    pub lookup_budget_ms: u64,
    /// Most entries in the semantic tier's vector store; the least recently
    /// used beyond it are evicted at each sweep.
    pub store_max_entries: usize,
    /// Seconds between sweeps of the vector store (expired entries deleted,
    /// eviction, index build).
    pub store_sweep_secs: u64,
    /// Fraction of semantic hits answered fresh from upstream instead and
    /// compared with the cached answer, to hold `target_error_rate` on live
    /// traffic (docs/cache.md, Audits); 0 (the default): off.
    pub audit_rate: f64,
    /// The disagreement rate audits hold each group's threshold to.
    pub target_error_rate: f64,
    /// Least cosine between two answers' embeddings for them to agree.
    pub audit_agreement: f32,
    /// The SQLite file where audit outcomes are kept across restarts.
    /// Unset: `<dir>-audits.sqlite3` beside `dir` (`data/cache-audits.sqlite3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_db: Option<std::path::PathBuf>,
}

impl CacheConfig {
    /// Where audit outcomes are kept: `audit_db`, or a file beside `dir`.
    pub fn audit_db(&self) -> std::path::PathBuf {
        self.audit_db.clone().unwrap_or_else(|| {
            let name = self
                .dir
                .file_name()
                .map_or_else(|| "cache".into(), |n| n.to_string_lossy().into_owned());
            self.dir.with_file_name(format!("{name}-audits.sqlite3"))
        })
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl_secs: 3_600,
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_temperature: crate::cache::DEFAULT_MAX_TEMPERATURE,
            embedding_model: None,
            store: StoreKind::Edge,
            dir: "data/cache".into(),
            qdrant_url: None,
            qdrant_api_key: None,
            qdrant_collection: "switchyard_cache".into(),
            similarity: crate::cache::DEFAULT_SIMILARITY,
            max_substitution: crate::cache::verify::Verifier::default().max_substitution,
            backstory: crate::cache::verify::Verifier::default().backstory,
            lookup_budget_ms: 20,
            store_max_entries: 1_000_000,
            store_sweep_secs: 60,
            audit_rate: 0.0,
            target_error_rate: 0.01,
            audit_agreement: 0.9,
            audit_db: None,
        }
    }
}

/// `[cache] store`: where the semantic tier's vectors live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Embedded qdrant-edge shard under `[cache] dir`.
    #[default]
    Edge,
    /// A Qdrant server over gRPC.
    Qdrant,
}

/// `[[embedding_models]]`: a sentence-transformers model run in-process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingModelConfig {
    /// The name clients put in `model`; must differ from every model group.
    pub name: String,
    /// A sentence-transformers model folder (`models/fetch.sh` makes one),
    /// relative to the working directory.
    pub path: std::path::PathBuf,
    /// `cpu`, or `cuda:N` (needs a build with the `cuda` feature).
    #[serde(default = "default_device")]
    pub device: String,
    /// `f32` or `bf16` (on the CPU: BF16 weights, F32 arithmetic); `f16` on
    /// GPUs only. Unset: `bf16` on the CPU (a fifth faster than F32, the
    /// same cache accuracy: `docs/cache.md`), `f32` on GPUs.
    #[serde(default)]
    pub precision: Option<EmbeddingPrecision>,
    /// Most texts in one forward pass.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest wait, in milliseconds, for more requests to share a pass.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Most requests waiting; beyond it requests get 503 with `retry-after`.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Threads a forward pass on the CPU runs on; 0 (the default): one per
    /// available core.
    #[serde(default)]
    pub threads: usize,
}

/// Precision of an in-process embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingPrecision {
    F32,
    F16,
    Bf16,
}

fn default_device() -> String {
    "cpu".into()
}
fn default_max_batch() -> usize {
    32
}
fn default_max_wait_ms() -> u64 {
    0
}
fn default_queue_capacity() -> usize {
    1_024
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (logged at start-up).
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Most messages accepted in one chat request; more get 400.
    pub max_messages: usize,
    /// Largest `n` (choices per request) accepted; larger gets 400.
    pub max_n: u32,
    /// Most inputs accepted in one embeddings request; more get 400.
    pub max_embedding_inputs: usize,
    /// Seconds in-flight requests (streams included) may take to finish after
    /// SIGTERM/SIGINT before the process exits anyway.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 8 * 1024 * 1024,
            max_messages: 2_000,
            max_n: 16,
            max_embedding_inputs: 2_048,
            shutdown_grace_secs: 30,
        }
    }
}

/// `[auth]`: the master key, virtual keys and the usage ledger
/// (docs/access.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Master key. When set, every `/v1/*` call needs `Authorization: Bearer`
    /// with the master key or a virtual key, and the admin API under
    /// `/admin/` is enabled; when unset, `/v1/*` is open (one `default`
    /// tenant, no limits, no ledger) and `/admin/` answers 404.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key: Option<SecretRef>,
    /// SQLite database of virtual keys (hashed), the usage ledger and the
    /// audit log; opened when `master_key` is set. One gateway process per
    /// file.
    pub db: std::path::PathBuf,
    /// Completion tokens counted against a tokens-per-minute limit before
    /// the answer is known, for a request that sets no `max_tokens`
    /// (reconciled with the real count afterwards).
    pub completion_estimate: u32,
    /// Days of usage records kept in the ledger (older ones are deleted
    /// hourly); 0 keeps them forever.
    pub usage_retention_days: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            master_key: None,
            db: "data/access.sqlite3".into(),
            completion_estimate: 256,
            usage_retention_days: 400,
        }
    }
}

/// Rate limits and budgets of a tenant (`[tenants.NAME.limits]`) or of a
/// virtual key (its `limits` attribute). Unset: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per minute (a sliding 60-second window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute (a sliding 60-second window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once (a stream counts until it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Spend per UTC day, US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_daily_usd: Option<f64>,
    /// Spend per UTC calendar month, US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_monthly_usd: Option<f64>,
}

/// `[tenants.NAME]`: a team or customer that virtual keys belong to.
/// Tenants not listed here may still own keys; they have no tenant-wide
/// limits.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Limits shared by all of the tenant's keys.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Model groups the tenant may use; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// DLP actions for this tenant's requests, by detector, over the
    /// model group's and `[dlp.actions]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dlp: BTreeMap<String, DlpAction>,
    /// This tenant's placement policy, over its model groups'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<TenantPlacementConfig>,
}

/// `[tenants.NAME.placement]`: where a tenant's requests may go, over the
/// model group's policy (docs/scheduling.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPlacementConfig {
    /// Replaces the group's `mode` (e.g. `local_only`: never external).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<switchyard_scheduler::placement::Mode>,
    /// External deployments (by id, `provider/model`) this tenant's requests
    /// may go to, on top of the group's own list; empty: the group's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_external: Vec<String>,
}

/// What DLP does when a detector matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpAction {
    /// Detector not run.
    Off,
    /// Log the detector's name (never the text) and go on.
    Log,
    /// Replace the match with `[REDACTED:<detector>]` before the prompt
    /// leaves the gateway (and before it reaches the cache).
    Redact,
    /// Refuse the request: 400 naming the detector, never the match.
    Block,
}

/// `[dlp]`: secret and personal-data detection (docs/access.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlpConfig {
    /// Scan prompts (chat messages, completion prompts, embedding inputs).
    pub enabled: bool,
    /// Also scan non-streamed answers before they reach the client.
    pub responses: bool,
    /// Actions by detector name, over the built-in defaults (secrets:
    /// `redact`; personal data: `off`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, DlpAction>,
    /// Detectors of your own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<CustomDetectorConfig>,
}

impl Default for DlpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            responses: false,
            actions: BTreeMap::new(),
            custom: Vec::new(),
        }
    }
}

/// `[[dlp.custom]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetectorConfig {
    /// Detector name (letters, digits, `_`), shown in errors and logs.
    pub name: String,
    /// Regular expression (Rust `regex` syntax).
    pub pattern: String,
    pub action: DlpAction,
}

/// `[logging]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `json` (one JSON object per line) or `text`.
    pub format: LogFormat,
    /// Filter in `tracing` env-filter syntax, e.g. `info` or
    /// `info,switchyard_gateway=debug`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

/// `[retry]` and per-deployment `retry`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries on one deployment after the first attempt, for retryable
    /// failures (429, 408, 5xx, connect errors, resets, time-to-first-token
    /// time-outs) that happen before the first byte reached the client.
    pub max_retries: u32,
    /// First backoff in milliseconds; doubles each retry, with full jitter.
    pub backoff_base_ms: u64,
    /// Cap on one backoff, in milliseconds.
    pub backoff_max_ms: u64,
    /// A `retry-after` from the upstream is honoured up to this many
    /// milliseconds; a longer one moves on to the next deployment instead.
    pub max_retry_after_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            max_retry_after_ms: 5_000,
        }
    }
}

/// `[breaker]`
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open a deployment's breaker.
    pub failure_threshold: u32,
    /// Milliseconds a breaker stays open before one half-open probe is let
    /// through; the probe's success closes it, its failure reopens it.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_ms: 30_000,
        }
    }
}

/// `[providers.NAME]`: an upstream, tagged by its wire format.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// OpenAI and every OpenAI-compatible server (vLLM, SGLang, TGI, Ollama,
    /// llama.cpp, Groq, Together, DeepSeek, Mistral…).
    OpenaiCompat {
        /// Base URL including the version prefix, e.g.
        /// `https://api.openai.com/v1` or `http://gpu-1:8000/v1`.
        base_url: String,
        /// API key location, sent as `Authorization: Bearer`; omit for
        /// servers that need none.
        api_key: Option<SecretRef>,
        /// Set when this is an inference engine on GPUs Switchyard
        /// schedules (see [`LocalBackendConfig`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local: Option<LocalBackendConfig>,
    },
    /// Azure OpenAI: `{base_url}/openai/deployments/{model}/…?api-version=…`
    /// with an `api-key` header; a deployment's `model` is the Azure
    /// deployment name.
    AzureOpenai {
        /// Resource URL, e.g. `https://my-resource.openai.azure.com`.
        base_url: String,
        /// API key location, sent as the `api-key` header.
        api_key: SecretRef,
        /// The `api-version` query parameter, e.g. `2024-10-21`.
        api_version: String,
    },
    /// Anthropic's Messages API, translated to and from OpenAI's format.
    Anthropic {
        /// Base URL without the version, default `https://api.anthropic.com`.
        #[serde(default = "default_anthropic_url")]
        base_url: String,
        /// API key location, sent as `x-api-key`.
        api_key: SecretRef,
        /// The `anthropic-version` header.
        #[serde(default = "default_anthropic_version")]
        anthropic_version: String,
        /// `max_tokens` sent when the client set neither `max_tokens` nor
        /// `max_completion_tokens` (Anthropic requires one).
        #[serde(default = "default_anthropic_max_tokens")]
        default_max_tokens: u32,
    },
}

fn default_anthropic_url() -> String {
    "https://api.anthropic.com".into()
}
fn default_anthropic_version() -> String {
    "2023-06-01".into()
}
fn default_anthropic_max_tokens() -> u32 {
    4_096
}

/// `[[model_groups]]`: a model name clients ask for, served by deployments.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelGroupConfig {
    /// The name clients put in `model`.
    pub name: String,
    /// How the first deployment is chosen; the others follow as fallbacks.
    #[serde(default)]
    pub strategy: Strategy,
    /// The deployments serving this group, in fallback order.
    pub deployments: Vec<DeploymentConfig>,
    /// This group's response-cache settings, where they differ from
    /// `[cache]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<GroupCacheConfig>,
    /// This group's placement policy, where it differs from `[scheduler]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<GroupPlacementConfig>,
    /// DLP actions for this group, by detector, over `[dlp.actions]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dlp: BTreeMap<String, DlpAction>,
}

/// `[model_groups.cache]`: per-group overrides of `[cache]`; each unset
/// field keeps the `[cache]` value.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCacheConfig {
    /// `false`: this group's requests are never looked up nor stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_substitution: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backstory: Option<bool>,
    /// `false`: exact matches only for this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_error_rate: Option<f64>,
}

/// Deployment choice within a model group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Always start with the first deployment; fall back in listed order.
    #[default]
    Ordered,
    /// Start with a deployment drawn at random by `weight`; fall back to the
    /// others by descending weight.
    Weighted,
}

/// `[[model_groups.deployments]]`: one provider + upstream model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Name of a provider under `[providers]`.
    pub provider: String,
    /// Model name sent upstream (the Azure deployment name for `azure_openai`).
    pub model: String,
    /// Identifier shown in `x-switchyard-backend`, logs and the admin API;
    /// default `provider/model`.
    pub id: Option<String>,
    /// Relative weight for the `weighted` strategy.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Time-outs for this deployment.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// Overrides `[retry]` for this deployment.
    pub retry: Option<RetryConfig>,
    /// What an external deployment costs (placement's cost policy); default:
    /// the catalog's price of `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceConfig>,
    /// Expected time to first token of an external deployment,
    /// milliseconds; default `[scheduler] external_ttft_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
}

impl DeploymentConfig {
    /// `id`, or `provider/model` when none is set.
    pub fn id(&self) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("{}/{}", self.provider, self.model))
    }
}

fn default_weight() -> u32 {
    1
}

/// Per-deployment time-outs, in milliseconds.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// TCP (and TLS) connection set-up.
    pub connect_ms: u64,
    /// From sending the request to the response headers (non-streaming) or
    /// the first streamed event; retryable when it expires.
    pub ttft_ms: u64,
    /// Whole attempt, body or stream included; a stream cut by it ends with
    /// an error event.
    pub total_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            ttft_ms: 60_000,
            total_ms: 600_000,
        }
    }
}

/// A configuration that could not be loaded; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parse `text`, apply overrides from `env` (`SWITCHYARD__SECTION__KEY`),
    /// deserialize and validate.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError(format!("invalid TOML: {e}")))?;
        apply_env_overrides(&mut table, env)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().message().to_owned();
                if path == "." || path.is_empty() {
                    ConfigError(inner)
                } else {
                    ConfigError(format!("{path}: {inner}"))
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Read and parse a file with the process environment's overrides.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, std::env::vars())
    }
}

#[cfg(test)]
mod tests;
