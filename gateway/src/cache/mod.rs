//! The response cache (issue #4), being built in steps.
//!
//! Done so far: [`store`], the semantic tier's vector store on an embedded
//! qdrant-edge shard, with scope isolation enforced inside the store. Not yet
//! built: the exact tier, scope keys from requests, verification of semantic
//! candidates, the request path and its controls, and the Qdrant-server
//! store. Nothing in the request path uses the cache yet.

pub mod store;

pub use store::{EdgeStore, Entry, Neighbour, StoreError, VectorStore};
