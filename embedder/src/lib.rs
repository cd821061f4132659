//! In-process sentence embeddings with Candle (issue #3).
//!
//! Empty for now: nothing here is used yet, and nothing pretends to work.
