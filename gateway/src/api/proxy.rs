//! The shared tail of every model endpoint: find the model group, dispatch,
//! and turn the result into the client's response with Switchyard's headers
//! (`x-switchyard-backend`, `x-switchyard-overhead-ms`).

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::extract::JsonObject;
use super::log::RequestLog;
use super::sse;
use super::types::ChatCompletionRequest;
use crate::app::App;
use crate::dispatch::{Committed, dispatch};
use crate::error::ApiError;
use crate::providers::{Endpoint, UpstreamRequest};

pub const BACKEND: &str = "x-switchyard-backend";
pub const OVERHEAD: &str = "x-switchyard-overhead-ms";

/// What to forward.
pub struct Forward<'a> {
    pub endpoint: Endpoint,
    pub body: &'a JsonObject,
    pub chat: Option<&'a ChatCompletionRequest>,
    pub model: &'a str,
    pub stream: bool,
}

/// Log the error and render it.
pub fn fail(mut log: RequestLog, error: ApiError) -> Response {
    log.status = error.status_code().as_u16();
    log.outcome = "error";
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
        return fail(log, ApiError::ModelNotFound(fwd.model.to_owned()));
    };
    let request_id = log.request_id.clone();
    let req = UpstreamRequest {
        endpoint: fwd.endpoint,
        body: fwd.body.map(),
        chat: fwd.chat,
        stream: fwd.stream,
        request_id: &request_id,
    };
    let done = match dispatch(group, &req).await {
        Ok(done) => done,
        Err(failed) => {
            log.attempts = failed.attempts;
            log.deployment = failed.deployment;
            return fail(log, failed.error);
        }
    };
    let overhead = started.elapsed().saturating_sub(done.upstream_time);
    let deployment = done.deployment.id.clone();
    log.attempts = done.attempts;
    log.deployment = Some(deployment.clone());
    log.overhead = Some(overhead);
    let (body, content_type) = match done.reply {
        Committed::Complete { body, usage } => {
            log.usage = usage;
            (Body::from(body), "application/json")
        }
        Committed::Stream { first, rest } => (
            sse::body(first, rest, log, deployment.clone()),
            "text/event-stream",
        ),
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
    if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", overhead.as_secs_f64() * 1e3)) {
        h.insert(OVERHEAD, v);
    }
    resp
}
