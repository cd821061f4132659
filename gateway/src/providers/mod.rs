//! Upstream providers, one module per wire format, behind [`Provider`].
//!
//! Every provider speaks OpenAI's format to the rest of the gateway: it takes
//! the client's OpenAI-shaped request and returns an OpenAI-shaped body or a
//! stream of OpenAI chunk payloads. Adding a wire format (Gemini, say) means
//! one new module, one [`AnyProvider`] variant and one config variant.

pub mod anthropic;
pub mod batch;
mod error;
mod http;
pub mod openai_compat;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::api::types::ChatCompletionRequest;
use crate::config::{ConfigError, ProviderConfig, TimeoutConfig};

pub use error::{ProviderError, TimeoutPhase};

/// Which OpenAI endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// Path under an OpenAI-style `/v1` base URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }
}

/// One request to send upstream.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamRequest<'a> {
    pub endpoint: Endpoint,
    /// The client's body, exactly as received.
    pub body: &'a Map<String, Value>,
    /// The typed view, for chat requests.
    pub chat: Option<&'a ChatCompletionRequest>,
    pub stream: bool,
    pub request_id: &'a str,
    /// Ask the upstream for a final usage chunk (`stream_options.
    /// include_usage`) though the client did not: the gateway needs the
    /// counts, and strips that chunk from the client's stream.
    pub force_usage: bool,
}

/// When one attempt must have produced its first byte, and finished.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub first_byte: Instant,
    pub total: Instant,
}

impl Deadlines {
    pub fn from_now(t: &TimeoutConfig) -> Self {
        let now = Instant::now();
        Self {
            first_byte: now + std::time::Duration::from_millis(t.ttft_ms),
            total: now + std::time::Duration::from_millis(t.total_ms),
        }
    }
}

/// Token counts reported by the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// `prompt_tokens_details.cached_tokens`: prompt tokens the upstream
    /// served from its prefix cache.
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

/// A stream of OpenAI chunk payloads (the JSON after `data: `). It ends
/// without error only when the upstream finished the stream properly.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send>>;

/// A successful upstream answer, in OpenAI's format.
pub enum UpstreamReply {
    /// A complete JSON body.
    Complete { body: Bytes, usage: Option<Usage> },
    /// Streamed chunks.
    Stream(ChunkStream),
}

impl std::fmt::Debug for UpstreamReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete { usage, .. } => write!(f, "Complete({usage:?})"),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// An upstream wire format.
pub trait Provider: Send + Sync {
    /// Send `req` for the upstream model `model`, within `deadlines`.
    fn send(
        &self,
        req: &UpstreamRequest<'_>,
        model: &str,
        deadlines: Deadlines,
    ) -> impl Future<Output = Result<UpstreamReply, ProviderError>> + Send;
}

/// The configured providers, dispatched statically.
#[derive(Debug)]
pub enum AnyProvider {
    OpenAiCompat(openai_compat::OpenAiCompat),
    Anthropic(anthropic::Anthropic),
}

impl AnyProvider {
    /// Build from config, resolving secrets through `env`.
    pub fn from_config(
        name: &str,
        config: &ProviderConfig,
        timeouts: &TimeoutConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let client = http::client(timeouts)
            .map_err(|e| ConfigError(format!("providers.{name}: cannot build HTTP client: {e}")))?;
        let secret = |field: &str, s: &crate::config::SecretRef| {
            s.resolve(env)
                .map_err(|e| ConfigError(format!("providers.{name}.{field}: {e}")))
        };
        Ok(match config {
            ProviderConfig::OpenaiCompat {
                base_url, api_key, ..
            } => {
                let key = api_key.as_ref().map(|k| secret("api_key", k)).transpose()?;
                Self::OpenAiCompat(openai_compat::OpenAiCompat::openai(client, base_url, key))
            }
            ProviderConfig::AzureOpenai {
                base_url,
                api_key,
                api_version,
            } => {
                let key = secret("api_key", api_key)?;
                Self::OpenAiCompat(openai_compat::OpenAiCompat::azure(
                    client,
                    base_url,
                    key,
                    api_version,
                ))
            }
            ProviderConfig::Anthropic {
                base_url,
                api_key,
                anthropic_version,
                default_max_tokens,
            } => {
                let key = secret("api_key", api_key)?;
                Self::Anthropic(anthropic::Anthropic::new(
                    client,
                    base_url,
                    key,
                    anthropic_version,
                    *default_max_tokens,
                ))
            }
        })
    }

    /// Whether this provider can serve `endpoint` at all.
    pub fn supports(&self, endpoint: Endpoint) -> bool {
        match self {
            Self::OpenAiCompat(_) => true,
            Self::Anthropic(_) => endpoint == Endpoint::ChatCompletions,
        }
    }
}

impl Provider for AnyProvider {
    async fn send(
        &self,
        req: &UpstreamRequest<'_>,
        model: &str,
        deadlines: Deadlines,
    ) -> Result<UpstreamReply, ProviderError> {
        match self {
            Self::OpenAiCompat(p) => p.send(req, model, deadlines).await,
            Self::Anthropic(p) => p.send(req, model, deadlines).await,
        }
    }
}
