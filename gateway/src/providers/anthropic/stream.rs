//! Anthropic's typed SSE events → OpenAI chat completion chunks.

use serde_json::{Value, json};

use super::response::{finish_reason, usage, usage_json};
use crate::providers::ProviderError;

/// Translates one stream, event by event.
pub(super) struct StreamTranslator {
    id: Value,
    model: Value,
    created: u64,
    include_usage: bool,
    json_tool: Option<String>,
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u64,
    /// OpenAI `tool_calls[].index` of the current tool block.
    tool_index: i64,
    /// Whether each content block (by Anthropic index) is the JSON tool.
    block_is_json_tool: Vec<bool>,
    pub(super) done: bool,
}

impl StreamTranslator {
    pub(super) fn new(created: u64, include_usage: bool, json_tool: Option<String>) -> Self {
        Self {
            id: json!("msg"),
            model: Value::Null,
            created,
            include_usage,
            json_tool,
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            tool_index: -1,
            block_is_json_tool: Vec::new(),
            done: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let mut c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    /// The OpenAI chunks for one Anthropic event's `data`.
    pub(super) fn on_event(&mut self, data: &str) -> Result<Vec<Value>, ProviderError> {
        let ev: Value = serde_json::from_str(data)
            .map_err(|e| ProviderError::Protocol(format!("bad Anthropic event: {e}")))?;
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or("");
        Ok(match kind {
            "message_start" => {
                let msg = ev.get("message").unwrap_or(&Value::Null);
                self.id = msg.get("id").cloned().unwrap_or(json!("msg"));
                self.model = msg.get("model").cloned().unwrap_or(Value::Null);
                let (p, _, c) = usage(msg.get("usage").unwrap_or(&Value::Null));
                self.prompt_tokens = p;
                self.cached_tokens = c;
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let block = ev.get("content_block").unwrap_or(&Value::Null);
                let is_tool = block.get("type").and_then(Value::as_str) == Some("tool_use");
                let name = block.get("name").and_then(Value::as_str).unwrap_or("");
                let json_tool = is_tool && self.json_tool.as_deref() == Some(name);
                self.block_is_json_tool.push(json_tool);
                if is_tool && !json_tool {
                    self.tool_index += 1;
                    vec![self.chunk(
                        json!({"tool_calls": [{"index": self.tool_index,
                        "id": block.get("id"), "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                        None,
                    )]
                } else {
                    Vec::new()
                }
            }
            "content_block_delta" => {
                let delta = ev.get("delta").unwrap_or(&Value::Null);
                let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                let json_tool = self.block_is_json_tool.get(index).copied().unwrap_or(false);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        vec![self.chunk(json!({"content": delta.get("text")}), None)]
                    }
                    Some("input_json_delta") if json_tool => {
                        vec![self.chunk(json!({"content": delta.get("partial_json")}), None)]
                    }
                    Some("input_json_delta") => vec![self.chunk(
                        json!({"tool_calls": [{"index": self.tool_index,
                            "function": {"arguments": delta.get("partial_json")}}]}),
                        None,
                    )],
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                let u = ev.get("usage").unwrap_or(&Value::Null);
                if let Some(out) = u.get("output_tokens").and_then(Value::as_u64) {
                    self.completion_tokens = out;
                }
                if u.get("input_tokens").is_some() {
                    let (p, _, c) = usage(u);
                    self.prompt_tokens = p;
                    self.cached_tokens = c;
                }
                match ev.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    Some(stop) => {
                        let finish = finish_reason(stop, self.json_tool.is_some());
                        vec![self.chunk(json!({}), Some(finish))]
                    }
                    None => Vec::new(),
                }
            }
            "message_stop" => {
                self.done = true;
                {
                    let mut c = self.chunk(json!({}), None);
                    c["choices"] = json!([]);
                    c["usage"] = usage_json(
                        self.prompt_tokens,
                        self.completion_tokens,
                        self.cached_tokens,
                    );
                    vec![c]
                }
            }
            "error" => {
                let message = ev
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream stream error");
                return Err(ProviderError::Transport(message.to_owned()));
            }
            _ => Vec::new(), // ping, content_block_stop, and future event types
        })
    }
}
