//! The OpenAI-compatible HTTP API.

mod admin;
pub mod batches;
pub mod endpoints;
pub mod extract;
mod info;
pub mod keys;
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

use crate::config::BatchConfig;

use crate::app::App;

/// The body limit of `POST /v1/files`: the file limit plus room for the
/// multipart framing.
fn upload_limit(batch: Option<&BatchConfig>) -> usize {
    batch.map_or(0, |b| {
        usize::try_from(b.max_file_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024)
    })
}

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
        .route(
            "/v1/files",
            get(batches::files)
                .post(batches::upload)
                .layer(DefaultBodyLimit::max(upload_limit(
                    app.batches.as_ref().map(|b| &b.settings),
                ))),
        )
        .route(
            "/v1/files/{id}",
            get(batches::file).delete(batches::delete_file),
        )
        .route("/v1/files/{id}/content", get(batches::file_content))
        .route("/v1/batches", get(batches::list).post(batches::create))
        .route("/v1/batches/{id}", get(batches::batch))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/api/v1/batches/stats", get(batches::stats))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::require_client_key,
        ));
    let admin = Router::new()
        .route("/admin/deployments", get(info::deployments))
        .route("/admin/cache/stats", get(admin::cache_stats))
        .route("/admin/cache/purge", post(admin::cache_purge))
        .route("/admin/cache/audits/reset", post(admin::cache_reset_audits))
        .route("/admin/keys", get(keys::list).post(keys::create))
        .route("/admin/keys/{id}", get(keys::get).patch(keys::update))
        .route("/admin/keys/{id}/rotate", post(keys::rotate))
        .route("/admin/keys/{id}/revoke", post(keys::revoke))
        .route("/admin/usage", get(keys::usage))
        .route("/admin/audit", get(keys::audit))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::require_master_key,
        ));
    Router::new()
        .merge(v1)
        .merge(admin)
        .route("/healthz", get(info::healthz))
        .route("/metrics", get(info::metrics))
        .route("/dashboard", get(info::dashboard))
        .route("/api/v1/dashboard", get(info::dashboard_state))
        .route("/readyz", get(info::readyz))
        .fallback(info::not_found)
        .method_not_allowed_fallback(info::method_not_allowed)
        .layer(DefaultBodyLimit::max(app.limits.max_body_bytes))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(app)
}
