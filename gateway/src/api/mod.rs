//! The OpenAI-compatible HTTP API.

mod admin;
mod endpoints;
pub mod extract;
mod info;
mod local_embeddings;
pub mod log;
pub mod middleware;
pub mod proxy;
pub mod sse;
pub mod types;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::app::App;

/// The whole HTTP surface.
///
/// Middleware, outermost first: request id (every response carries
/// `x-request-id`) → body-size limit (413 in OpenAI's shape, raised by the
/// body extractor) → key check (`/v1/*` and `/admin/*` only) → handler.
pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(endpoints::chat_completions))
        .route("/v1/completions", post(endpoints::completions))
        .route("/v1/embeddings", post(endpoints::embeddings))
        .route("/v1/models", get(info::list_models))
        .route("/v1/models/{*model}", get(info::get_model))
        .route("/api/v1/fleet", get(info::fleet))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::require_client_key,
        ));
    let admin = Router::new()
        .route("/admin/deployments", get(info::deployments))
        .route("/admin/cache/stats", get(admin::cache_stats))
        .route("/admin/cache/purge", post(admin::cache_purge))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::require_master_key,
        ));
    Router::new()
        .merge(v1)
        .merge(admin)
        .route("/healthz", get(info::healthz))
        .route("/readyz", get(info::readyz))
        .fallback(info::not_found)
        .method_not_allowed_fallback(info::method_not_allowed)
        .layer(DefaultBodyLimit::max(app.limits.max_body_bytes))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(app)
}
