//! The gateway's shared state, built once from the configuration.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use secrecy::SecretString;

use switchyard_embedder::{
    Batcher, BatcherConfig, CandleEmbedder, DeviceSpec, ModelDir, Precision,
};

use crate::config::{Config, ConfigError, EmbeddingModelConfig, EmbeddingPrecision};
use crate::routing::ModelGroups;

/// Request limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_messages: usize,
    pub max_n: u32,
    pub max_embedding_inputs: usize,
}

#[derive(Debug)]
pub struct App {
    pub limits: Limits,
    pub groups: ModelGroups,
    /// In-process embedding models by name.
    pub embeddings: HashMap<String, Batcher>,
    /// The response cache, when `[cache] enabled`.
    pub cache: Option<Arc<crate::cache::Cache>>,
    pub master_key: Option<SecretString>,
    /// Virtual keys, limits, budgets and the usage ledger, when
    /// `auth.master_key` is set.
    pub access: Option<Arc<crate::access::Access>>,
    /// DLP detectors and per-tenant, per-group policies, when `[dlp] enabled`.
    pub dlp: Option<crate::access::DlpPolicies>,
    pub shutting_down: AtomicBool,
    /// Unix seconds at start-up (`created` of `/v1/models` entries).
    pub started_at: u64,
    /// Local GPU backends and placement, when any provider is local.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// Durable batch jobs, when `[batch] enabled`.
    pub batches: Option<Arc<crate::batch::Batches>>,
    /// `[metrics] enabled`: `/metrics` is served.
    pub metrics: bool,
}

impl App {
    /// Build providers and deployments, resolving secrets through `env`.
    pub fn build(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let master_key = config
            .auth
            .master_key
            .as_ref()
            .map(|k| {
                k.resolve(env)
                    .map_err(|e| ConfigError(format!("auth.master_key: {e}")))
            })
            .transpose()?;
        let access = master_key
            .clone()
            .map(|k| {
                crate::access::Access::open(config, k)
                    .map(Arc::new)
                    .map_err(|e| {
                        ConfigError(format!("auth.db ({}): {e}", config.auth.db.display()))
                    })
            })
            .transpose()?;
        let dlp = crate::access::DlpPolicies::build(config)
            .map_err(|e| ConfigError(format!("dlp: {e}")))?;
        let s = &config.server;
        let embeddings: HashMap<String, Batcher> = config
            .embedding_models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                load_embedder(m)
                    .map(|b| (m.name.clone(), b))
                    .map_err(|e| ConfigError(format!("embedding_models[{i}] ({}): {e}", m.name)))
            })
            .collect::<Result<_, _>>()?;
        let cache =
            crate::cache::Cache::build(&config.cache, &config.model_groups, &embeddings, env)
                .map_err(ConfigError)?;
        if config.metrics.enabled && crate::metrics::install().is_none() {
            tracing::warn!("metrics: another recorder is installed; /metrics stays empty");
        }
        let groups = ModelGroups::from_config(config, env)?;
        let fleet = crate::fleet::Fleet::build(config, &groups.iter().collect::<Vec<_>>(), env)?
            .map(Arc::new);
        {
            let local = config
                .providers
                .iter()
                .filter(|(_, p)| {
                    matches!(
                        p,
                        crate::config::ProviderConfig::OpenaiCompat { local: Some(_), .. }
                    )
                })
                .map(|(name, _)| name.clone())
                .collect();
            let prices =
                crate::fleet::all_external_prices(config, &groups.iter().collect::<Vec<_>>());
            crate::metrics::set_context(prices, local);
        }
        let batches = if config.batch.enabled {
            let models = crate::batch::Models {
                groups: groups.iter().map(|g| g.name.clone()).collect(),
                embeddings: embeddings.keys().cloned().collect(),
            };
            let b = crate::batch::Batches::open(&config.batch, models, s.max_body_bytes).map_err(
                |e| ConfigError(format!("batch.dir ({}): {e}", config.batch.dir.display())),
            )?;
            Some(Arc::new(b))
        } else {
            None
        };
        Ok(Self {
            metrics: config.metrics.enabled,
            batches,
            limits: Limits {
                max_body_bytes: s.max_body_bytes,
                max_messages: s.max_messages,
                max_n: s.max_n,
                max_embedding_inputs: s.max_embedding_inputs,
            },
            groups,
            fleet,
            embeddings,
            cache,
            master_key,
            access,
            dlp,
            shutting_down: AtomicBool::new(false),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }
}

/// Load a model and start its batching thread.
fn load_embedder(m: &EmbeddingModelConfig) -> Result<Batcher, String> {
    let device: DeviceSpec = m.device.parse()?;
    let precision = match m.precision.unwrap_or(match device {
        DeviceSpec::Cpu => EmbeddingPrecision::Bf16,
        DeviceSpec::Cuda(_) => EmbeddingPrecision::F32,
    }) {
        EmbeddingPrecision::F32 => Precision::F32,
        EmbeddingPrecision::F16 => Precision::F16,
        EmbeddingPrecision::Bf16 => Precision::Bf16,
    };
    let dir = ModelDir::open(&m.path).map_err(|e| e.to_string())?;
    let model = CandleEmbedder::load(&dir, device, precision)
        .and_then(|model| model.with_threads(m.threads))
        .map_err(|e| e.to_string())?;
    tracing::info!(model = %m.name, path = %m.path.display(), device = %m.device, ?model, "embedding model loaded");
    let config = BatcherConfig {
        max_batch: m.max_batch,
        max_wait: Duration::from_millis(m.max_wait_ms),
        queue_capacity: m.queue_capacity,
    };
    Batcher::start(Arc::new(model), config).map_err(|e| e.to_string())
}

/// The process environment, as `App::build` wants it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
