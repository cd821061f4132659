//! The one error type handlers return, rendered in OpenAI's shape:
//! `{"error": {"message", "type", "param", "code"}}` with the right status.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::providers::{ProviderError, TimeoutPhase};

/// An error the client sees.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid request (400).
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    /// Missing or wrong credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The requested model is not configured (404).
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    /// No such route (404).
    #[error("{0}")]
    NotFound(String),
    /// No such object (batch, file) (404).
    #[error("{0}")]
    Missing(String),
    /// The object's state forbids the action (409).
    #[error("{0}")]
    Conflict(String),
    /// Known route, wrong method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Body over `server.max_body_bytes` (413).
    #[error("Request body is larger than the limit of {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    /// Every deployment of the group failed; carries the last failure.
    #[error("{}", upstream_message(.deployment, .error))]
    Upstream {
        deployment: String,
        error: ProviderError,
    },
    /// A fault inside the gateway (500).
    #[error("{0}")]
    Internal(String),
    /// A rate limit of the caller's key or tenant (429); no `retry_after`:
    /// the request alone exceeds the limit.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// A budget of the caller's key or tenant is spent (429,
    /// `insufficient_quota`, not retried by the SDKs).
    #[error("{0}")]
    QuotaExceeded(String),
    /// Temporarily unable to serve (503), with a retry hint.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
        code: &'static str,
    },
}

fn upstream_message(deployment: &str, error: &ProviderError) -> String {
    match error {
        ProviderError::Status {
            status, message, ..
        } => match status {
            400 | 413 | 422 => message.clone(),
            401 | 403 => format!(
                "Upstream deployment `{deployment}` rejected the gateway's credentials (HTTP {status})."
            ),
            429 => format!("Upstream deployment `{deployment}` is rate limited: {message}"),
            _ => format!("Upstream deployment `{deployment}` failed with HTTP {status}: {message}"),
        },
        ProviderError::Timeout(phase) => {
            format!("Upstream deployment `{deployment}` timed out ({phase}).")
        }
        other => format!("Upstream deployment `{deployment}` failed: {other}"),
    }
}

impl ApiError {
    /// 400 with the offending parameter named.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
            code: None,
        }
    }

    /// The HTTP status, in one exhaustive match.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::ModelNotFound(_) | Self::NotFound(_) | Self::Missing(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } | Self::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Upstream { error, .. } => match error {
                ProviderError::Status { status, .. } => match status {
                    400 => StatusCode::BAD_REQUEST,
                    413 => StatusCode::PAYLOAD_TOO_LARGE,
                    422 => StatusCode::UNPROCESSABLE_ENTITY,
                    429 => StatusCode::TOO_MANY_REQUESTS,
                    _ => StatusCode::BAD_GATEWAY,
                },
                ProviderError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                ProviderError::Unsupported(_) => StatusCode::BAD_REQUEST,
                ProviderError::Connect(_)
                | ProviderError::Transport(_)
                | ProviderError::Protocol(_) => StatusCode::BAD_GATEWAY,
            },
        }
    }

    /// OpenAI's `type` field.
    pub fn error_type(&self) -> &'static str {
        if let Self::QuotaExceeded(_) = self {
            return "insufficient_quota";
        }
        match self.status_code().as_u16() {
            400 | 404 | 405 | 409 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            429 => "rate_limit_error",
            500 => "server_error",
            503 => "service_unavailable",
            _ => "upstream_error",
        }
    }

    /// OpenAI's `code` field.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::InvalidRequest { code, .. } => *code,
            Self::Unauthorized(_) => Some("invalid_api_key"),
            Self::ModelNotFound(_) => Some("model_not_found"),
            Self::NotFound(_) => Some("unknown_url"),
            Self::Missing(_) => None,
            Self::Conflict(_) => Some("conflict"),
            Self::MethodNotAllowed(_) => Some("method_not_allowed"),
            Self::PayloadTooLarge { .. } => Some("request_too_large"),
            Self::Unavailable { code, .. } => Some(code),
            Self::RateLimited { .. } => Some("rate_limit_exceeded"),
            Self::QuotaExceeded(_) => Some("insufficient_quota"),
            Self::Internal(_) => None,
            Self::Upstream { error, .. } => Some(match error {
                ProviderError::Status {
                    status: 401 | 403, ..
                } => "upstream_auth_failed",
                ProviderError::Status { status: 429, .. } => "upstream_rate_limited",
                ProviderError::Status { .. } => "upstream_error",
                ProviderError::Timeout(TimeoutPhase::Connect) => "upstream_connect_timeout",
                ProviderError::Timeout(_) => "upstream_timeout",
                ProviderError::Connect(_) => "upstream_unreachable",
                ProviderError::Transport(_) => "upstream_connection_error",
                ProviderError::Protocol(_) => "upstream_invalid_response",
                ProviderError::Unsupported(_) => "unsupported_parameter",
            }),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => param.as_deref(),
            Self::ModelNotFound(_) => Some("model"),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } | Self::RateLimited { retry_after, .. } => {
                *retry_after
            }
            Self::Upstream {
                error: ProviderError::Status { retry_after, .. },
                ..
            } => *retry_after,
            _ => None,
        }
    }

    /// The JSON body, also used for the error event that ends a failed stream.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.to_string(),
            "type": self.error_type(),
            "param": self.param(),
            "code": self.code(),
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status_code(), Json(self.body())).into_response();
        if matches!(
            self,
            Self::Conflict(_)
                | Self::QuotaExceeded(_)
                | Self::RateLimited {
                    retry_after: None,
                    ..
                }
        ) {
            // OpenAI's SDKs retry 409 (a lock time-out there) and 429 unless
            // told not to; these will fail again.
            resp.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if matches!(self, Self::Unauthorized(_) | Self::PayloadTooLarge { .. }) {
            // Refused before (all of) the request body was read: the server
            // closes such a connection once the response is out. Saying so
            // keeps a client from reusing it for its next request, which
            // would race the close and fail with "server disconnected".
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
