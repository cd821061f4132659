//! Anthropic's Messages API (`POST /v1/messages`), translated both ways:
//! requests in [`request`], responses in [`response`], stream events in
//! [`stream`].

mod batch;
mod request;
mod response;
mod stream;

use std::collections::VecDeque;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::Value;
use tokio::time::timeout_at;

use super::http::{self, Scrubber};
use super::{
    ChunkStream, Deadlines, Endpoint, Provider, ProviderError, TimeoutPhase, UpstreamReply,
    UpstreamRequest,
};
use stream::StreamTranslator;

/// An Anthropic upstream.
#[derive(Debug)]
pub struct Anthropic {
    client: reqwest::Client,
    url: String,
    version: String,
    default_max_tokens: u32,
    scrubber: Scrubber,
}

impl Anthropic {
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        key: SecretString,
        version: &str,
        default_max_tokens: u32,
    ) -> Self {
        Self {
            client,
            url: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            version: version.to_owned(),
            default_max_tokens,
            scrubber: Scrubber::new(Some(key)),
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Provider for Anthropic {
    async fn send(
        &self,
        req: &UpstreamRequest<'_>,
        model: &str,
        deadlines: Deadlines,
    ) -> Result<UpstreamReply, ProviderError> {
        let chat = match (req.endpoint, req.chat) {
            (Endpoint::ChatCompletions, Some(chat)) => chat,
            _ => {
                return Err(ProviderError::Unsupported(
                    "Anthropic deployments serve chat completions only".into(),
                ));
            }
        };
        let translated = request::translate(chat, model, self.default_max_tokens, req.stream)?;
        let body = serde_json::to_vec(&translated.body)
            .map_err(|e| ProviderError::Protocol(e.to_string()))?;
        let request = self
            .client
            .post(&self.url)
            .header("x-api-key", self.scrubber.key().unwrap_or_default())
            .header("anthropic-version", &self.version)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let resp = http::send(request, deadlines, &self.scrubber).await?;
        if !req.stream {
            let bytes = http::read_body(resp, deadlines).await?;
            let msg: Value = serde_json::from_slice(&bytes)
                .map_err(|e| ProviderError::Protocol(format!("upstream body is not JSON: {e}")))?;
            let (body, usage) =
                response::to_chat_completion(&msg, translated.json_tool.as_deref(), now_secs());
            return Ok(UpstreamReply::Complete {
                body: Bytes::from(body.to_string()),
                usage: Some(usage),
            });
        }
        let translator =
            StreamTranslator::new(now_secs(), chat.include_usage(), translated.json_tool);
        // The final usage chunk always comes; the gateway strips it when
        // the client did not ask for it.
        Ok(UpstreamReply::Stream(translate_stream(
            resp,
            deadlines,
            translator,
            self.scrubber.clone(),
        )))
    }
}

struct StreamState<S> {
    events: S,
    translator: StreamTranslator,
    pending: VecDeque<Value>,
}

fn translate_stream(
    resp: reqwest::Response,
    deadlines: Deadlines,
    translator: StreamTranslator,
    scrubber: Scrubber,
) -> ChunkStream {
    let state = StreamState {
        events: resp.bytes_stream().eventsource(),
        translator,
        pending: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(Some(state), move |state| {
        let scrubber = scrubber.clone();
        async move {
            let mut st = state?;
            loop {
                if let Some(chunk) = st.pending.pop_front() {
                    return Some((Ok(Bytes::from(chunk.to_string())), Some(st)));
                }
                if st.translator.done {
                    return None;
                }
                let next = match timeout_at(deadlines.total, st.events.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        return Some((Err(ProviderError::Timeout(TimeoutPhase::Total)), None));
                    }
                };
                match next {
                    Some(Ok(ev)) if ev.data.is_empty() => {}
                    Some(Ok(ev)) => match st.translator.on_event(&ev.data) {
                        Ok(chunks) => st.pending.extend(chunks),
                        Err(ProviderError::Transport(m)) => {
                            return Some((Err(ProviderError::Transport(scrubber.scrub(&m))), None));
                        }
                        Err(e) => return Some((Err(e), None)),
                    },
                    Some(Err(e)) => {
                        return Some((
                            Err(ProviderError::Transport(scrubber.scrub(&e.to_string()))),
                            None,
                        ));
                    }
                    None => {
                        return Some((
                            Err(ProviderError::Protocol(
                                "upstream stream ended before message_stop".into(),
                            )),
                            None,
                        ));
                    }
                }
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests;
