//! Admin endpoints of the response cache (behind the master key):
//! `GET /admin/cache/stats`, `POST /admin/cache/purge` and
//! `POST /admin/cache/audits/reset`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::extract::{JsonObject, view};
use crate::app::App;
use crate::error::ApiError;

fn store_error(e: crate::cache::StoreError) -> ApiError {
    ApiError::Internal(format!("The cache's vector store failed: {e}"))
}

/// The cache, or a 400 when it is off.
fn enabled(app: &App) -> Result<&Arc<crate::cache::Cache>, ApiError> {
    app.cache.as_ref().ok_or_else(|| {
        ApiError::invalid(
            "The response cache is not enabled ([cache] enabled = false).",
            None,
        )
    })
}

/// A row in the admin audit log, when virtual keys are on.
fn log_admin(app: &App, headers: &axum::http::HeaderMap, action: &str, detail: Value) {
    if let Some(access) = &app.access {
        access
            .store
            .audit(&super::keys::actor(headers), action, None, &detail);
    }
}

/// Counters, memory tier and vector store; `{"enabled": false}` when the
/// cache is off.
pub async fn cache_stats(State(app): State<Arc<App>>) -> Json<CacheStats> {
    let stats = match &app.cache {
        Some(cache) => Some(cache.stats().await),
        None => None,
    };
    Json(CacheStats {
        enabled: stats.is_some(),
        stats,
    })
}

#[derive(Debug, Serialize)]
pub struct CacheStats {
    enabled: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    stats: Option<crate::cache::Stats>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    tenant: Option<String>,
    /// A model group.
    model: Option<String>,
}

/// Removes the entries of a tenant and/or model group (`{}`: everything)
/// from both tiers; answers how many went from each.
pub async fn cache_purge(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    body: JsonObject,
) -> Result<Json<Value>, ApiError> {
    let request: PurgeRequest = view(&body)?;
    let cache = enabled(&app)?;
    let purged = cache
        .purge(request.tenant.as_deref(), request.model.as_deref())
        .await
        .map_err(store_error)?;
    tracing::info!(
        tenant = request.tenant.as_deref().unwrap_or("*"),
        model = request.model.as_deref().unwrap_or("*"),
        memory = purged.memory,
        store = purged.store,
        "cache purged"
    );
    log_admin(
        &app,
        &headers,
        "cache.purge",
        json!({"tenant": request.tenant, "model": request.model, "purged": purged}),
    );
    Ok(Json(json!({"purged": purged})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetAuditsRequest {
    /// A model group; absent: every group.
    model: Option<String>,
}

/// Forgets a model group's audit outcomes (`{}`: every group's), saved and
/// in memory, so its threshold is the configured similarity again: after
/// fixing what made its answers disagree (an upstream fault, a changed
/// model), the evidence against the old answers no longer holds.
pub async fn cache_reset_audits(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    body: JsonObject,
) -> Result<Json<Value>, ApiError> {
    let request: ResetAuditsRequest = view(&body)?;
    let cache = enabled(&app)?.clone();
    if let Some(g) = request.model.as_deref().filter(|g| !cache.has_group(g)) {
        return Err(ApiError::NotFound(format!(
            "There is no model group `{g}`."
        )));
    }
    let model = request.model.clone();
    let reset = tokio::task::spawn_blocking(move || cache.reset_audits(model.as_deref()))
        .await
        .map_err(|e| ApiError::Internal(format!("Resetting the cache's audits failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("The cache's audit database failed: {e}")))?;
    tracing::info!(
        model = request.model.as_deref().unwrap_or("*"),
        groups = ?reset.groups,
        removed = reset.removed,
        "cache audits reset"
    );
    log_admin(
        &app,
        &headers,
        "cache.audits.reset",
        json!({"model": request.model, "reset": reset}),
    );
    Ok(Json(json!({"reset": reset})))
}
