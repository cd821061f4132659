//! The response cache (issue #4), being built in steps.
//!
//! Done so far:
//! - [`key`]: a chat request's scope, compared text and exact key;
//! - [`store`]: the semantic tier's vector store on an embedded qdrant-edge
//!   shard, with scope isolation enforced inside the store;
//! - [`verify`]: the check a semantic candidate must pass besides cosine;
//! - [`calibrate`]: hit and false-hit rates on labelled pairs
//!   (`switchyard cache calibrate`).
//!
//! Not yet built: the exact tier's table, the request path and its controls,
//! and the Qdrant-server store. Nothing in the request path uses the cache
//! yet.

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
/// setting hits 62% of same-answer pairs with no false hit (`docs/cache.md`).
pub const DEFAULT_SIMILARITY: f32 = 0.6;

/// The highest temperature cached by default. Requests that leave it unset
/// get the API's default, 1, and are cached; above 1 they are not.
pub const DEFAULT_MAX_TEMPERATURE: f64 = 1.0;

pub use store::{EdgeStore, Entry, Neighbour, StoreError, VectorStore};

use crate::config::CacheConfig;

/// How often the semantic tier's store is flushed to disk: a crash loses at
/// most this much of the latest answers (a clean exit loses nothing).
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The tenant every request belongs to until virtual keys (issue #8).
pub const DEFAULT_TENANT: &str = "default";

/// The response cache as the request path uses it.
#[derive(Debug)]
pub struct Cache {
    pub exact: exact::ExactTier,
    /// Present when `[cache] embedding_model` is set.
    pub semantic: Option<semantic::Semantic>,
    pub ttl_secs: u64,
    pub max_temperature: f64,
    /// Semantic lookups given up (over budget, embedder or store failing):
    /// those requests went on uncached.
    pub fail_open: std::sync::atomic::AtomicU64,
}

impl Cache {
    /// `Ok(None)` when the cache is disabled. `embedders` are the loaded
    /// `[[embedding_models]]`; the semantic tier's store is opened (or
    /// created) under `c.dir`.
    pub fn build(
        c: &CacheConfig,
        embedders: &std::collections::HashMap<String, switchyard_embedder::Batcher>,
    ) -> Result<Option<std::sync::Arc<Self>>, String> {
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
                let store = EdgeStore::open(&c.dir, embedder.dimension())
                    .map_err(|e| format!("cache.dir ({}): {e}", c.dir.display()))?;
                store.upkeep(store::Upkeep {
                    flush_every: FLUSH_INTERVAL,
                    sweep_every: std::time::Duration::from_secs(c.store_sweep_secs),
                    max_entries: c.store_max_entries,
                });
                Some(semantic::Semantic {
                    embedder,
                    store: VectorStore::Edge(store),
                    verifier: verify::Verifier {
                        max_substitution: c.max_substitution,
                    },
                    similarity: c.similarity,
                    budget: std::time::Duration::from_millis(c.lookup_budget_ms),
                })
            }
        };
        Ok(Some(std::sync::Arc::new(Self {
            exact: exact::ExactTier::new(c.max_entries, c.max_bytes),
            semantic,
            ttl_secs: c.ttl_secs,
            max_temperature: c.max_temperature,
            fail_open: std::sync::atomic::AtomicU64::new(0),
        })))
    }
}
