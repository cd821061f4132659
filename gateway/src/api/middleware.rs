//! Cross-cutting request handling: request ids and key checks.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use tracing::Instrument as _;

use crate::app::App;
use crate::error::ApiError;

/// The request's id: the client's `x-request-id` when it is sane (1–128
/// visible ASCII characters), otherwise a fresh UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub const REQUEST_ID: &str = "x-request-id";

pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    // One span per API request (the root of its trace when exported over
    // OTLP): until the response head is sent (a stream's first chunk).
    let mut resp = if req.uri().path().starts_with("/v1/") {
        let span = tracing::info_span!(
            "request",
            otel.kind = "server",
            http.request.method = %req.method(),
            url.path = %req.uri().path(),
            request_id = %id,
            tenant = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        let resp = next.run(req).instrument(span.clone()).await;
        span.record("http.response.status_code", resp.status().as_u16());
        resp
    } else {
        next.run(req).await
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// Constant-time comparison, so response timing does not reveal a key.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A gRPC interceptor: when `secret` is set, the request's
/// `authorization: Bearer …` metadata must be it (constant-time);
/// otherwise `UNAUTHENTICATED` with `missing` or `wrong`.
#[derive(Clone)]
pub(crate) struct GrpcBearer {
    pub secret: Option<std::sync::Arc<secrecy::SecretString>>,
    pub missing: &'static str,
    pub wrong: &'static str,
}

impl tonic::service::Interceptor for GrpcBearer {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        use secrecy::ExposeSecret;
        let Some(secret) = &self.secret else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            None => Err(tonic::Status::unauthenticated(self.missing)),
            Some(k) if same(k.as_bytes(), secret.expose_secret().as_bytes()) => Ok(req),
            Some(_) => Err(tonic::Status::unauthenticated(self.wrong)),
        }
    }
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// `/v1/*`: when a master key is configured, the caller must present it
/// or a live virtual key; the caller becomes the request's
/// [`Principal`](crate::access::Principal) (the `default` tenant when the
/// gateway is open).
pub async fn require_client_key(
    State(app): State<Arc<App>>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match &app.access {
        Some(access) => match access.authenticate(bearer(&req)) {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        },
        None => crate::access::Principal::default_tenant(),
    };
    tracing::Span::current().record("tenant", &*principal.tenant);
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// `/admin/*`: only with the master key; absent when none is configured.
pub async fn require_master_key(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(master) = &app.master_key else {
        return ApiError::NotFound(
            "The admin API is disabled: set auth.master_key to enable it.".into(),
        )
        .into_response();
    };
    match bearer(&req) {
        Some(k) if same(k.as_bytes(), master.expose_secret().as_bytes()) => next.run(req).await,
        _ => ApiError::Unauthorized("The admin API needs the master key.".into()).into_response(),
    }
}
