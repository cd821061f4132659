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

/// The tenant every request belongs to until virtual keys (issue #8).
pub const DEFAULT_TENANT: &str = "default";

/// The response cache as the request path uses it.
#[derive(Debug)]
pub struct Cache {
    pub exact: exact::ExactTier,
    pub ttl_secs: u64,
    pub max_temperature: f64,
}

impl Cache {
    /// `None` when the cache is disabled.
    pub fn from_config(c: &CacheConfig) -> Option<Self> {
        c.enabled.then(|| Self {
            exact: exact::ExactTier::new(c.max_entries, c.max_bytes),
            ttl_secs: c.ttl_secs,
            max_temperature: c.max_temperature,
        })
    }
}
