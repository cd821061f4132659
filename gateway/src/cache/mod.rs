//! The response cache (issue #4), being built in steps.
//!
//! Done so far: [`store`], the semantic tier's vector store on an embedded
//! qdrant-edge shard, with scope isolation enforced inside the store. Not yet
//! built: the exact tier, scope keys from requests, verification of semantic
//! candidates, the request path and its controls, and the Qdrant-server
//! store. Nothing in the request path uses the cache yet.

pub mod calibrate;
pub mod store;
pub mod verify;

/// The semantic tier's default similarity threshold, used with
/// [`verify::Verifier::default`]: on the cache-eval development pairs this
/// setting hits 62% of same-answer pairs with no false hit (`docs/cache.md`).
pub const DEFAULT_SIMILARITY: f32 = 0.6;

pub use store::{EdgeStore, Entry, Neighbour, StoreError, VectorStore};
