//! The shared tail of every model endpoint: find the model group, dispatch,
//! and turn the result into the client's response with Switchyard's headers
//! (`x-switchyard-backend`, `x-switchyard-overhead-ms`).

use std::sync::Arc;
use tracing::Instrument as _;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::extract::JsonObject;
use super::log::RequestLog;
use super::sse;
use super::types::ChatCompletionRequest;
use crate::access::Principal;
use crate::app::App;
use crate::cache::Cache;
use crate::cache::exact::CachedResponse;
use crate::cache::http::{
    AUDIT_HEADER, CACHE_HEADER, SIMILARITY_HEADER, finished_normally, now_secs,
};
use crate::cache::key::CacheKey;
use crate::cache::replay;
use crate::cache::semantic::Answer;
use crate::dispatch::{Committed, dispatch};
use crate::error::ApiError;
use crate::fleet::Class;
use crate::providers::{Endpoint, UpstreamRequest};

pub const BACKEND: &str = "x-switchyard-backend";
pub const PLACEMENT: &str = "x-switchyard-placement";
pub const PLACEMENT_REASON: &str = "x-switchyard-placement-reason";
pub const OVERHEAD: &str = "x-switchyard-overhead-ms";

/// What to forward.
pub struct Forward<'a> {
    pub endpoint: Endpoint,
    pub body: &'a JsonObject,
    pub chat: Option<&'a ChatCompletionRequest>,
    pub model: &'a str,
    pub stream: bool,
    /// Where to store the answer if it completes normally.
    pub cache: Option<CacheWrite>,
    /// Interactive, or a batch item.
    pub class: Class,
    /// The caller: its tenant's DLP policy applies to answers, its
    /// tenant's and key's policies and budgets to placement.
    pub principal: &'a Principal,
}

/// A cache miss to fill.
pub struct CacheWrite {
    pub cache: Arc<Cache>,
    pub key: CacheKey,
    /// The prompt's vector, when the semantic lookup computed it.
    pub vector: Option<Vec<f32>>,
    /// The scope's tenant, stored with the entry.
    pub tenant: Arc<str>,
    pub group: String,
    pub ttl_secs: u64,
    /// Store in the semantic tier too (the group's setting).
    pub semantic: bool,
    /// A cached answer to compare the fresh one with (an audited group's
    /// audited hit or near miss).
    pub audit: Option<AuditCandidate>,
}

/// A cached answer an audit compares with the fresh one.
pub struct AuditCandidate {
    pub similarity: f32,
    pub body: bytes::Bytes,
    /// The auditor's generation when the audit began.
    pub generation: u64,
}

/// How a cached answer was found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HitKind {
    Exact,
    Semantic { similarity: f32 },
}

/// A cached answer to serve.
#[derive(Debug, Clone)]
pub struct Hit {
    pub body: bytes::Bytes,
    pub group: String,
    pub kind: HitKind,
}

/// `x-switchyard-overhead-ms`.
fn insert_overhead(h: &mut axum::http::HeaderMap, overhead: std::time::Duration) {
    if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", overhead.as_secs_f64() * 1e3)) {
        h.insert(OVERHEAD, v);
    }
}

/// Log the error and render it.
pub fn fail(mut log: RequestLog, error: ApiError) -> Response {
    log.status = error.status_code().as_u16();
    log.outcome = match &error {
        // Batch work waiting for idle GPUs: retried, not a failure.
        ApiError::Unavailable { code, .. } if *code == crate::fleet::DEFERRED => "deferred",
        ApiError::Unavailable { code, .. } if *code == crate::fleet::REMOTE_BATCH => "deferred",
        _ => "error",
    };
    error.into_response()
}

pub async fn forward(
    app: &App,
    mut log: RequestLog,
    started: Instant,
    fwd: Forward<'_>,
) -> Response {
    log.model_group = Some(fwd.model.to_owned());
    log.stream = fwd.stream;
    let Some(group) = app.groups.get(fwd.model) else {
        log.unknown_group = true;
        return fail(log, ApiError::ModelNotFound(fwd.model.to_owned()));
    };
    let request_id = log.request_id.clone();
    let client_usage = fwd
        .body
        .map()
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let req = UpstreamRequest {
        endpoint: fwd.endpoint,
        body: fwd.body.map(),
        chat: fwd.chat,
        stream: fwd.stream,
        request_id: &request_id,
        force_usage: fwd.stream && !client_usage,
    };
    let placed = match &app.fleet {
        Some(fleet) => match fleet
            .place(
                group,
                fwd.body.map(),
                fwd.class,
                &app.access
                    .as_ref()
                    .map(|a| a.placement(fwd.principal))
                    .unwrap_or_default(),
            )
            .instrument(tracing::info_span!("placement", model_group = %group.name))
            .await
        {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => return fail(log, e),
            None => None,
        },
        None => None,
    };
    // A batch item that goes external while its deadline leaves time for
    // a provider batch goes back to the runner, which collects such items
    // for the deployment's batch API.
    if let Class::Batch { remote: true, .. } = fwd.class {
        let target = match &placed {
            Some(p) => p.chosen_external(),
            None => group.attempt_order().first().copied(),
        };
        if let Some(i) = target
            && group.deployments[i].provider.has_batch_api(fwd.endpoint)
        {
            let mut resp = fail(
                log,
                ApiError::Unavailable {
                    message: format!(
                        "Batch item for `{}` goes to a provider batch.",
                        group.deployments[i].id
                    ),
                    retry_after: None,
                    code: crate::fleet::REMOTE_BATCH,
                },
            );
            resp.headers_mut()
                .insert(crate::fleet::REMOTE_DEPLOYMENT, HeaderValue::from(i));
            return resp;
        }
    }
    let order = placed.as_ref().map(|p| p.order.as_slice());
    let done = match dispatch(group, order, &req).await {
        Ok(done) => done,
        Err(failed) => {
            log.attempts = failed.attempts;
            log.deployment = failed.deployment;
            return fail(log, failed.error);
        }
    };
    let mut ticket = None;
    let mut placement = None;
    if let (Some(fleet), Some(_), Committed::Stream { .. }) = (&app.fleet, &placed, &done.reply) {
        fleet.external_first_token(&group.name, done.index, done.answer_time);
    }
    if let Some(mut p) = placed {
        let (label, reason) = p.headers_for(done.index);
        placement = Some((label.to_owned(), reason));
        log.placement = Some(reason);
        // The ticket belongs to the placed backend; a fallback elsewhere
        // lets it go at once.
        if let Some(t) = p.ticket.take()
            && p.is_chosen(done.index)
        {
            if matches!(done.reply, Committed::Stream { .. }) {
                t.first_token();
            }
            ticket = Some(t);
        }
    }
    let overhead = started.elapsed().saturating_sub(done.upstream_time);
    let log_cache = log.cache;
    let log_audit = log.cache_audit;
    let deployment = done.deployment.id.clone();
    log.attempts = done.attempts;
    log.deployment = Some(deployment.clone());
    log.overhead = Some(overhead);
    let (body, content_type) = match done.reply {
        Committed::Complete { mut body, usage } => {
            drop(ticket);
            log.usage = usage;
            if let Some(dlp) = app.dlp.as_ref().filter(|d| d.dlp.responses) {
                body = scan_answer(dlp, &fwd.principal.tenant, fwd.model, body, &mut log);
            }
            if let Some(w) = fwd.cache
                && finished_normally(&body)
            {
                store(w, &body);
            }
            (Body::from(body), "application/json")
        }
        Committed::Stream { first, rest } => {
            crate::metrics::ttft(&deployment, started.elapsed());
            (
                sse::body(
                    first,
                    rest,
                    log,
                    deployment.clone(),
                    fwd.cache,
                    ticket,
                    !client_usage,
                ),
                "text/event-stream",
            )
        }
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == "text/event-stream" {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if let Ok(v) = HeaderValue::from_str(&deployment) {
        h.insert(BACKEND, v);
    }
    if log_cache != "-" {
        h.insert(CACHE_HEADER, HeaderValue::from_static(log_cache));
    }
    if let Some(audit) = log_audit {
        h.insert(AUDIT_HEADER, HeaderValue::from_static(audit));
    }
    if let Some((label, reason)) = placement
        && let Ok(v) = HeaderValue::from_str(&label)
    {
        h.insert(PLACEMENT, v);
        h.insert(PLACEMENT_REASON, HeaderValue::from_static(reason));
    }
    insert_overhead(h, overhead);
    resp
}

/// DLP on a non-streamed answer (`dlp.responses`): matches are masked,
/// whatever the detector's action (the answer is already paid for).
fn scan_answer(
    dlp: &crate::access::DlpPolicies,
    tenant: &str,
    model: &str,
    body: bytes::Bytes,
    log: &mut RequestLog,
) -> bytes::Bytes {
    let policy = dlp.policy(tenant, model).for_answers();
    if policy.is_off() {
        return body;
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    let found = dlp.dlp.scan_response(&mut value, &policy);
    if found.redacted.is_empty() {
        return body;
    }
    log.dlp.extend(
        found
            .redacted
            .into_iter()
            .map(|d| format!("{d}:redact_answer")),
    );
    bytes::Bytes::from(value.to_string())
}

/// Stores a complete answer: in the exact tier at once, in the semantic
/// tier's store in the background (the client does not wait for it).
pub fn store(w: CacheWrite, body: &bytes::Bytes) {
    let now = now_secs();
    w.cache.exact.insert(
        w.key.exact.clone(),
        CachedResponse {
            body: body.clone(),
            tenant: w.tenant.to_string(),
            group: w.group.clone(),
            created_at: now,
            expires_at: now.saturating_add(w.ttl_secs),
        },
    );
    if let Some(semantic) = w.cache.semantic.clone().filter(|_| w.semantic) {
        let body = body.clone();
        let CacheWrite {
            cache,
            key,
            vector,
            tenant,
            group,
            ttl_secs,
            audit,
            ..
        } = w;
        if let Some(candidate) = audit {
            compare(
                cache,
                semantic.clone(),
                group.clone(),
                candidate,
                body.clone(),
            );
        }
        tokio::spawn(async move {
            let answer = Answer {
                response: &body,
                tenant: &tenant,
                group: &group,
                now,
                ttl_secs,
            };
            let stored = semantic.store(&key, vector, answer).await;
            if let Err(e) = stored {
                tracing::warn!(error = %e, "semantic cache: answer not stored");
            }
        });
    }
}

/// Compares an audited candidate's cached answer with the fresh one, in
/// the background, and records the outcome with the group's auditor.
fn compare(
    cache: Arc<Cache>,
    semantic: crate::cache::semantic::Semantic,
    group: String,
    candidate: AuditCandidate,
    fresh: bytes::Bytes,
) {
    use crate::cache::audit;
    tokio::spawn(async move {
        let Some(auditor) = cache.auditor(&group) else {
            return;
        };
        // Parsing the answers and the verifier's word-by-word pass are CPU
        // work: off the async threads.
        let verifier = cache.settings(&group).verifier;
        let AuditCandidate {
            similarity,
            body,
            generation,
        } = candidate;
        let checked = tokio::task::spawn_blocking(move || {
            let mut cached = audit::answer_text(&body)?;
            let mut fresh = audit::answer_text(&fresh)?;
            cached.truncate(audit::bounded(&cached).len());
            fresh.truncate(audit::bounded(&fresh).len());
            let text = audit::text_check(&cached, &fresh, verifier);
            Some((cached, fresh, text))
        })
        .await;
        let (cached, fresh, text) = match checked {
            Ok(Some(checked)) => checked,
            Ok(None) => {
                tracing::warn!(
                    group,
                    "cache audit: an answer is not a chat completion; not compared"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(group, error = %e, "cache audit: the text check failed");
                return;
            }
        };
        let agreed = audit::agree(text, auditor.settings().agreement, || {
            semantic.answer_similarity(&cached, &fresh)
        })
        .await;
        let Some(agreed) = agreed else {
            tracing::warn!(
                group,
                "cache audit: the answers could not be embedded; not recorded"
            );
            return;
        };
        // Recording writes the outcome to disk: off the async threads.
        let recorded = tokio::task::spawn_blocking({
            let (cache, group) = (cache.clone(), group.clone());
            move || {
                cache
                    .auditor(&group)
                    .and_then(|auditor| auditor.record_since(generation, similarity, agreed))
            }
        })
        .await;
        match recorded {
            Ok(Some(threshold)) => {
                tracing::info!(group, similarity, agreed, threshold, "cache audit")
            }
            Ok(None) => tracing::info!(
                group,
                similarity,
                agreed,
                "cache audit: begun before a reset; not recorded"
            ),
            Err(e) => tracing::warn!(group, error = %e, "cache audit: recording failed"),
        }
    });
}

/// A response from the cache: the stored body, or, for `stream: true`, the
/// same answer replayed as an SSE stream (`include_usage` honoured).
pub fn cached(mut log: RequestLog, started: Instant, hit: Hit, stream: Option<bool>) -> Response {
    let Hit { body, group, kind } = hit;
    log.model_group = Some(group);
    log.deployment = Some("cache".into());
    log.cache = match kind {
        HitKind::Exact => "hit-exact",
        HitKind::Semantic { .. } => "hit-semantic",
    };
    let overhead = started.elapsed();
    log.overhead = Some(overhead);
    let (body, content_type) = match stream {
        None => (Body::from(body), "application/json"),
        Some(include_usage) => match replay::chunks(&body, include_usage) {
            Ok(chunks) => {
                log.stream = true;
                let mut events: Vec<Result<bytes::Bytes, std::io::Error>> =
                    chunks.iter().map(|c| Ok(sse::frame(c))).collect();
                events.push(Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n")));
                (
                    Body::from_stream(futures_util::stream::iter(events)),
                    "text/event-stream",
                )
            }
            Err(e) => {
                return fail(
                    log,
                    ApiError::Internal(format!("cached answer unreadable: {e}")),
                );
            }
        },
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(BACKEND, HeaderValue::from_static("cache"));
    h.insert(CACHE_HEADER, HeaderValue::from_static(log.cache));
    if let HitKind::Semantic { similarity } = kind {
        crate::metrics::similarity(similarity);
        if let Ok(v) = HeaderValue::from_str(&format!("{similarity:.4}")) {
            h.insert(SIMILARITY_HEADER, v);
        }
    }
    insert_overhead(h, overhead);
    resp
}
