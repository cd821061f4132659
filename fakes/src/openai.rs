//! The OpenAI (and Azure OpenAI) wire format, as documented in OpenAI's API
//! reference: chat completions, completions, embeddings, models.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, Response, StatusCode, Uri};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::answer::{answer_words, content_text, count_tokens, embedding, tool_arguments};
use crate::faults::Fault;
use crate::server::{
    FakeState, json_or_truncated, json_response, new_id, now_secs, sse_response, with_retry_after,
};

/// OpenAI's error body with the given status.
fn error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

/// The error an injected `Status` fault produces, worded as OpenAI words it.
fn fault_error(status: u16, retry_after: Option<u64>, message: Option<&str>) -> Response<Body> {
    let (default, kind, code) = match status {
        401 => (
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        429 => (
            "Rate limit reached for requests",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        400..=499 => ("Invalid request.", "invalid_request_error", None),
        _ => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
    };
    with_retry_after(
        error(status, message.unwrap_or(default), kind, code),
        retry_after,
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn unauthorized(presented: Option<&str>) -> Response<Body> {
    // OpenAI echoes a masked form of the key it rejected.
    let masked = presented
        .map(|k| {
            let head: String = k.chars().take(4).collect();
            let tail: String = k
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("{head}****{tail}")
        })
        .unwrap_or_default();
    error(
        401,
        &format!(
            "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
        ),
        "invalid_request_error",
        Some("invalid_api_key"),
    )
}

/// Common prologue: record, authenticate, apply a status fault, parse JSON.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, returned at once"
)]
fn prologue(
    st: &FakeState,
    fault: Option<&Fault>,
    uri: &Uri,
    headers: &HeaderMap,
    key: Option<&str>,
    body: &Bytes,
) -> Result<Value, Response<Body>> {
    st.record(uri, headers, body);
    if !st.key_ok(key) {
        return Err(unauthorized(key));
    }
    if let Some(Fault::Status {
        status,
        retry_after_secs,
        message,
    }) = fault
    {
        return Err(fault_error(*status, *retry_after_secs, message.as_deref()));
    }
    serde_json::from_slice(body).map_err(|_| {
        error(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)",
            "invalid_request_error",
            None,
        )
    })
}

type FaultExt = Option<Extension<Fault>>;

pub(crate) async fn chat(
    State(st): State<Arc<FakeState>>,
    fault: FaultExt,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let fault = fault.map(|Extension(f)| f);
    match prologue(&st, fault.as_ref(), &uri, &headers, bearer(&headers), &body) {
        Ok(req) => chat_common(&st, fault.as_ref(), &req),
        Err(resp) => resp,
    }
}

pub(crate) async fn azure_chat(
    State(st): State<Arc<FakeState>>,
    fault: FaultExt,
    Path(_deployment): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let fault = fault.map(|Extension(f)| f);
    let key = headers.get("api-key").and_then(|v| v.to_str().ok());
    match prologue(&st, fault.as_ref(), &uri, &headers, key, &body) {
        Ok(_) if !q.contains_key("api-version") => error(
            404,
            "Resource not found",
            "invalid_request_error",
            Some("404"),
        ),
        Ok(req) => chat_common(&st, fault.as_ref(), &req),
        Err(resp) => resp,
    }
}

/// Which tool to call, if the request makes the model call one.
fn chosen_tool<'a>(req: &'a Value, last_role: &str) -> Option<&'a Value> {
    let tools = req.get("tools")?.as_array()?;
    let choice = req.get("tool_choice");
    if last_role != "user" || choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let wanted = choice
        .and_then(|c| c.get("function"))
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str);
    tools.iter().find(|t| match wanted {
        Some(name) => t.pointer("/function/name").and_then(Value::as_str) == Some(name),
        None => true,
    })
}

fn chat_common(st: &FakeState, fault: Option<&Fault>, req: &Value) -> Response<Body> {
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return error(
            400,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
        );
    };
    let Some(messages) = req
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return error(
            400,
            "[] is too short - 'messages'",
            "invalid_request_error",
            None,
        );
    };
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| count_tokens(&content_text(m.get("content").unwrap_or(&Value::Null))))
        .sum();
    let last = messages.last().unwrap_or(&Value::Null);
    let last_role = last.get("role").and_then(Value::as_str).unwrap_or("");
    let last_text = content_text(last.get("content").unwrap_or(&Value::Null));
    let prompt = if last_role == "tool" {
        format!("tool result {last_text}")
    } else {
        last_text.clone()
    };
    let max_tokens = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64);
    let n = req.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    let tool = chosen_tool(req, last_role).map(|t| {
        let name = t
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or("tool");
        let args = tool_arguments(t.pointer("/function/parameters"), &last_text).to_string();
        (name.to_owned(), args)
    });
    let (words, cut) = answer_words(&prompt, max_tokens);
    let finish = if tool.is_some() {
        "tool_calls"
    } else if cut {
        "length"
    } else {
        "stop"
    };
    let completion_tokens = if let Some((_, args)) = &tool {
        count_tokens(args).max(1) * n
    } else {
        words.len() as u64 * n
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    });
    let id = new_id("chatcmpl-");
    let created = now_secs();
    let streaming = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !streaming {
        let choices: Vec<Value> = (0..n)
            .map(|i| {
                let message = match &tool {
                    Some((name, args)) => json!({
                        "role": "assistant", "content": null, "refusal": null,
                        "tool_calls": [{"id": format!("call_{i}_{id}"), "type": "function",
                                        "function": {"name": name, "arguments": args}}],
                    }),
                    None => {
                        json!({"role": "assistant", "content": words.join(" "), "refusal": null})
                    }
                };
                json!({"index": i, "message": message, "logprobs": null, "finish_reason": finish})
            })
            .collect();
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": "fp_switchyard_fake", "choices": choices, "usage": usage,
        });
        return json_or_truncated(fault, &body);
    }
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunk = |choices: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_switchyard_fake", "choices": choices,
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut events = Vec::new();
    for i in 0..n {
        match &tool {
            Some((name, args)) => {
                events.push(chunk(
                    json!([{"index": i, "delta": {"role": "assistant", "content": null,
                    "tool_calls": [{"index": 0, "id": format!("call_{i}_{id}"), "type": "function",
                                    "function": {"name": name, "arguments": ""}}]},
                    "logprobs": null, "finish_reason": null}]),
                ));
                let chars: Vec<char> = args.chars().collect();
                for piece in chars.chunks(8) {
                    let piece: String = piece.iter().collect();
                    events.push(chunk(json!([{"index": i, "delta": {"tool_calls": [{"index": 0,
                        "function": {"arguments": piece}}]}, "logprobs": null, "finish_reason": null}])));
                }
            }
            None => {
                events.push(chunk(json!([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": null},
                    "logprobs": null, "finish_reason": null}])));
                for (k, w) in words.iter().enumerate() {
                    let text = if k == 0 { w.clone() } else { format!(" {w}") };
                    events.push(chunk(json!([{"index": i, "delta": {"content": text},
                        "logprobs": null, "finish_reason": null}])));
                }
            }
        }
        events.push(chunk(
            json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": finish}]),
        ));
    }
    if include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage;
        events.push(last);
    }
    let mut frames: Vec<Bytes> = events
        .into_iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse_response(frames, st.config.token_delay, fault)
}

pub(crate) async fn completions(
    State(st): State<Arc<FakeState>>,
    fault: FaultExt,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let fault = fault.map(|Extension(f)| f);
    let req = match prologue(&st, fault.as_ref(), &uri, &headers, bearer(&headers), &body) {
        Ok(req) => req,
        Err(resp) => return resp,
    };
    let model = req.get("model").and_then(Value::as_str).unwrap_or("fake");
    let prompt = content_text(req.get("prompt").unwrap_or(&Value::Null));
    let max_tokens = req.get("max_tokens").and_then(Value::as_u64).or(Some(16));
    let (words, cut) = answer_words(&prompt, max_tokens);
    let finish = if cut { "length" } else { "stop" };
    let prompt_tokens = count_tokens(&prompt);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": words.len(),
                       "total_tokens": prompt_tokens + words.len() as u64});
    let id = new_id("cmpl-");
    let created = now_secs();
    if !req.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let body = json!({"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": words.join(" "), "index": 0, "logprobs": null, "finish_reason": finish}],
            "usage": usage});
        return json_or_truncated(fault.as_ref(), &body);
    }
    let mut frames: Vec<Bytes> = words
        .iter()
        .enumerate()
        .map(|(k, w)| {
            let text = if k == 0 { w.clone() } else { format!(" {w}") };
            let c = json!({"id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": null}]});
            Bytes::from(format!("data: {c}\n\n"))
        })
        .collect();
    let fin = json!({"id": id, "object": "text_completion", "created": created, "model": model,
        "choices": [{"text": "", "index": 0, "logprobs": null, "finish_reason": finish}]});
    frames.push(Bytes::from(format!("data: {fin}\n\n")));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse_response(frames, st.config.token_delay, fault.as_ref())
}

pub(crate) async fn embeddings(
    State(st): State<Arc<FakeState>>,
    fault: FaultExt,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let fault = fault.map(|Extension(f)| f);
    match prologue(&st, fault.as_ref(), &uri, &headers, bearer(&headers), &body) {
        Ok(req) => embeddings_common(fault.as_ref(), &req),
        Err(resp) => resp,
    }
}

pub(crate) async fn azure_embeddings(
    State(st): State<Arc<FakeState>>,
    fault: FaultExt,
    Path(_deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let fault = fault.map(|Extension(f)| f);
    let key = headers.get("api-key").and_then(|v| v.to_str().ok());
    match prologue(&st, fault.as_ref(), &uri, &headers, key, &body) {
        Ok(req) => embeddings_common(fault.as_ref(), &req),
        Err(resp) => resp,
    }
}

fn embeddings_common(fault: Option<&Fault>, req: &Value) -> Response<Body> {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-embedding");
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![Value::Array(items.clone()).to_string()]
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect(),
        _ => {
            return error(
                400,
                "'input' is a required property",
                "invalid_request_error",
                None,
            );
        }
    };
    let dims = req.get("dimensions").and_then(Value::as_u64).unwrap_or(8) as usize;
    let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = embedding(text, dims);
            let emb = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|t| count_tokens(t)).sum();
    let body = json!({"object": "list", "data": data, "model": model,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    json_or_truncated(fault, &body)
}

pub(crate) async fn models() -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [
            {"id": "fake-model", "object": "model", "created": 0, "owned_by": "switchyard-fake"}
        ]}),
    )
}
