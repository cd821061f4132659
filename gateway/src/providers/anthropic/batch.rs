//! Anthropic's Message Batches: `POST /v1/messages/batches` with the
//! translated requests, poll until `processing_status` is `ended`, then
//! read `results_url` (JSONL).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::super::ProviderError;
use super::super::batch::{RemoteItem, RemoteResult, RemoteState, deadlines, error_body};
use super::super::http;
use super::{Anthropic, now_secs, request, response};
use crate::api::types::ChatCompletionRequest;

fn protocol(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(format!("{what}: {e}"))
}

/// The chat request and its translation, or the answer that refuses it.
fn translate(
    body: &Map<String, Value>,
    model: &str,
    default_max_tokens: u32,
) -> Result<request::Translated, RemoteResult> {
    let refuse = |message: String| RemoteResult::Answer {
        status: 400,
        body: error_body(&message, "invalid_request_error"),
    };
    let chat: ChatCompletionRequest = serde_json::from_value(Value::Object(body.clone()))
        .map_err(|e| refuse(format!("Invalid chat request: {e}")))?;
    request::translate(&chat, model, default_max_tokens, false).map_err(|e| refuse(e.to_string()))
}

impl Anthropic {
    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.header("x-api-key", self.scrubber.key().unwrap_or_default())
            .header("anthropic-version", &self.version)
    }

    async fn call(&self, rb: reqwest::RequestBuilder) -> Result<Bytes, ProviderError> {
        let d = deadlines();
        let resp = http::send(self.authed(rb), d, &self.scrubber).await?;
        http::read_body(resp, d).await
    }

    async fn json(&self, rb: reqwest::RequestBuilder, what: &str) -> Result<Value, ProviderError> {
        let body = self.call(rb).await?;
        serde_json::from_slice(&body).map_err(|e| protocol(what, e))
    }

    pub(in crate::providers) async fn batch_submit(
        &self,
        model: &str,
        items: &[RemoteItem],
    ) -> Result<(String, Vec<(String, RemoteResult)>), ProviderError> {
        let mut requests = Vec::with_capacity(items.len());
        let mut refused = Vec::new();
        for it in items {
            match translate(&it.body, model, self.default_max_tokens) {
                Ok(t) => requests.push(json!({"custom_id": it.custom_id, "params": t.body})),
                Err(answer) => refused.push((it.custom_id.clone(), answer)),
            }
        }
        if requests.is_empty() {
            return Err(ProviderError::Unsupported(
                "no request of the batch could be translated".into(),
            ));
        }
        let created = self
            .json(
                self.client
                    .post(format!("{}/batches", self.url))
                    .json(&json!({ "requests": requests })),
                "message batch create",
            )
            .await?;
        let id = created["id"]
            .as_str()
            .ok_or_else(|| protocol("message batch create", "no id"))?;
        Ok((id.to_owned(), refused))
    }

    pub(in crate::providers) async fn batch_poll(
        &self,
        id: &str,
        model: &str,
        items: &HashMap<String, Map<String, Value>>,
    ) -> Result<RemoteState, ProviderError> {
        let batch = self
            .json(
                self.client.get(format!("{}/batches/{id}", self.url)),
                "message batch status",
            )
            .await?;
        if batch["processing_status"].as_str() != Some("ended") {
            return Ok(RemoteState::Running);
        }
        let url = batch["results_url"].as_str().map_or_else(
            || format!("{}/batches/{id}/results", self.url),
            str::to_owned,
        );
        let text = self.call(self.client.get(url)).await?;
        let mut out = Vec::new();
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value =
                serde_json::from_slice(line).map_err(|e| protocol("message batch results", e))?;
            let Some(custom_id) = v["custom_id"].as_str() else {
                continue;
            };
            let r = &v["result"];
            let result = match r["type"].as_str() {
                Some("succeeded") => {
                    // The JSON-tool stand-in for `response_format` is
                    // found again by translating the request again.
                    let json_tool = items
                        .get(custom_id)
                        .and_then(|b| translate(b, model, self.default_max_tokens).ok())
                        .and_then(|t| t.json_tool);
                    let (body, _) = response::to_chat_completion(
                        &r["message"],
                        json_tool.as_deref(),
                        now_secs(),
                    );
                    RemoteResult::Answer {
                        status: 200,
                        body: Bytes::from(body.to_string()),
                    }
                }
                Some("errored") => {
                    let kind = r.pointer("/error/error/type").and_then(Value::as_str);
                    let message = r
                        .pointer("/error/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("error");
                    match kind {
                        Some("invalid_request_error") => RemoteResult::Answer {
                            status: 400,
                            body: error_body(
                                &self.scrubber.scrub(message),
                                "invalid_request_error",
                            ),
                        },
                        other => RemoteResult::Unfinished(other.unwrap_or("error").to_owned()),
                    }
                }
                other => RemoteResult::Unfinished(other.unwrap_or("unknown").to_owned()),
            };
            out.push((custom_id.to_owned(), result));
        }
        Ok(RemoteState::Ended(out))
    }

    pub(in crate::providers) async fn batch_cancel(&self, id: &str) -> Result<(), ProviderError> {
        self.call(
            self.client
                .post(format!("{}/batches/{id}/cancel", self.url)),
        )
        .await
        .map(|_| ())
    }
}
