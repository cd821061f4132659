//! Body extraction whose every rejection is an OpenAI-shaped error: too
//! large (413), not JSON (400), not an object (400), wrong field types (400
//! naming the field).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::app::App;
use crate::error::ApiError;

/// A JSON object body (the `Value` is always an object).
pub struct JsonObject(pub Value);

impl JsonObject {
    pub fn map(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
        self.0.as_object().unwrap_or(&EMPTY)
    }
}

impl FromRequest<std::sync::Arc<App>> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &std::sync::Arc<App>) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, app).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: app.limits.max_body_bytes,
                }
            } else {
                ApiError::invalid(format!("Could not read the request body: {e}"), None)
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => Ok(Self(v)),
            Ok(_) => Err(ApiError::invalid(
                "The request body must be a JSON object.",
                None,
            )),
            Err(e) => Err(ApiError::invalid(
                format!("We could not parse the JSON body of your request: {e}"),
                None,
            )),
        }
    }
}

/// Deserialize a typed view of `body`; the error names the offending field
/// (`messages[2].role`) as OpenAI's `param`.
pub fn view<T: DeserializeOwned>(body: &JsonObject) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(&body.0).map_err(|e| {
        let mut param = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            param = if param == "." {
                field.to_owned()
            } else {
                format!("{param}.{field}")
            };
        }
        let param = (param != ".").then_some(param);
        let message = match &param {
            Some(p) => format!("Invalid value for '{p}': {message}"),
            None => format!("Invalid request: {message}"),
        };
        ApiError::InvalidRequest {
            message,
            param,
            code: Some("invalid_value"),
        }
    })
}
