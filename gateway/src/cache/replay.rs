//! Streaming and the cache, both ways:
//! - [`chunks`]: a stored chat completion replayed as the chunk events of a
//!   stream (what an OpenAI stream carries for it), so `stream: true`
//!   requests can hit;
//! - [`Assembler`]: a streamed answer's chunks put back together into the
//!   chat completion body the cache stores, only if it ended normally.

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// The `data:` payloads (without framing or `[DONE]`) that replay the chat
/// completion `body` as a stream: per choice, the role, the content, the
/// tool calls and the finish reason; then, if `include_usage`, a last chunk
/// with no choices and the usage.
pub fn chunks(body: &[u8], include_usage: bool) -> Result<Vec<Bytes>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let choices = v
        .get("choices")
        .and_then(Value::as_array)
        .ok_or("the stored answer has no choices")?;
    let head = |choices: Value, usage: Option<&Value>| -> Bytes {
        let mut chunk = json!({
            "id": v.get("id").cloned().unwrap_or(Value::Null),
            "object": "chat.completion.chunk",
            "created": v.get("created").cloned().unwrap_or(Value::Null),
            "model": v.get("model").cloned().unwrap_or(Value::Null),
            "choices": choices,
        });
        if let Some(fp) = v.get("system_fingerprint") {
            chunk["system_fingerprint"] = fp.clone();
        }
        if include_usage {
            chunk["usage"] = usage.cloned().unwrap_or(Value::Null);
        }
        Bytes::from(chunk.to_string())
    };
    let mut out = Vec::new();
    for (i, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(i));
        let message = choice.get("message").cloned().unwrap_or(json!({}));
        let content = message.get("content").cloned().unwrap_or(Value::Null);
        out.push(head(
            json!([{"index": index, "delta": {"role": "assistant", "content": if content.is_string() { json!("") } else { Value::Null }}, "finish_reason": null}]),
            None,
        ));
        if let Some(text) = content.as_str().filter(|t| !t.is_empty()) {
            out.push(head(
                json!([{"index": index, "delta": {"content": text}, "finish_reason": null}]),
                None,
            ));
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let mut c = c.clone();
                    c["index"] = json!(k);
                    c
                })
                .collect();
            out.push(head(
                json!([{"index": index, "delta": {"tool_calls": calls}, "finish_reason": null}]),
                None,
            ));
        }
        out.push(head(
            json!([{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason").cloned().unwrap_or(Value::Null)}]),
            None,
        ));
    }
    if include_usage {
        out.push(head(json!([]), v.get("usage")));
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct ChoiceParts {
    role: Option<String>,
    content: Option<String>,
    /// By tool-call index: id, type, name, arguments.
    tool_calls: std::collections::BTreeMap<u64, (Value, Value, String, String)>,
    finish_reason: Option<String>,
}

/// Rebuilds a chat completion from its stream chunks.
#[derive(Debug, Default)]
pub struct Assembler {
    head: Option<Map<String, Value>>,
    choices: std::collections::BTreeMap<u64, ChoiceParts>,
    usage: Option<Value>,
    broken: bool,
}

impl Assembler {
    /// One chunk's JSON payload. A chunk that is not a chat completion chunk
    /// makes the whole answer unstorable.
    pub fn push(&mut self, chunk: &[u8]) {
        let Ok(Value::Object(c)) = serde_json::from_slice::<Value>(chunk) else {
            self.broken = true;
            return;
        };
        if c.contains_key("error") {
            self.broken = true;
            return;
        }
        if self.head.is_none() {
            let mut head = Map::new();
            for k in ["id", "created", "model", "system_fingerprint"] {
                if let Some(v) = c.get(k) {
                    head.insert(k.into(), v.clone());
                }
            }
            self.head = Some(head);
        }
        if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        for choice in c
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let parts = self.choices.entry(index).or_default();
            let delta = choice.get("delta").cloned().unwrap_or(Value::Null);
            if let Some(r) = delta.get("role").and_then(Value::as_str) {
                parts.role = Some(r.to_owned());
            }
            if let Some(t) = delta.get("content").and_then(Value::as_str) {
                parts.content.get_or_insert_with(String::new).push_str(t);
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let entry = parts.tool_calls.entry(k).or_insert_with(|| {
                    (Value::Null, json!("function"), String::new(), String::new())
                });
                if let Some(id) = call.get("id").filter(|v| !v.is_null()) {
                    entry.0 = id.clone();
                }
                if let Some(t) = call.get("type").filter(|v| !v.is_null()) {
                    entry.1 = t.clone();
                }
                if let Some(f) = call.get("function") {
                    if let Some(n) = f.get("name").and_then(Value::as_str) {
                        entry.2.push_str(n);
                    }
                    if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                        entry.3.push_str(a);
                    }
                }
            }
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                parts.finish_reason = Some(f.to_owned());
            }
        }
    }

    /// The chat completion body, if the stream made one that ended
    /// normally (every choice finished with stop, length or tool_calls).
    pub fn finish(self) -> Option<Bytes> {
        if self.broken || self.choices.is_empty() {
            return None;
        }
        let mut choices = Vec::new();
        for (index, p) in self.choices {
            let finish = p.finish_reason?;
            if !matches!(finish.as_str(), "stop" | "length" | "tool_calls") {
                return None;
            }
            let mut message = json!({
                "role": p.role.unwrap_or_else(|| "assistant".into()),
                "content": p.content.map_or(Value::Null, Value::from),
            });
            if !p.tool_calls.is_empty() {
                message["tool_calls"] = p
                    .tool_calls
                    .into_values()
                    .map(|(id, kind, name, arguments)| {
                        json!({"id": id, "type": kind, "function": {"name": name, "arguments": arguments}})
                    })
                    .collect();
            }
            choices.push(json!({"index": index, "message": message, "finish_reason": finish}));
        }
        let mut body = self.head.unwrap_or_default();
        body.insert("object".into(), "chat.completion".into());
        body.insert("choices".into(), choices.into());
        if let Some(u) = self.usage {
            body.insert("usage".into(), u);
        }
        Some(Bytes::from(Value::Object(body).to_string()))
    }
}

#[cfg(test)]
mod tests;
