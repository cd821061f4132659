//! Model endpoints: validate the request, then [`forward`] it.
//! `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::Instrument as _;

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;
use tokio::time::Instant;

use super::extract::{JsonObject, view};
use super::log::RequestLog;
use super::middleware::RequestId;
use super::proxy::{AuditCandidate, CacheWrite, Forward, Hit, HitKind, cached, fail, forward};
use super::types::{ChatCompletionRequest, CompletionRequest, EmbeddingInput, EmbeddingRequest};
use crate::access::Principal;
use crate::app::{App, Limits};
use crate::cache::http::{Directive, controls, now_secs};
use crate::cache::key::chat_key;
use crate::error::ApiError;
use crate::fleet::Class;
use crate::providers::Endpoint;

pub async fn chat_completions(
    State(app): State<Arc<App>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<JsonObject, ApiError>,
) -> Response {
    let mut rate = HeaderMap::new();
    let call = Call::interactive(id, principal, &mut rate);
    with_rate_headers(chat(&app, &headers, body, call).await, rate)
}

/// Who calls and how: what every endpoint needs besides the body.
pub struct Call<'a> {
    pub id: String,
    pub class: Class,
    pub principal: Principal,
    /// `x-ratelimit-*` headers for the response, filled at admission.
    pub rate: &'a mut HeaderMap,
}

impl<'a> Call<'a> {
    /// A client's request through the HTTP API.
    fn interactive(id: String, principal: Principal, rate: &'a mut HeaderMap) -> Self {
        Self {
            id,
            class: Class::Interactive,
            principal,
            rate,
        }
    }
}

fn with_rate_headers(mut resp: Response, rate: HeaderMap) -> Response {
    resp.headers_mut().extend(rate);
    resp
}

/// Sum of the lengths of every string in a JSON value.
fn text_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(text_bytes).sum(),
        Value::Object(o) => o.values().map(text_bytes).sum(),
        _ => 0,
    }
}

/// What every model endpoint does between parsing and the cache: the
/// caller's model check, DLP on the prompt (redacting in place), and
/// admission against budgets and rate limits (the estimate: a token per
/// four bytes of text, plus the completion's cap). Returns whether DLP
/// changed the body.
fn gate(
    app: &App,
    call: &mut Call<'_>,
    model: &str,
    body: &mut JsonObject,
    log: &mut RequestLog,
) -> Result<bool, ApiError> {
    log.principal = Some(call.principal.clone());
    log.access = app.access.clone();
    log.model_group = Some(model.to_owned());
    if let Some(access) = &app.access
        && !access.allows(&call.principal, model)
    {
        return Err(ApiError::ModelNotFound(model.to_owned()));
    }
    let mut changed = false;
    if let Some(dlp) = &app.dlp {
        let policy = dlp.policy(&call.principal.tenant, model);
        let found = dlp.dlp.scan_request(&mut body.0, policy);
        for d in &found.redacted {
            crate::metrics::dlp_finding(d, "redact");
        }
        for d in &found.logged {
            crate::metrics::dlp_finding(d, "log");
        }
        if let Some(detector) = found.blocked {
            crate::metrics::dlp_finding(&detector, "block");
            log.dlp.push(format!("{detector}:block"));
            return Err(ApiError::InvalidRequest {
                message: format!(
                    "The request contains data this gateway does not let through \
                     (detector `{detector}`). Remove it and try again."
                ),
                param: None,
                code: Some("dlp_blocked"),
            });
        }
        changed = !found.redacted.is_empty();
        log.dlp
            .extend(found.redacted.into_iter().map(|d| format!("{d}:redact")));
        log.dlp
            .extend(found.logged.into_iter().map(|d| format!("{d}:log")));
    }
    if let Some(access) = &app.access {
        let map = body.map();
        let cap = map
            .get("max_completion_tokens")
            .or_else(|| map.get("max_tokens"))
            .and_then(Value::as_u64)
            .map(|m| m * map.get("n").and_then(Value::as_u64).unwrap_or(1).max(1));
        let prompt = (text_bytes(&body.0) / 4 + 1) as u64;
        let tokens = access.estimate(prompt, cap);
        // Batch items keep to their batch's pace, not the key's rate
        // limits; budgets and usage count them all the same.
        let rated = call.class == Class::Interactive;
        let admission = access.admit(&call.principal, tokens, rated)?;
        admission.headers(call.rate);
        log.admission = Some(admission);
    }
    Ok(changed)
}

/// A request from inside the gateway (a batch item): the same validation,
/// cache and placement as the HTTP endpoint's.
pub async fn call(
    app: &App,
    endpoint: crate::batch::Endpoint,
    body: JsonObject,
    id: String,
    principal: Principal,
    class: Class,
) -> Response {
    use crate::batch::Endpoint as E;
    let mut rate = HeaderMap::new();
    let call = Call {
        id,
        class,
        principal,
        rate: &mut rate,
    };
    match endpoint {
        E::ChatCompletions => chat(app, &HeaderMap::new(), Ok(body), call).await,
        E::Completions => completions_as(app, Ok(body), call).await,
        E::Embeddings => embeddings_as(app, Ok(body), call).await,
    }
}

async fn chat(
    app: &App,
    headers: &HeaderMap,
    body: Result<JsonObject, ApiError>,
    mut call: Call<'_>,
) -> Response {
    let started = Instant::now();
    let mut log = RequestLog::new(std::mem::take(&mut call.id), "chat.completions", started);
    let chat = match body.and_then(|mut b| {
        let mut chat = view::<ChatCompletionRequest>(&b)?;
        validate_chat(&chat, &app.limits)?;
        if gate(app, &mut call, &chat.model.clone(), &mut b, &mut log)? {
            chat = view::<ChatCompletionRequest>(&b)?;
        }
        Ok((b, chat))
    }) {
        Ok(ok) => ok,
        Err(e) => return fail(log, e),
    };
    let (body, chat) = chat;
    let tenant = call.principal.tenant.clone();
    let span = tracing::info_span!("cache.lookup", cache.result = tracing::field::Empty);
    let looked = cache_lookup(app, headers, &body, &chat, &tenant, &mut log)
        .instrument(span.clone())
        .await;
    span.record("cache.result", log.cache);
    let write = match looked {
        Ok(Lookup::Hit(hit)) => {
            let stream = chat.is_stream().then(|| chat.include_usage());
            if let Some(group) = app.groups.get(&hit.group) {
                log.saved_usd = crate::metrics::cache_saved(
                    &group.name,
                    group.deployments.iter().map(|d| d.id.as_str()),
                    &hit.body,
                );
            }
            return cached(log, started, hit, stream);
        }
        Ok(Lookup::Miss(write)) => write,
        Err(e) => return fail(log, e),
    };
    let fwd = Forward {
        endpoint: Endpoint::ChatCompletions,
        body: &body,
        chat: Some(&chat),
        model: &chat.model,
        stream: chat.is_stream(),
        cache: write,
        class: call.class,
        principal: &call.principal,
    };
    forward(app, log, started, fwd).await
}

enum Lookup {
    Hit(Hit),
    /// Not answered from the cache; store the answer here, if anywhere.
    Miss(Option<CacheWrite>),
}

/// The cache's part in a chat request (sets `log.cache`): the exact tier,
/// then the semantic tier within its time budget (failing open).
async fn cache_lookup(
    app: &App,
    headers: &HeaderMap,
    body: &JsonObject,
    chat: &ChatCompletionRequest,
    tenant: &Arc<str>,
    log: &mut RequestLog,
) -> Result<Lookup, ApiError> {
    let Some(cache) = &app.cache else {
        return Ok(Lookup::Miss(None));
    };
    let controls = controls(headers)?;
    log.cache = "bypass";
    let counters = &cache.counters;
    let settings = cache.settings(&chat.model);
    let key = chat_key(tenant, &chat.model, body.map(), chat, cache.max_temperature);
    let key = match key {
        Ok(key) if settings.enabled && controls.directive != Directive::NoStore => key,
        _ => {
            counters.bypasses.fetch_add(1, Ordering::Relaxed);
            return Ok(Lookup::Miss(None));
        }
    };
    let now = now_secs();
    let mut vector = None;
    let mut audit = None;
    let semantic = cache
        .semantic
        .as_ref()
        .filter(|_| settings.semantic && key.text.len() <= crate::cache::SEMANTIC_MAX_BYTES);
    let ttl_secs = controls
        .ttl
        .map_or(settings.ttl_secs, |t| t.min(settings.ttl_secs));
    // The group's threshold applies to every request; audits compare the
    // fresh answer when it is stored, so none without a store
    // (`x-switchyard-cache-ttl: 0`).
    let auditor = cache.auditor(&chat.model);
    let audits = auditor.filter(|_| ttl_secs > 0);
    if controls.directive == Directive::Normal {
        if let Some(hit) = cache.exact.get(&key.exact, now) {
            counters.hits_exact.fetch_add(1, Ordering::Relaxed);
            return Ok(Lookup::Hit(Hit {
                body: hit.body,
                group: hit.group,
                kind: HitKind::Exact,
            }));
        }
        if let Some(semantic) = semantic {
            // An auditor's threshold starts at, and never falls below, the
            // configured similarity.
            let threshold = auditor.map_or(settings.similarity, |a| a.threshold());
            // Audits hold every hit to the group's threshold: no lower one
            // for typo variants, whose outcomes they would not see.
            let verifier = crate::cache::verify::Verifier {
                typo_variants: settings.verifier.typo_variants && auditor.is_none(),
                ..settings.verifier
            };
            let lookup =
                semantic.lookup(&key, threshold, settings.similarity, verifier, now as f64);
            match tokio::time::timeout(semantic.budget, lookup).await {
                Ok(Ok(looked)) => {
                    // An audited group: some semantic hits are answered
                    // fresh and compared, as are near misses.
                    let (found, near) = match (looked.found, audits) {
                        (Some(found), Some(a)) if !found.exact && a.draw() => {
                            log.cache_audit = Some("hit");
                            (None, Some(found))
                        }
                        (found, _) => {
                            let near = looked.near.filter(|_| audits.is_some());
                            if near.is_some() {
                                log.cache_audit = Some("near");
                            }
                            (found, near)
                        }
                    };
                    audit = near.zip(audits).map(|(n, a)| AuditCandidate {
                        similarity: n.similarity,
                        body: n.body,
                        generation: a.generation(),
                    });
                    if let Some(found) = found {
                        let kind = if found.exact {
                            counters.hits_exact.fetch_add(1, Ordering::Relaxed);
                            HitKind::Exact
                        } else {
                            counters.hits_semantic.fetch_add(1, Ordering::Relaxed);
                            HitKind::Semantic {
                                similarity: found.similarity,
                            }
                        };
                        return Ok(Lookup::Hit(Hit {
                            body: found.body,
                            group: found.group,
                            kind,
                        }));
                    }
                    vector = Some(looked.vector);
                }
                Ok(Err(e)) => {
                    counters.fail_open.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "semantic cache lookup failed; going on uncached");
                }
                Err(_) => {
                    counters.fail_open.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        budget_ms = semantic.budget.as_millis() as u64,
                        "semantic cache lookup over budget; going on uncached"
                    );
                }
            }
        }
    }
    log.cache = "miss";
    counters.misses.fetch_add(1, Ordering::Relaxed);
    Ok(Lookup::Miss((ttl_secs > 0).then(|| CacheWrite {
        cache: cache.clone(),
        key,
        vector,
        tenant: tenant.clone(),
        group: chat.model.clone(),
        ttl_secs,
        semantic: semantic.is_some(),
        audit,
    })))
}

fn validate_chat(chat: &ChatCompletionRequest, limits: &Limits) -> Result<(), ApiError> {
    if chat.messages.is_empty() {
        return Err(ApiError::invalid(
            "'messages' must contain at least one message.",
            Some("messages"),
        ));
    }
    if chat.messages.len() > limits.max_messages {
        return Err(ApiError::InvalidRequest {
            message: format!(
                "Too many messages: {} (this gateway accepts at most {}).",
                chat.messages.len(),
                limits.max_messages
            ),
            param: Some("messages".into()),
            code: Some("too_many_messages"),
        });
    }
    check_n(chat.n, limits)?;
    if let Some(t) = chat.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(
            format!("Invalid 'temperature': {t} is not between 0 and 2."),
            Some("temperature"),
        ));
    }
    if let Some(p) = chat.top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(ApiError::invalid(
            format!("Invalid 'top_p': {p} is not between 0 and 1."),
            Some("top_p"),
        ));
    }
    if chat.stream_options.is_some() && !chat.is_stream() {
        return Err(ApiError::invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            Some("stream_options"),
        ));
    }
    for (i, tool) in chat.tools.iter().flatten().enumerate() {
        if tool.kind != "function" {
            return Err(ApiError::invalid(
                format!(
                    "Invalid tool type `{}`: only `function` is supported.",
                    tool.kind
                ),
                Some(&format!("tools[{i}].type")),
            ));
        }
    }
    Ok(())
}

fn check_n(n: Option<u32>, limits: &Limits) -> Result<(), ApiError> {
    match n {
        Some(0) => Err(ApiError::invalid("'n' must be at least 1.", Some("n"))),
        Some(n) if n > limits.max_n => Err(ApiError::invalid(
            format!("'n' is {n}; this gateway accepts at most {}.", limits.max_n),
            Some("n"),
        )),
        _ => Ok(()),
    }
}

pub async fn completions(
    State(app): State<Arc<App>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Extension(principal): Extension<Principal>,
    body: Result<JsonObject, ApiError>,
) -> Response {
    let mut rate = HeaderMap::new();
    let call = Call::interactive(id, principal, &mut rate);
    with_rate_headers(completions_as(&app, body, call).await, rate)
}

async fn completions_as(
    app: &App,
    body: Result<JsonObject, ApiError>,
    mut call: Call<'_>,
) -> Response {
    let started = Instant::now();
    let mut log = RequestLog::new(std::mem::take(&mut call.id), "completions", started);
    let parsed = body.and_then(|mut b| {
        let mut req = view::<CompletionRequest>(&b)?;
        check_n(req.n, &app.limits)?;
        if !(req.prompt.is_string() || req.prompt.is_array()) {
            return Err(ApiError::invalid(
                "'prompt' must be a string, an array of strings or an array of tokens.",
                Some("prompt"),
            ));
        }
        if gate(app, &mut call, &req.model.clone(), &mut b, &mut log)? {
            req = view::<CompletionRequest>(&b)?;
        }
        Ok((b, req))
    });
    let (body, req) = match parsed {
        Ok(ok) => ok,
        Err(e) => return fail(log, e),
    };
    let fwd = Forward {
        endpoint: Endpoint::Completions,
        body: &body,
        chat: None,
        model: &req.model,
        stream: req.stream.unwrap_or(false),
        cache: None,
        class: call.class,
        principal: &call.principal,
    };
    forward(app, log, started, fwd).await
}

pub async fn embeddings(
    State(app): State<Arc<App>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Extension(principal): Extension<Principal>,
    body: Result<JsonObject, ApiError>,
) -> Response {
    let mut rate = HeaderMap::new();
    let call = Call::interactive(id, principal, &mut rate);
    with_rate_headers(embeddings_as(&app, body, call).await, rate)
}

async fn embeddings_as(
    app: &App,
    body: Result<JsonObject, ApiError>,
    mut call: Call<'_>,
) -> Response {
    let started = Instant::now();
    let mut log = RequestLog::new(std::mem::take(&mut call.id), "embeddings", started);
    let parsed = body.and_then(|mut b| {
        let mut req = view::<EmbeddingRequest>(&b)?;
        validate_embeddings(&req, &app.limits)?;
        if gate(app, &mut call, &req.model.clone(), &mut b, &mut log)? {
            req = view::<EmbeddingRequest>(&b)?;
        }
        Ok((b, req))
    });
    let (body, req) = match parsed {
        Ok(ok) => ok,
        Err(e) => return fail(log, e),
    };
    if let Some(batcher) = app.embeddings.get(&req.model) {
        return super::local_embeddings::embed(batcher, req, log).await;
    }
    let fwd = Forward {
        endpoint: Endpoint::Embeddings,
        body: &body,
        chat: None,
        model: &req.model,
        stream: false,
        cache: None,
        class: call.class,
        principal: &call.principal,
    };
    forward(app, log, started, fwd).await
}

fn validate_embeddings(req: &EmbeddingRequest, limits: &Limits) -> Result<(), ApiError> {
    if req.input.is_empty() {
        return Err(ApiError::invalid(
            "'input' must not be empty.",
            Some("input"),
        ));
    }
    if req.input.len() > limits.max_embedding_inputs {
        return Err(ApiError::InvalidRequest {
            message: format!(
                "Too many inputs: {} (this gateway accepts at most {} per request).",
                req.input.len(),
                limits.max_embedding_inputs
            ),
            param: Some("input".into()),
            code: Some("too_many_inputs"),
        });
    }
    let empty = match &req.input {
        EmbeddingInput::One(s) => s.is_empty(),
        EmbeddingInput::Many(v) => v.iter().any(String::is_empty),
        EmbeddingInput::Tokens(t) => t.is_empty(),
        EmbeddingInput::ManyTokens(v) => v.iter().any(Vec::is_empty),
    };
    if empty {
        return Err(ApiError::invalid(
            "'input' must not contain empty strings or empty token arrays.",
            Some("input"),
        ));
    }
    if req.dimensions == Some(0) {
        return Err(ApiError::invalid(
            "'dimensions' must be at least 1.",
            Some("dimensions"),
        ));
    }
    Ok(())
}
