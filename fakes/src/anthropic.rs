//! The Anthropic Messages API wire format, as documented by Anthropic:
//! `POST /v1/messages`, JSON and the typed SSE event stream
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`, `error`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Response, StatusCode, Uri};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::answer::{answer_words, content_text, count_tokens, tool_arguments};
use crate::faults::Fault;
use crate::server::{
    FakeState, json_or_truncated, json_response, new_id, sse_response, with_retry_after,
};

/// Anthropic's error body: `{"type":"error","error":{"type","message"}}`.
fn error(status: u16, kind: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

fn error_kind(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

pub(crate) async fn messages(
    State(st): State<Arc<FakeState>>,
    fault: Option<Extension<Fault>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let fault = fault.map(|Extension(f)| f);
    st.record(&uri, &headers, &body);
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if !st.key_ok(key) {
        return error(401, "authentication_error", "invalid x-api-key");
    }
    if headers.get("anthropic-version").is_none() {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    if let Some(Fault::Status {
        status,
        retry_after_secs,
        message,
    }) = &fault
    {
        let msg = message.clone().unwrap_or_else(|| match status {
            429 => "Number of request tokens has exceeded your per-minute rate limit".into(),
            529 => "Overloaded".into(),
            _ => "Internal server error".into(),
        });
        return with_retry_after(error(*status, error_kind(*status), &msg), *retry_after_secs);
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid_request_error", "Invalid JSON in request body");
    };
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return error(400, "invalid_request_error", "model: Field required");
    };
    let Some(max_tokens) = req.get("max_tokens").and_then(Value::as_u64) else {
        return error(400, "invalid_request_error", "max_tokens: Field required");
    };
    let Some(messages) = req
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return error(
            400,
            "invalid_request_error",
            "messages: at least one message is required",
        );
    };
    if messages
        .first()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        != Some("user")
    {
        return error(
            400,
            "invalid_request_error",
            "messages: first message must use the \"user\" role",
        );
    }
    let system = req.get("system").map(content_text).unwrap_or_default();
    let input_tokens = count_tokens(&system)
        + messages
            .iter()
            .map(|m| count_tokens(&content_text(m.get("content").unwrap_or(&Value::Null))))
            .sum::<u64>();
    let last = messages.last().unwrap_or(&Value::Null);
    let blocks = last.get("content").cloned().unwrap_or(Value::Null);
    let last_is_tool_result = blocks.as_array().is_some_and(|b| {
        b.iter()
            .any(|x| x.get("type").and_then(Value::as_str) == Some("tool_result"))
    });
    let last_text = content_text(&blocks);
    let tool = pick_tool(&req, last_is_tool_result).map(|t| {
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("tool")
            .to_owned();
        (name, tool_arguments(t.get("input_schema"), &last_text))
    });
    let prompt = if last_is_tool_result {
        format!("tool result {last_text}")
    } else {
        last_text.clone()
    };
    let (words, cut) = answer_words(&prompt, Some(max_tokens));
    let stop_reason = if tool.is_some() {
        "tool_use"
    } else if cut {
        "max_tokens"
    } else {
        "end_turn"
    };
    let id = new_id("msg_");
    let tool_id = new_id("toolu_");
    let output_tokens = match &tool {
        Some((_, input)) => count_tokens(&input.to_string()).max(1),
        None => words.len() as u64,
    };
    if !req.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let content = match &tool {
            Some((name, input)) => {
                json!([{"type": "tool_use", "id": tool_id, "name": name, "input": input}])
            }
            None => json!([{"type": "text", "text": words.join(" ")}]),
        };
        let body = json!({"id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}});
        return json_or_truncated(fault.as_ref(), &body);
    }
    let mut events: Vec<(&str, Value)> = vec![(
        "message_start",
        json!({"type": "message_start", "message": {"id": id, "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
    )];
    match &tool {
        Some((name, input)) => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}}),
            ));
            events.push(("ping", json!({"type": "ping"})));
            let text = input.to_string();
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(8) {
                let piece: String = piece.iter().collect();
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
        }
        None => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
            events.push(("ping", json!({"type": "ping"})));
            for (k, w) in words.iter().enumerate() {
                let text = if k == 0 { w.clone() } else { format!(" {w}") };
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}),
                ));
            }
        }
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let frames = events
        .into_iter()
        .map(|(name, data)| Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
        .collect();
    sse_response(frames, st.config.token_delay, fault.as_ref())
}

/// The tool the fake model calls, following `tool_choice`
/// (`auto` / `any` / `tool` / `none`).
fn pick_tool(req: &Value, after_tool_result: bool) -> Option<&Value> {
    let tools = req.get("tools")?.as_array()?;
    let choice = req.get("tool_choice");
    let kind = choice
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("auto");
    if kind == "none" || (after_tool_result && kind == "auto") {
        return None;
    }
    let wanted = choice.and_then(|c| c.get("name")).and_then(Value::as_str);
    tools.iter().find(|t| match wanted {
        Some(name) => t.get("name").and_then(Value::as_str) == Some(name),
        None => true,
    })
}
