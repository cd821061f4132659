//! Informational endpoints: `/v1/models`, `/healthz`, `/readyz`, and the
//! admin view of deployments.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::access::Principal;
use crate::app::App;
use crate::error::ApiError;

fn model_json(name: &str, created: u64) -> Value {
    json!({"id": name, "object": "model", "created": created, "owned_by": "switchyard"})
}

/// `GET /v1/models`: the configured model groups.
/// `GET /v1/models`: the model groups and in-process embedding models the
/// caller may use.
pub async fn list_models(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
) -> Json<Value> {
    let allowed = |name: &str| {
        app.access
            .as_ref()
            .is_none_or(|a| a.allows(&principal, name))
    };
    let mut data: Vec<Value> = app
        .groups
        .iter()
        .filter(|g| allowed(&g.name))
        .map(|g| model_json(&g.name, app.started_at))
        .collect();
    let mut local: Vec<&String> = app.embeddings.keys().filter(|n| allowed(n)).collect();
    local.sort();
    data.extend(
        local
            .into_iter()
            .map(|name| model_json(name, app.started_at)),
    );
    Json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{model}` (model names may contain `/`).
pub async fn get_model(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let known = (app.groups.get(&name).is_some() || app.embeddings.contains_key(&name))
        && app
            .access
            .as_ref()
            .is_none_or(|a| a.allows(&principal, &name));
    if known {
        Ok(Json(model_json(&name, app.started_at)))
    } else {
        Err(ApiError::ModelNotFound(name))
    }
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: ready to take traffic; 503 once shutdown has begun.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.shutting_down.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ready"})).into_response()
    }
}

/// `GET /admin/deployments`: every deployment with its circuit breaker.
pub async fn deployments(State(app): State<Arc<App>>) -> Json<Value> {
    let now = Instant::now();
    let groups: Vec<Value> = app
        .groups
        .iter()
        .map(|g| {
            let deployments: Vec<Value> = g
                .deployments
                .iter()
                .map(|d| {
                    json!({"id": d.id, "provider": d.provider_name, "model": d.model,
                           "weight": d.weight, "breaker": d.breaker.snapshot(now)})
                })
                .collect();
            json!({"name": g.name, "strategy": format!("{:?}", g.strategy).to_lowercase(),
                   "deployments": deployments})
        })
        .collect();
    Json(json!({"model_groups": groups}))
}

/// Unknown routes.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("Unknown request URL: {method} {}.", uri.path()))
}

/// Known routes, wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("Method {method} is not allowed on {}.", uri.path()))
}

/// `GET /metrics`: Prometheus' text format (docs/operations.md); 404 when
/// `[metrics] enabled = false`.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = if app.metrics {
        crate::metrics::render(&app).await
    } else {
        None
    };
    match text {
        Some(t) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            t,
        )
            .into_response(),
        None => metrics_off(),
    }
}

fn metrics_off() -> Response {
    ApiError::Missing("Metrics are off ([metrics] enabled = false).".into()).into_response()
}

/// `GET /dashboard`: the live page (docs/operations.md).
pub async fn dashboard(State(app): State<Arc<App>>) -> Response {
    if !app.metrics {
        return metrics_off();
    }
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        crate::dashboard::PAGE,
    )
        .into_response()
}

/// `GET /api/v1/dashboard`: what the page polls.
pub async fn dashboard_state(State(app): State<Arc<App>>) -> Response {
    if !app.metrics {
        return metrics_off();
    }
    Json(crate::dashboard::state(&app).await).into_response()
}

/// `GET /api/v1/fleet`: local backends (health, load, GPUs, engine
/// metrics) and placement decisions by target and reason. Needs the client
/// key like `/v1/*`.
pub async fn fleet(State(app): State<Arc<App>>) -> Json<Value> {
    match &app.fleet {
        Some(f) => Json(json!(f.snapshot())),
        None => Json(json!({"backends": [], "decisions": []})),
    }
}
