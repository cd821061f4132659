//! In-process sentence embeddings (issue #3).
//!
//! - [`Embedder`]: a batch of texts → unit-length vectors of the model's
//!   dimension, with the token count of each text.
//! - [`CandleEmbedder`]: sentence-transformers BERT-family models
//!   (all-MiniLM-L6-v2 by default; bge-small, e5-small, gte-small by config)
//!   on Candle. Pooling and normalisation are read from the model folder's
//!   `modules.json` and `1_Pooling/config.json`, not hard-coded.
//! - [`Batcher`]: coalesces concurrent requests into one forward pass, on a
//!   dedicated thread so inference never blocks the async runtime, behind a
//!   bounded queue that refuses work when full.

mod batcher;
mod bert;
mod candle;
mod cpu;
mod model_dir;
mod packed;

pub use batcher::{Batcher, BatcherConfig};
pub use candle::{CandleEmbedder, DeviceSpec, Precision};
pub use model_dir::{ModelDir, Pooling};
pub use packed::{PackedLinear, WeightFormat};

/// Vectors and token counts for a batch of texts, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of each text that the model read (after truncation), without
    /// the special tokens the tokenizer adds.
    pub token_counts: Vec<usize>,
}

/// What can go wrong embedding.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("model files: {0}")]
    Model(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("inference: {0}")]
    Inference(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The batcher's queue is full; try again later.
    #[error("embedding queue is full")]
    Overloaded,
    /// The batcher's worker is gone (shutting down).
    #[error("embedder is shut down")]
    Closed,
}

/// A sentence embedding model. Calls are synchronous and CPU/GPU-bound:
/// run them off the async runtime (the [`Batcher`] does).
pub trait Embedder: Send + Sync + 'static {
    /// Length of every vector.
    fn dimension(&self) -> usize;
    /// Most tokens read per text (special tokens included); longer texts are
    /// truncated to their first `max_tokens`.
    fn max_tokens(&self) -> usize;
    /// Tokenize texts into complete model inputs (special tokens added,
    /// truncated to `max_tokens`).
    fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, EmbedError>;
    /// Turn caller-supplied token ids into a complete model input: check
    /// every id against the vocabulary, truncate, add special tokens.
    fn wrap_ids(&self, ids: &[u32]) -> Result<Vec<u32>, EmbedError>;
    /// Embed complete model inputs in one forward pass.
    fn embed_ids(&self, sequences: &[Vec<u32>]) -> Result<Embeddings, EmbedError>;
    /// Embed `texts` in one forward pass.
    fn embed(&self, texts: &[String]) -> Result<Embeddings, EmbedError> {
        self.embed_ids(&self.tokenize(texts)?)
    }
}
