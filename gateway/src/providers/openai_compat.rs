//! OpenAI's wire format, spoken by OpenAI and every OpenAI-compatible server
//! (vLLM, SGLang, TGI, Ollama, llama.cpp, Groq, Together, DeepSeek,
//! Mistral), plus Azure OpenAI's variations (deployment in the path,
//! `api-version` query parameter, `api-key` header).
//!
//! The client's body is forwarded as it came, with only `model` replaced, so
//! fields the gateway does not know reach the upstream untouched.

mod batch;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use secrecy::SecretString;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};
use tokio::time::timeout_at;

use super::http::{self, Scrubber};
use super::{
    ChunkStream, Deadlines, Endpoint, Provider, ProviderError, TimeoutPhase, UpstreamReply,
    UpstreamRequest, Usage,
};

/// How requests are addressed and authenticated.
#[derive(Debug, Clone)]
enum Flavor {
    /// `{base_url}/chat/completions`, `Authorization: Bearer`.
    OpenAi,
    /// `{base_url}/openai/deployments/{model}/…?api-version=…`, `api-key`.
    Azure { api_version: String },
}

/// An OpenAI-compatible upstream.
#[derive(Debug)]
pub struct OpenAiCompat {
    client: reqwest::Client,
    base_url: String,
    flavor: Flavor,
    scrubber: Scrubber,
}

impl OpenAiCompat {
    pub fn openai(client: reqwest::Client, base_url: &str, key: Option<SecretString>) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            flavor: Flavor::OpenAi,
            scrubber: Scrubber::new(key),
        }
    }

    pub fn azure(
        client: reqwest::Client,
        base_url: &str,
        key: SecretString,
        api_version: &str,
    ) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            flavor: Flavor::Azure {
                api_version: api_version.to_owned(),
            },
            scrubber: Scrubber::new(Some(key)),
        }
    }

    fn request(&self, endpoint: Endpoint, model: &str) -> reqwest::RequestBuilder {
        match &self.flavor {
            Flavor::OpenAi => {
                let rb = self
                    .client
                    .post(format!("{}{}", self.base_url, endpoint.path()));
                match self.scrubber.key() {
                    Some(key) => rb.bearer_auth(key),
                    None => rb,
                }
            }
            Flavor::Azure { api_version } => {
                let url = format!(
                    "{}/openai/deployments/{}{}",
                    self.base_url,
                    model,
                    endpoint.path()
                );
                self.client
                    .post(url)
                    .query(&[("api-version", api_version)])
                    .header("api-key", self.scrubber.key().unwrap_or_default())
            }
        }
    }
}

/// The client's body with `model` replaced (and, for `force_usage`,
/// `stream_options.include_usage` set), serialized without copying it.
struct WithModel<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
    force_usage: bool,
}

impl Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.body {
            if k == "model" {
                map.serialize_entry(k, self.model)?;
            } else if k == "stream_options" && self.force_usage {
                continue;
            } else {
                map.serialize_entry(k, v)?;
            }
        }
        if self.force_usage {
            let mut options = self
                .body
                .get("stream_options")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            options.insert("include_usage".into(), Value::Bool(true));
            map.serialize_entry("stream_options", &options)?;
        }
        map.end()
    }
}

#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Usage>,
}

impl Provider for OpenAiCompat {
    async fn send(
        &self,
        req: &UpstreamRequest<'_>,
        model: &str,
        deadlines: Deadlines,
    ) -> Result<UpstreamReply, ProviderError> {
        let body = serde_json::to_vec(&WithModel {
            body: req.body,
            model,
            force_usage: req.force_usage && req.stream,
        })
        .map_err(|e| ProviderError::Protocol(e.to_string()))?;
        let request = self
            .request(req.endpoint, model)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-request-id", req.request_id)
            .body(body);
        let resp = http::send(request, deadlines, &self.scrubber).await?;
        if !req.stream {
            let body = http::read_body(resp, deadlines).await?;
            let usage = serde_json::from_slice::<UsageOnly>(&body)
                .map_err(|e| ProviderError::Protocol(format!("upstream body is not JSON: {e}")))?
                .usage;
            return Ok(UpstreamReply::Complete { body, usage });
        }
        Ok(UpstreamReply::Stream(sse_chunks(
            resp,
            deadlines,
            self.scrubber.clone(),
        )))
    }
}

/// The `data:` payloads of an OpenAI SSE stream, ending at `[DONE]`. A
/// stream that stops before `[DONE]`, or carries an `error` object, ends
/// with an error.
fn sse_chunks(resp: reqwest::Response, deadlines: Deadlines, scrubber: Scrubber) -> ChunkStream {
    let events = resp.bytes_stream().eventsource();
    let stream = futures_util::stream::unfold(Some(events), move |state| {
        let scrubber = scrubber.clone();
        async move {
            let mut events = state?;
            loop {
                let next = match timeout_at(deadlines.total, events.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        return Some((Err(ProviderError::Timeout(TimeoutPhase::Total)), None));
                    }
                };
                return match next {
                    Some(Ok(ev)) if ev.data.is_empty() => continue,
                    Some(Ok(ev)) if ev.data.trim() == "[DONE]" => None,
                    Some(Ok(ev)) if ev.data.starts_with("{\"error\"") => {
                        let message = serde_json::from_str::<Value>(&ev.data)
                            .ok()
                            .and_then(|v| {
                                v.pointer("/error/message")
                                    .and_then(Value::as_str)
                                    .map(str::to_owned)
                            })
                            .unwrap_or_else(|| "upstream reported an error".into());
                        Some((
                            Err(ProviderError::Transport(scrubber.scrub(&message))),
                            None,
                        ))
                    }
                    Some(Ok(ev)) => Some((Ok(Bytes::from(ev.data)), Some(events))),
                    Some(Err(e)) => Some((
                        Err(ProviderError::Transport(scrubber.scrub(&e.to_string()))),
                        None,
                    )),
                    None => Some((
                        Err(ProviderError::Protocol(
                            "upstream stream ended before [DONE]".into(),
                        )),
                        None,
                    )),
                };
            }
        }
    });
    Box::pin(stream)
}
