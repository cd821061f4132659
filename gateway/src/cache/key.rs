//! What a chat request is cached under.
//!
//! - **Scope**: everything that must be identical before two requests may
//!   share an answer at all: the tenant, the model group, every message but
//!   the last (system prompt and conversation so far), and every request
//!   field that can change the answer (tools, `tool_choice`,
//!   `response_format`, `temperature`, `top_p`, `n`, `seed`, `stop`,
//!   penalties, `logprobs`, and any field this gateway does not know, which
//!   counts as answer-changing until shown otherwise), with `max_tokens` and
//!   `max_completion_tokens` in power-of-two buckets. Only `stream`,
//!   `stream_options`, `user` and `model` are left out (the model group is
//!   in). JSON is canonicalised first, so field order and whitespace do not
//!   matter. A lookup never leaves its scope, so another tenant's answer
//!   cannot be found: the tenant is part of the hash.
//! - **Text**: the last message, which must be a user turn of text: what the
//!   semantic tier embeds and compares.
//! - **Exact key**: scope and the canonical last message, hashed.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::types::{ChatCompletionRequest, ChatMessage, Content};

/// A request's cache identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// SHA-256 (hex) of the scope.
    pub scope: String,
    /// The last user turn's text.
    pub text: String,
    /// SHA-256 (hex) of the scope and the canonical last message.
    pub exact: String,
}

/// Why a request is not cached.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotCacheable {
    #[error("temperature {0} is above the cache's ceiling of {1}")]
    Temperature(f64, f64),
    #[error("the last message is not a user turn")]
    LastTurnNotUser,
    #[error("the last message has non-text parts")]
    NonTextContent,
    #[error("the last message has no text")]
    EmptyText,
}

/// Request fields that do not change the answer.
const IGNORED: &[&str] = &["model", "messages", "stream", "stream_options", "user"];
/// Fields kept in power-of-two buckets.
const BUCKETED: &[&str] = &["max_tokens", "max_completion_tokens"];

/// `value` with every object's keys sorted, serialised compactly.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::with_capacity(map.len());
                for k in keys {
                    out.insert(k.clone(), sorted(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixed, so no two different part lists hash alike.
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The smallest power of two ≥ `n` (1 for 0).
fn bucket(n: u64) -> u64 {
    n.max(1).next_power_of_two()
}

/// The cache identity of a chat request.
///
/// `body` is the request as received; `chat` its typed view; `max_temperature`
/// the highest temperature still cached (an unset temperature is taken as
/// the API's default, 1).
pub fn chat_key(
    tenant: &str,
    group: &str,
    body: &Map<String, Value>,
    chat: &ChatCompletionRequest,
    max_temperature: f64,
) -> Result<CacheKey, NotCacheable> {
    let temperature = chat.temperature.unwrap_or(1.0);
    if temperature > max_temperature {
        return Err(NotCacheable::Temperature(temperature, max_temperature));
    }
    let text = match chat.messages.last() {
        Some(ChatMessage::User { content }) => {
            if let Content::Parts(parts) = content
                && parts
                    .iter()
                    .any(|p| !matches!(p, crate::api::types::ContentPart::Text { .. }))
            {
                return Err(NotCacheable::NonTextContent);
            }
            content.text()
        }
        _ => return Err(NotCacheable::LastTurnNotUser),
    };
    if text.trim().is_empty() {
        return Err(NotCacheable::EmptyText);
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (last, prefix) = match messages.split_last() {
        Some((last, prefix)) => (last.clone(), Value::Array(prefix.to_vec())),
        None => return Err(NotCacheable::LastTurnNotUser),
    };
    let mut params = Map::new();
    for (k, v) in body {
        if IGNORED.contains(&k.as_str()) {
            continue;
        }
        let v = match (BUCKETED.contains(&k.as_str()), v.as_u64()) {
            (true, Some(n)) => Value::from(bucket(n)),
            _ => v.clone(),
        };
        params.insert(k.clone(), v);
    }
    let scope = sha256_hex(&[
        "switchyard-cache-scope-v1",
        tenant,
        group,
        &canonical_json(&prefix),
        &canonical_json(&Value::Object(params)),
    ]);
    let exact = sha256_hex(&[&scope, &canonical_json(&last)]);
    Ok(CacheKey { scope, text, exact })
}

#[cfg(test)]
mod tests;
