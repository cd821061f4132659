//! Faithful fake upstream providers for tests, benchmarks and the demo.
//!
//! One [`FakeUpstream`] serves three wire formats on one port, each as its
//! provider documents it:
//!
//! - OpenAI: `POST /v1/chat/completions` (JSON and SSE, tool-call deltas,
//!   `stream_options.include_usage`), `POST /v1/completions`,
//!   `POST /v1/embeddings` (float and base64), `GET /v1/models`;
//!   `Authorization: Bearer` auth.
//! - Azure OpenAI: the same under `/openai/deployments/{deployment}/…` with an
//!   `api-version` query parameter and an `api-key` header.
//! - Anthropic: `POST /v1/messages` (JSON and the typed SSE event stream),
//!   `x-api-key` and `anthropic-version` headers.
//! - The batch APIs: OpenAI's Files and Batches, Anthropic's Message
//!   Batches (see `batches.rs`); a batch's requests run through the
//!   handlers above after [`FakeConfig::batch_delay`].
//!
//! Answers are deterministic: the same request always gets the same answer
//! and different prompts get different answers. One word is one token.
//!
//! Faults are queued with [`FakeUpstream::push_fault`] (or
//! `POST /__fake/faults`) and consumed, one per request, in order: an error
//! status in the provider's own error shape (with `retry-after`), a slow
//! first byte, a connection reset before any response, or a stream dropped
//! mid-way. Requests are recorded (`GET /__fake/requests`) so tests can check
//! exactly what reached the upstream.

mod answer;
mod anthropic;
mod batches;
mod faults;
mod openai;
mod server;
pub mod sim;

pub use faults::Fault;
pub use server::{FakeConfig, FakeUpstream, RecordedRequest};
