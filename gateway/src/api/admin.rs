//! Admin endpoints of the response cache (behind the master key):
//! `GET /admin/cache/stats` and `POST /admin/cache/purge`.

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
    let Some(cache) = &app.cache else {
        return Err(ApiError::invalid(
            "The response cache is not enabled ([cache] enabled = false).",
            None,
        ));
    };
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
    if let Some(access) = &app.access {
        access.store.audit(
            &super::keys::actor(&headers),
            "cache.purge",
            None,
            &json!({"tenant": request.tenant, "model": request.model, "purged": purged}),
        );
    }
    Ok(Json(json!({"purged": purged})))
}
