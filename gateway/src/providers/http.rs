//! Shared HTTP plumbing for providers: client construction, error
//! classification, error-body parsing, credential scrubbing.

use std::time::Duration;

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::timeout_at;

use super::{Deadlines, ProviderError, TimeoutPhase};
use crate::config::TimeoutConfig;

/// A pooled client (rustls) for one deployment's time-outs.
pub(crate) fn client(t: &TimeoutConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(t.connect_ms))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build()
}

/// Classify a transport error; `phase` says which deadline was running.
pub(crate) fn transport_error(e: reqwest::Error, phase: TimeoutPhase) -> ProviderError {
    let e = e.without_url();
    if e.is_connect() {
        if e.is_timeout() {
            ProviderError::Timeout(TimeoutPhase::Connect)
        } else {
            ProviderError::Connect(root_cause(&e))
        }
    } else if e.is_timeout() {
        ProviderError::Timeout(phase)
    } else {
        ProviderError::Transport(root_cause(&e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `retry-after` in seconds (HTTP dates are not used by model APIs).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Removes a provider's key from any upstream text before it is kept.
#[derive(Clone)]
pub(crate) struct Scrubber(Option<SecretString>);

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrubber([redacted])")
    }
}

/// Longest upstream error message passed on.
const MAX_MESSAGE_CHARS: usize = 1_000;

impl Scrubber {
    pub(crate) fn new(key: Option<SecretString>) -> Self {
        Self(key)
    }

    pub(crate) fn key(&self) -> Option<&str> {
        self.0.as_ref().map(|k| k.expose_secret())
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        if let Some(key) = self.key().filter(|k| k.len() >= 4) {
            out = out.replace(key, "[redacted]");
        }
        out
    }

    /// An error status with the message read from an OpenAI-style
    /// (`error.message`) or Anthropic-style (`error.message`) body, or the
    /// raw text when it is not JSON.
    pub(crate) fn status_error(
        &self,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> ProviderError {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.get("message"))
                    .or_else(|| v.get("error"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        ProviderError::Status {
            status,
            message: self.scrub(if message.is_empty() {
                "(no message)"
            } else {
                &message
            }),
            retry_after: retry_after(headers),
        }
    }
}

/// Send a request and wait for a successful response's headers within the
/// first-byte deadline; a non-2xx answer becomes a scrubbed
/// [`ProviderError::Status`].
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    deadlines: Deadlines,
    scrubber: &Scrubber,
) -> Result<reqwest::Response, ProviderError> {
    let resp = timeout_at(deadlines.first_byte, request.send())
        .await
        .map_err(|_| ProviderError::Timeout(TimeoutPhase::FirstByte))?
        .map_err(|e| transport_error(e, TimeoutPhase::FirstByte))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let headers = resp.headers().clone();
    let body = timeout_at(deadlines.total, resp.bytes())
        .await
        .map_err(|_| ProviderError::Timeout(TimeoutPhase::Total))?
        .unwrap_or_default();
    Err(scrubber.status_error(status.as_u16(), &headers, &body))
}

/// Read a whole response body within the total deadline.
pub(crate) async fn read_body(
    resp: reqwest::Response,
    deadlines: Deadlines,
) -> Result<Bytes, ProviderError> {
    timeout_at(deadlines.total, resp.bytes())
        .await
        .map_err(|_| ProviderError::Timeout(TimeoutPhase::Total))?
        .map_err(|e| transport_error(e, TimeoutPhase::Total))
}
