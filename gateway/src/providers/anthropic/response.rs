//! Anthropic Messages response → OpenAI chat completion.

use serde_json::{Value, json};

use crate::providers::Usage;

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub(super) fn finish_reason(stop_reason: &str, json_tool: bool) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" if !json_tool => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Token counts from an Anthropic `usage` object; cache reads and writes
/// count as prompt tokens, cache reads also as cached tokens.
pub(super) fn usage(u: &Value) -> (u64, u64, u64) {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    (
        n("input_tokens") + cached + n("cache_creation_input_tokens"),
        n("output_tokens"),
        cached,
    )
}

pub(super) fn usage_json(prompt: u64, completion: u64, cached: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

pub(super) fn to_chat_completion(
    msg: &Value,
    json_tool: Option<&str>,
    created: u64,
) -> (Value, Usage) {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in msg
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or(json!({}));
                let name = block.get("name").and_then(Value::as_str).unwrap_or("");
                if json_tool == Some(name) {
                    text.push_str(&input.to_string());
                } else {
                    tool_calls.push(json!({"id": block.get("id"), "type": "function",
                        "function": {"name": name, "arguments": input.to_string()}}));
                }
            }
            _ => {}
        }
    }
    let stop = msg
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let mut message = json!({"role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let (prompt, completion, cached) = usage(msg.get("usage").unwrap_or(&Value::Null));
    let body = json!({
        "id": msg.get("id").cloned().unwrap_or(json!("msg")),
        "object": "chat.completion",
        "created": created,
        "model": msg.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(stop, json_tool.is_some())}],
        "usage": usage_json(prompt, completion, cached),
    });
    (
        body,
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            prompt_tokens_details: (cached > 0).then_some(crate::providers::PromptTokensDetails {
                cached_tokens: cached,
            }),
        },
    )
}
