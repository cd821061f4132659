//! The cache in the request path: what a request asks of it (headers), and
//! the response headers that say what it did.
//!
//! Request headers:
//! - `x-switchyard-cache: no-cache` (or `refresh`): do not answer from the
//!   cache; the fresh answer replaces the entry.
//! - `x-switchyard-cache: no-store`: neither look up nor store.
//! - `Cache-Control: no-cache` / `no-store`: the same.
//! - `x-switchyard-cache-ttl: N`: keep this answer at most N seconds (never
//!   longer than `cache.ttl_secs`; 0 stores nothing).
//!
//! Response header `x-switchyard-cache`: `hit-exact`, `hit-semantic`, `miss`
//! (looked up, not found; the answer is stored if it completes normally) or
//! `bypass` (not cacheable, or asked not to); on semantic hits
//! `x-switchyard-cache-similarity` gives the cosine similarity. An audited
//! model group's misses may carry `x-switchyard-cache-audit: hit` (a
//! semantic hit answered fresh so the two answers can be compared) or
//! `near` (a candidate below the group's raised threshold, compared too).

use axum::http::HeaderMap;
use serde_json::Value;

use crate::error::ApiError;

pub const CACHE_HEADER: &str = "x-switchyard-cache";
pub const TTL_HEADER: &str = "x-switchyard-cache-ttl";
pub const SIMILARITY_HEADER: &str = "x-switchyard-cache-similarity";
pub const AUDIT_HEADER: &str = "x-switchyard-cache-audit";

/// What a request asks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Directive {
    #[default]
    Normal,
    /// Do not answer from the cache; store the fresh answer.
    NoCache,
    /// Do not look up, do not store.
    NoStore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Controls {
    pub directive: Directive,
    /// `x-switchyard-cache-ttl`, seconds.
    pub ttl: Option<u64>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::invalid(format!("The {name} header is not valid text."), None)
            })
        })
        .transpose()
}

/// Reads the cache headers; a value it does not understand is a 400, not
/// silently ignored.
pub fn controls(headers: &HeaderMap) -> Result<Controls, ApiError> {
    let mut c = Controls::default();
    if let Some(cc) = header(headers, "cache-control")? {
        for d in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match d.as_str() {
                "no-store" => c.directive = Directive::NoStore,
                "no-cache" if c.directive != Directive::NoStore => c.directive = Directive::NoCache,
                _ => {}
            }
        }
    }
    if let Some(v) = header(headers, CACHE_HEADER)? {
        let asked = match v.trim().to_ascii_lowercase().as_str() {
            "no-cache" | "refresh" => Directive::NoCache,
            "no-store" => Directive::NoStore,
            other => {
                return Err(ApiError::invalid(
                    format!(
                        "Invalid {CACHE_HEADER} header `{other}`: expected no-cache, refresh or no-store."
                    ),
                    None,
                ));
            }
        };
        if c.directive != Directive::NoStore {
            c.directive = asked;
        }
    }
    if let Some(v) = header(headers, TTL_HEADER)? {
        c.ttl = Some(v.trim().parse().map_err(|_| {
            ApiError::invalid(
                format!("Invalid {TTL_HEADER} header `{v}`: expected whole seconds."),
                None,
            )
        })?);
    }
    Ok(c)
}

/// A chat completion body that ended normally: every choice finished with
/// `stop`, `length` or `tool_calls` (not `content_filter`, not an error).
pub fn finished_normally(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    match v.get("choices").and_then(Value::as_array) {
        Some(choices) if !choices.is_empty() => choices.iter().all(|c| {
            matches!(
                c.get("finish_reason").and_then(Value::as_str),
                Some("stop" | "length" | "tool_calls")
            )
        }),
        _ => false,
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
