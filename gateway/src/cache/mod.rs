//! The response cache (issue #4; docs/cache.md).
//!
//! - [`key`]: a chat request's scope, compared text and exact key;
//! - [`exact`]: the in-memory exact tier (LRU by entries and bytes, TTL);
//! - [`semantic`]: the semantic tier in the request path (embed, search the
//!   scope, verify);
//! - [`store`]: its vector store, an embedded qdrant-edge shard or a Qdrant
//!   server, with scope isolation enforced inside the store, TTL sweeps,
//!   LRU eviction and index builds;
//! - [`verify`]: the check a semantic candidate must pass besides cosine;
//! - [`http`], [`replay`]: request controls, response headers, and
//!   streaming (replaying a stored answer, reassembling a streamed one);
//! - [`calibrate`]: hit and false-hit rates on labelled pairs
//!   (`switchyard cache calibrate`).
//!
//! [`Cache`] ties them together for the request path (`api::endpoints`),
//! with per-model-group [`Settings`], counters, stats and purges (the admin
//! API and `switchyard cache stats | purge`).

pub mod audit;
pub mod calibrate;
pub mod exact;
pub mod http;
pub mod key;
pub mod replay;
pub mod semantic;
pub mod store;
pub mod verify;

/// The semantic tier's default similarity threshold, used with
/// [`verify::Verifier::default`]: on the cache-eval development pairs this
/// setting hits 67% of same-answer pairs with no false hit (`docs/cache.md`).
pub const DEFAULT_SIMILARITY: f32 = 0.6;

/// The highest temperature cached by default. Requests that leave it unset
/// get the API's default, 1, and are cached; above 1 they are not.
pub const DEFAULT_MAX_TEMPERATURE: f64 = 1.0;

/// The longest last user turn (bytes of UTF-8) the semantic tier looks up
/// or stores; longer ones use the exact tier only. all-MiniLM-L6-v2 reads
/// 256 tokens (about 1,000 characters of English), so beyond this the
/// embedding cannot see what differs, and the verifier, which compares
/// every word with every word, would cost the request path milliseconds.
pub const SEMANTIC_MAX_BYTES: usize = 2_048;

pub use store::{EdgeStore, Entry, Neighbour, QdrantStore, StoreError, VectorStore};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{CacheConfig, GroupCacheConfig, ModelGroupConfig, StoreKind};

/// How often the semantic tier's store is flushed to disk: a crash loses at
/// most this much of the latest answers (a clean exit loses nothing).
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The tenant every request belongs to until virtual keys (issue #8).
pub const DEFAULT_TENANT: &str = "default";

/// The configured vector store. A Qdrant server is contacted in the
/// background: the gateway starts (uncached) while it is unreachable.
fn open_store(
    c: &CacheConfig,
    dimension: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<VectorStore, String> {
    match c.store {
        StoreKind::Edge => EdgeStore::open(&c.dir, dimension)
            .map(VectorStore::Edge)
            .map_err(|e| format!("cache.dir ({}): {e}", c.dir.display())),
        StoreKind::Qdrant => {
            use secrecy::ExposeSecret;
            let url = c.qdrant_url.as_deref().unwrap_or_default();
            let key = c
                .qdrant_api_key
                .as_ref()
                .map(|k| {
                    k.resolve(env)
                        .map_err(|e| format!("cache.qdrant_api_key: {e}"))
                })
                .transpose()?
                .map(|k| k.expose_secret().to_owned());
            let timeout = std::time::Duration::from_secs(5);
            let store = QdrantStore::new(url, key, &c.qdrant_collection, dimension, timeout)
                .map_err(|e| format!("cache.qdrant_url: {e}"))?;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let probe = store.clone();
                let url = url.to_owned();
                runtime.spawn(async move {
                    match probe.ready().await {
                        Ok(()) => tracing::info!(%url, "semantic cache: Qdrant server ready"),
                        Err(e) => tracing::warn!(%url, error = %e,
                            "semantic cache: Qdrant server not ready; lookups fail open until it is"),
                    }
                });
            }
            Ok(VectorStore::Qdrant(store))
        }
    }
}

/// One model group's cache settings: `[cache]` with the group's overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub enabled: bool,
    pub ttl_secs: u64,
    /// Look up and store in the semantic tier (when it exists).
    pub semantic: bool,
    pub similarity: f32,
    pub verifier: verify::Verifier,
    pub audit: audit::AuditSettings,
}

impl Settings {
    fn from_config(c: &CacheConfig) -> Self {
        Self {
            enabled: true,
            ttl_secs: c.ttl_secs,
            semantic: true,
            similarity: c.similarity,
            verifier: verify::Verifier {
                max_substitution: c.max_substitution,
                backstory: c.backstory,
                typo_variants: true,
            },
            audit: audit::AuditSettings {
                rate: c.audit_rate,
                target_error_rate: c.target_error_rate,
                agreement: c.audit_agreement,
            },
        }
    }

    fn with(self, g: &GroupCacheConfig) -> Self {
        Self {
            enabled: g.enabled.unwrap_or(self.enabled),
            ttl_secs: g.ttl_secs.unwrap_or(self.ttl_secs),
            semantic: g.semantic.unwrap_or(self.semantic),
            similarity: g.similarity.unwrap_or(self.similarity),
            verifier: verify::Verifier {
                max_substitution: g.max_substitution.unwrap_or(self.verifier.max_substitution),
                backstory: g.backstory.unwrap_or(self.verifier.backstory),
                typo_variants: self.verifier.typo_variants,
            },
            audit: audit::AuditSettings {
                rate: g.audit_rate.unwrap_or(self.audit.rate),
                target_error_rate: g.target_error_rate.unwrap_or(self.audit.target_error_rate),
                ..self.audit
            },
        }
    }
}

/// What the request path counts (the exact tier counts its own lookups).
#[derive(Debug, Default)]
pub struct Counters {
    pub hits_exact: AtomicU64,
    pub hits_semantic: AtomicU64,
    pub misses: AtomicU64,
    pub bypasses: AtomicU64,
    /// Semantic lookups given up (over budget, embedder or store failing):
    /// those requests went on uncached.
    pub fail_open: AtomicU64,
}

/// `switchyard cache stats` / `GET /admin/cache/stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub hits_exact: u64,
    pub hits_semantic: u64,
    pub misses: u64,
    pub bypasses: u64,
    pub fail_open: u64,
    /// The in-memory exact tier.
    pub memory: MemoryStats,
    /// The semantic tier's vector store; `None` without a semantic tier or
    /// when it could not be read.
    pub store: Option<store::StoreStats>,
    /// Why the store could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// Each audited model group's audits and current threshold.
    pub audits: std::collections::BTreeMap<String, audit::AuditStats>,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MemoryStats {
    pub entries: usize,
    pub bytes: usize,
    pub evictions: u64,
    pub expirations: u64,
}

/// What resetting audits did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditsReset {
    /// The audited groups whose threshold went back to the configured one.
    pub groups: Vec<String>,
    /// Saved outcomes removed.
    pub removed: usize,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Purged {
    pub memory: usize,
    pub store: usize,
}

/// The response cache as the request path uses it.
#[derive(Debug)]
pub struct Cache {
    pub exact: exact::ExactTier,
    /// Present when `[cache] embedding_model` is set.
    pub semantic: Option<semantic::Semantic>,
    pub max_temperature: f64,
    pub counters: Counters,
    defaults: Settings,
    groups: HashMap<String, Settings>,
    /// Every configured model group.
    group_names: std::collections::HashSet<String>,
    /// The model groups whose semantic hits are audited.
    auditors: HashMap<String, audit::Auditor>,
    /// Where their outcomes are kept (present when any group is audited).
    journal: Option<Arc<audit::Journal>>,
}

impl Cache {
    /// `Ok(None)` when the cache is disabled. `embedders` are the loaded
    /// `[[embedding_models]]`; the semantic tier's store is opened (or
    /// created) under `c.dir`.
    pub fn build(
        c: &CacheConfig,
        groups: &[ModelGroupConfig],
        embedders: &HashMap<String, switchyard_embedder::Batcher>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Arc<Self>>, String> {
        if !c.enabled {
            return Ok(None);
        }
        let semantic = match &c.embedding_model {
            None => None,
            Some(name) => {
                let embedder = embedders
                    .get(name)
                    .ok_or_else(|| format!("cache.embedding_model: no embedding model `{name}`"))?
                    .clone();
                let store = open_store(c, embedder.dimension(), env)?;
                store.upkeep(store::Upkeep {
                    flush_every: FLUSH_INTERVAL,
                    sweep_every: std::time::Duration::from_secs(c.store_sweep_secs),
                    max_entries: c.store_max_entries,
                });
                // The verifier's word list, read now rather than on the
                // first lookup.
                verify::load_words();
                Some(semantic::Semantic {
                    embedder,
                    store,
                    budget: std::time::Duration::from_millis(c.lookup_budget_ms),
                })
            }
        };
        let defaults = Settings::from_config(c);
        let group_settings: HashMap<String, Settings> = groups
            .iter()
            .filter_map(|g| Some((g.name.clone(), defaults.with(g.cache.as_ref()?))))
            .collect();
        let audited: Vec<_> = groups
            .iter()
            .map(|g| (g, group_settings.get(&g.name).copied().unwrap_or(defaults)))
            .filter(|(_, s)| semantic.is_some() && s.semantic && s.audit.rate > 0.0)
            .collect();
        // Opened when a group is audited, or when an earlier run saved
        // outcomes (so a reset reaches them while audits are off).
        let path = c.audit_db();
        let journal = match &c.embedding_model {
            Some(model) if semantic.is_some() && (!audited.is_empty() || path.is_file()) => {
                let journal = audit::Journal::open(&path, model)
                    .map_err(|e| format!("cache.audit_db ({}): {e}", path.display()))?;
                Some(Arc::new(journal))
            }
            _ => None,
        };
        let mut auditors = HashMap::new();
        for (g, s) in audited {
            let auditor = match &journal {
                Some(j) => audit::Auditor::restore(s.audit, s.similarity, &g.name, j.clone())
                    .map_err(|e| format!("cache.audit_db: reading `{}`: {e}", g.name))?,
                None => audit::Auditor::new(s.audit, s.similarity),
            };
            auditors.insert(g.name.clone(), auditor);
        }
        Ok(Some(Arc::new(Self {
            exact: exact::ExactTier::new(c.max_entries, c.max_bytes),
            semantic,
            max_temperature: c.max_temperature,
            counters: Counters::default(),
            defaults,
            groups: group_settings,
            group_names: groups.iter().map(|g| g.name.clone()).collect(),
            auditors,
            journal,
        })))
    }

    /// The settings of model group `group`.
    pub fn settings(&self, group: &str) -> Settings {
        self.groups.get(group).copied().unwrap_or(self.defaults)
    }

    /// Whether `group` is a configured model group.
    pub fn has_group(&self, group: &str) -> bool {
        self.group_names.contains(group)
    }

    /// Model group `group`'s auditor, when its semantic hits are audited.
    pub fn auditor(&self, group: &str) -> Option<&audit::Auditor> {
        self.auditors.get(group)
    }

    /// Forgets model group `group`'s audit outcomes (`None`: every
    /// group's), on disk and in memory: its threshold is the configured
    /// similarity again. Returns the groups whose live threshold was reset
    /// and how many saved outcomes were removed. Disk work: call it off the
    /// async threads.
    pub fn reset_audits(&self, group: Option<&str>) -> Result<AuditsReset, String> {
        let _serial = self.journal.as_ref().map(|j| j.serial());
        let removed = match &self.journal {
            Some(j) => j.reset(group).map_err(|e| e.to_string())?,
            None => 0,
        };
        let mut groups: Vec<String> = self
            .auditors
            .iter()
            .filter(|(g, _)| group.is_none_or(|w| w == g.as_str()))
            .map(|(g, a)| {
                a.forget();
                g.clone()
            })
            .collect();
        groups.sort();
        Ok(AuditsReset { groups, removed })
    }

    /// Counters and sizes; a store that cannot be read is reported in
    /// `store_error`, not as a failure of the whole.
    pub async fn stats(&self) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let m = self.exact.stats();
        let (store, store_error) = match &self.semantic {
            Some(s) => match s.store.stats().await {
                Ok(stats) => (Some(stats), None),
                Err(e) => (None, Some(e.to_string())),
            },
            None => (None, None),
        };
        Stats {
            hits_exact: load(&self.counters.hits_exact),
            hits_semantic: load(&self.counters.hits_semantic),
            misses: load(&self.counters.misses),
            bypasses: load(&self.counters.bypasses),
            fail_open: load(&self.counters.fail_open),
            memory: MemoryStats {
                entries: m.entries,
                bytes: m.bytes,
                evictions: m.evictions,
                expirations: m.expirations,
            },
            store,
            store_error,
            audits: self
                .auditors
                .iter()
                .map(|(g, a)| (g.clone(), a.stats()))
                .collect(),
        }
    }

    /// Removes the entries of `tenant` and model group `group` (each `None`
    /// for all) from both tiers.
    pub async fn purge(
        &self,
        tenant: Option<&str>,
        group: Option<&str>,
    ) -> Result<Purged, StoreError> {
        let memory = self.exact.purge(tenant, group);
        let store = match &self.semantic {
            Some(s) => {
                s.store
                    .purge(tenant.map(str::to_owned), group.map(str::to_owned))
                    .await?
            }
            None => 0,
        };
        Ok(Purged { memory, store })
    }
}
