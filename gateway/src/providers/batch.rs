//! Providers' own batch APIs, for batch items that go external when their
//! batch's deadline leaves time for one: OpenAI's Batch API (a JSONL file
//! uploaded to `/v1/files`, then `/v1/batches`) and Anthropic's Message
//! Batches. Both answer within 24 hours at about half the synchronous
//! price. Requests are sent as the synchronous path would send them (the
//! client's body with `model` replaced; translated for Anthropic), and
//! answers come back in OpenAI's format.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{AnyProvider, Deadlines, Endpoint, ProviderError};

/// One request in a provider batch: our id for it and the client's body.
#[derive(Debug)]
pub struct RemoteItem {
    pub custom_id: String,
    pub body: Map<String, Value>,
}

/// What became of one request of a provider batch.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteResult {
    /// The provider's answer (any status), as an OpenAI-shaped body.
    Answer { status: u16, body: Bytes },
    /// Not answered (expired, cancelled, a provider-side failure): run it
    /// again another way.
    Unfinished(String),
}

/// A provider batch's state.
#[derive(Debug)]
pub enum RemoteState {
    Running,
    /// Ended: the results it has, by custom id. Requests missing here
    /// were not answered.
    Ended(Vec<(String, RemoteResult)>),
}

/// Deadlines for one call to a batch API (uploads and result files can be
/// large).
pub(super) fn deadlines() -> Deadlines {
    let now = tokio::time::Instant::now();
    Deadlines {
        first_byte: now + Duration::from_secs(120),
        total: now + Duration::from_secs(900),
    }
}

/// An OpenAI-shaped error body.
pub(super) fn error_body(message: &str, kind: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
            .to_string(),
    )
}

impl AnyProvider {
    /// Whether this provider has a batch API Switchyard can use (OpenAI's
    /// format at an OpenAI-style base URL, and Anthropic; not Azure).
    pub fn has_batch_api(&self, endpoint: Endpoint) -> bool {
        match self {
            Self::OpenAiCompat(p) => p.has_batch_api(),
            Self::Anthropic(_) => endpoint == Endpoint::ChatCompletions,
        }
    }

    /// Submits `items` as one provider batch for the upstream `model`.
    /// Returns the provider's batch id, and the items refused before
    /// submission (with their final answer).
    pub async fn batch_submit(
        &self,
        endpoint: Endpoint,
        model: &str,
        items: &[RemoteItem],
    ) -> Result<(String, Vec<(String, RemoteResult)>), ProviderError> {
        match self {
            Self::OpenAiCompat(p) => p
                .batch_submit(endpoint, model, items)
                .await
                .map(|id| (id, Vec::new())),
            Self::Anthropic(p) => p.batch_submit(model, items).await,
        }
    }

    /// The provider batch's state; `items` (by custom id) are the bodies
    /// it was made of, for translating answers back.
    pub async fn batch_poll(
        &self,
        id: &str,
        model: &str,
        items: &std::collections::HashMap<String, Map<String, Value>>,
    ) -> Result<RemoteState, ProviderError> {
        match self {
            Self::OpenAiCompat(p) => p.batch_poll(id).await,
            Self::Anthropic(p) => p.batch_poll(id, model, items).await,
        }
    }

    /// Asks the provider to stop a batch (what has finished is kept).
    pub async fn batch_cancel(&self, id: &str) -> Result<(), ProviderError> {
        match self {
            Self::OpenAiCompat(p) => p.batch_cancel(id).await,
            Self::Anthropic(p) => p.batch_cancel(id).await,
        }
    }
}
