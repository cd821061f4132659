//! OpenAI's Batch API: upload the requests as a JSONL file
//! (`purpose=batch`), create a batch with a 24-hour window, poll it, read
//! its output and error files.

use bytes::Bytes;
use serde_json::{Value, json};

use super::super::batch::{RemoteItem, RemoteResult, RemoteState, deadlines};
use super::super::http;
use super::super::{Endpoint, ProviderError};
use super::{Flavor, OpenAiCompat, WithModel};

fn protocol(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(format!("{what}: {e}"))
}

impl OpenAiCompat {
    pub(in crate::providers) fn has_batch_api(&self) -> bool {
        matches!(self.flavor, Flavor::OpenAi)
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.scrubber.key() {
            Some(key) => rb.bearer_auth(key),
            None => rb,
        }
    }

    async fn json(&self, rb: reqwest::RequestBuilder, what: &str) -> Result<Value, ProviderError> {
        let d = deadlines();
        let resp = http::send(self.authed(rb), d, &self.scrubber).await?;
        let body = http::read_body(resp, d).await?;
        serde_json::from_slice(&body).map_err(|e| protocol(what, e))
    }

    pub(in crate::providers) async fn batch_submit(
        &self,
        endpoint: Endpoint,
        model: &str,
        items: &[RemoteItem],
    ) -> Result<String, ProviderError> {
        let url = format!("/v1{}", endpoint.path());
        let mut file = Vec::new();
        for it in items {
            let line = json!({
                "custom_id": it.custom_id,
                "method": "POST",
                "url": url,
                "body": WithModel { body: &it.body, model, force_usage: false },
            });
            serde_json::to_writer(&mut file, &line).map_err(|e| protocol("batch file", e))?;
            file.push(b'\n');
        }
        let part = reqwest::multipart::Part::bytes(file)
            .file_name("switchyard-batch.jsonl")
            .mime_str("application/jsonl")
            .map_err(|e| protocol("batch file", e))?;
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part("file", part);
        let uploaded = self
            .json(
                self.client
                    .post(format!("{}/files", self.base_url))
                    .multipart(form),
                "file upload",
            )
            .await?;
        let file_id = uploaded["id"]
            .as_str()
            .ok_or_else(|| protocol("file upload", "no id"))?;
        let created = self
            .json(
                self.client
                    .post(format!("{}/batches", self.base_url))
                    .json(&json!({
                        "input_file_id": file_id,
                        "endpoint": url,
                        "completion_window": "24h",
                        "metadata": {"created_by": "switchyard"},
                    })),
                "batch create",
            )
            .await?;
        created["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| protocol("batch create", "no id"))
    }

    pub(in crate::providers) async fn batch_poll(
        &self,
        id: &str,
    ) -> Result<RemoteState, ProviderError> {
        let batch = self
            .json(
                self.client.get(format!("{}/batches/{id}", self.base_url)),
                "batch status",
            )
            .await?;
        match batch["status"].as_str() {
            Some("completed" | "failed" | "expired" | "cancelled") => {}
            Some(_) => return Ok(RemoteState::Running),
            None => return Err(protocol("batch status", "no status")),
        }
        let mut out = Vec::new();
        for field in ["output_file_id", "error_file_id"] {
            let Some(file) = batch[field].as_str() else {
                continue;
            };
            let d = deadlines();
            let rb = self
                .client
                .get(format!("{}/files/{file}/content", self.base_url));
            let resp = http::send(self.authed(rb), d, &self.scrubber).await?;
            let text = http::read_body(resp, d).await?;
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: Value =
                    serde_json::from_slice(line).map_err(|e| protocol("batch results", e))?;
                let Some(custom_id) = v["custom_id"].as_str() else {
                    continue;
                };
                let result = match (v["response"].as_object(), v["error"].as_object()) {
                    (Some(r), _) => RemoteResult::Answer {
                        status: r
                            .get("status_code")
                            .and_then(Value::as_u64)
                            .and_then(|s| u16::try_from(s).ok())
                            .unwrap_or(502),
                        body: Bytes::from(
                            r.get("body").cloned().unwrap_or(Value::Null).to_string(),
                        ),
                    },
                    (None, Some(e)) => RemoteResult::Unfinished(
                        e.get("code")
                            .and_then(Value::as_str)
                            .unwrap_or("error")
                            .to_owned(),
                    ),
                    (None, None) => RemoteResult::Unfinished("no response".into()),
                };
                out.push((custom_id.to_owned(), result));
            }
        }
        Ok(RemoteState::Ended(out))
    }

    pub(in crate::providers) async fn batch_cancel(&self, id: &str) -> Result<(), ProviderError> {
        self.json(
            self.client
                .post(format!("{}/batches/{id}/cancel", self.base_url)),
            "batch cancel",
        )
        .await
        .map(|_| ())
    }
}
