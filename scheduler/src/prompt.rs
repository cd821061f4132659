//! A request's shape as the scheduler sees it: prompt tokens and the hashes
//! of its prefix blocks, computed from the OpenAI request body.
//!
//! The gateway cannot run every upstream's tokenizer, so it estimates
//! [`CHARS_PER_TOKEN`] bytes of text per token (OpenAI's rule of thumb for
//! English); the learned slowness of each backend absorbs the estimate's
//! bias. Blocks are [`BLOCK_TOKENS`] tokens of rendered prompt, each hash
//! chained to the one before it as vLLM chains its block hashes, so equal
//! leading hashes mean an equal prefix. Only full blocks are hashed.
//!
//! `switchyard sim` computes a prompt's shape with these same functions, so
//! its simulated prefix cache and the gateway's guess of it agree; a real
//! engine's tokenizer will cut blocks elsewhere, which only makes the
//! gateway's affinity guess coarser, never wrong about which backend saw a
//! prompt.

use serde_json::{Map, Value};

use crate::engine::BLOCK_TOKENS;

/// Estimated bytes of text per token.
pub const CHARS_PER_TOKEN: usize = 4;

/// Prompt tokens and prefix-block hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub tokens: u32,
    pub blocks: Vec<u64>,
}

/// The shape of a rendered prompt text.
pub fn from_text(text: &str) -> Shape {
    let bytes = text.as_bytes();
    let tokens = bytes.len().div_ceil(CHARS_PER_TOKEN).max(1);
    let block_bytes = BLOCK_TOKENS as usize * CHARS_PER_TOKEN;
    let mut prev = FNV_OFFSET;
    let blocks = bytes
        .chunks_exact(block_bytes)
        .map(|chunk| {
            prev = fnv1a(fnv1a(FNV_OFFSET, &prev.to_le_bytes()), chunk);
            prev
        })
        .collect();
    Shape {
        tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
        blocks,
    }
}

/// The shape of a chat-completions or completions request body: tools
/// first, then each message's role and text (as chat templates lay them
/// out), or the completion prompt.
pub fn from_request(body: &Map<String, Value>) -> Shape {
    from_text(&render(body))
}

/// The request's output limit: `max_completion_tokens`, else `max_tokens`.
pub fn max_output_tokens(body: &Map<String, Value>) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
}

/// The prompt text a request's shape is computed from.
pub fn render(body: &Map<String, Value>) -> String {
    let mut out = String::new();
    if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
        out.push_str(&tools.to_string());
        out.push('\n');
    }
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            out.push_str(role);
            out.push('\n');
            if let Some(c) = m.get("content") {
                push_content(&mut out, c);
            }
            if let Some(calls) = m.get("tool_calls") {
                out.push_str(&calls.to_string());
            }
            out.push('\n');
        }
    }
    match body.get("prompt") {
        Some(Value::String(s)) => out.push_str(s),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => out.push_str(s),
                    // Token ids: one token each, rendered as a placeholder of
                    // the estimated width.
                    Value::Number(_) => out.push_str("    "),
                    other => out.push_str(&other.to_string()),
                }
            }
        }
        _ => {}
    }
    out
}

fn push_content(out: &mut String, content: &Value) {
    match content {
        Value::String(s) => out.push_str(s),
        Value::Array(parts) => {
            for p in parts {
                match p.get("text").and_then(Value::as_str) {
                    Some(t) => out.push_str(t),
                    // Images and audio: a fixed placeholder width.
                    None => out.push_str(&" ".repeat(85 * CHARS_PER_TOKEN)),
                }
            }
        }
        _ => {}
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: stable across builds and versions (unlike `DefaultHasher`), so
/// every gateway and simulator computes the same block hashes.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(system: &str, user: &str) -> Map<String, Value> {
        json!({"model": "m", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]})
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn equal_prefixes_share_leading_blocks_and_differ_after() {
        let system = "You are a careful assistant. ".repeat(200); // ~5,800 bytes
        let a = from_request(&chat(&system, &"first question ".repeat(300)));
        let b = from_request(&chat(&system, &"second query ".repeat(300)));
        let shared = system.len() / (BLOCK_TOKENS as usize * CHARS_PER_TOKEN);
        assert!(shared >= 2);
        assert_eq!(a.blocks[..shared], b.blocks[..shared]);
        assert_ne!(a.blocks[shared], b.blocks[shared]);
        assert_eq!(
            a.tokens as usize,
            render(&chat(&system, &"first question ".repeat(300)))
                .len()
                .div_ceil(4)
        );
    }

    #[test]
    fn a_block_hash_depends_on_everything_before_it() {
        let x = "x".repeat(2048);
        let y = "y".repeat(2048);
        let a = from_text(&format!("{x}{y}"));
        let b = from_text(&format!("{y}{y}"));
        assert_eq!(a.blocks.len(), 2);
        assert_ne!(a.blocks[1], b.blocks[1], "same text, different prefix");
        assert!(from_text("short").blocks.is_empty(), "only full blocks");
        assert_eq!(from_text("").tokens, 1);
    }

    #[test]
    fn completions_prompts_and_content_parts_count() {
        let body = json!({"prompt": ["abcd", 1, 2]})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(from_request(&body).tokens, 3);
        let parts = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "hello"},
            {"type": "image_url", "image_url": {"url": "data:"}}
        ]}]});
        assert!(from_request(parts.as_object().unwrap()).tokens > 85);
    }
}
