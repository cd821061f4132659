//! Admin API of virtual keys, usage and audit (behind the master key):
//!
//! - `POST /admin/keys`: create; the answer's `key` is the only time the
//!   secret is shown.
//! - `GET /admin/keys[?tenant=T]`, `GET /admin/keys/{id}`: attributes and
//!   today's and this month's spend, never secrets.
//! - `PATCH /admin/keys/{id}`: change attributes.
//! - `POST /admin/keys/{id}/rotate`: a new secret, same key.
//! - `POST /admin/keys/{id}/revoke`.
//! - `GET /admin/usage?group_by=tenant,key,model_group,provider,day&start=&end=`.
//! - `GET /admin/audit?limit=&since=`.
//!
//! Every change is written to the audit log with its actor: `master_key`,
//! plus the `x-switchyard-actor` header's name when given (the CLI sends
//! the operator's login).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{JsonObject, view};
use crate::access::Access;
use crate::access::ledger::{UsageQuery, report};
use crate::access::store::{KeyPatch, KeyRecord, StoreError};
use crate::app::App;
use crate::error::ApiError;

pub const ACTOR_HEADER: &str = "x-switchyard-actor";

fn access(app: &App) -> Result<&Arc<Access>, ApiError> {
    app.access
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("Virtual keys need auth.master_key.".into()))
}

/// Who did it, for the audit log.
pub fn actor(headers: &HeaderMap) -> String {
    match headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(64)
                .collect::<String>()
        })
        .filter(|v| !v.trim().is_empty())
    {
        Some(name) => format!("master_key ({})", name.trim()),
        None => "master_key".into(),
    }
}

/// Query parameters, or a 400 in OpenAI's shape.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(e.body_text(), None))
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NoSuchKey(_) => ApiError::Missing(e.to_string()),
        StoreError::Invalid(m) => ApiError::invalid(m, None),
        StoreError::Db(_) => ApiError::Internal(e.to_string()),
    }
}

fn key_json(access: &Access, k: &KeyRecord) -> Value {
    let (day, month) = access.spent(&format!("key:{}", k.id));
    let mut v = serde_json::to_value(k).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("object".into(), json!("virtual_key"));
        o.insert("spend_today_usd".into(), json!(day));
        o.insert("spend_this_month_usd".into(), json!(month));
    }
    v
}

/// A key's attributes and, this once, its secret.
fn with_secret(access: &Access, k: &KeyRecord, secret: &str) -> Json<Value> {
    let mut v = key_json(access, k);
    v["key"] = json!(secret);
    Json(v)
}

/// Model groups a key may name must exist (a typo would lock it out).
fn check_models(app: &App, patch: &KeyPatch) -> Result<(), ApiError> {
    for m in patch.models.iter().flatten() {
        if app.groups.get(m).is_none() && !app.embeddings.contains_key(m) {
            return Err(ApiError::invalid(
                format!("`models`: no model group `{m}` is configured."),
                Some("models"),
            ));
        }
    }
    Ok(())
}

pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Json<Value>, ApiError> {
    let access = access(&app)?;
    let patch: KeyPatch = view(&body)?;
    check_models(&app, &patch)?;
    let (record, secret) = access
        .store
        .create(patch, &actor(&headers))
        .map_err(store_error)?;
    tracing::info!(key_id = %record.id, tenant = %record.tenant, "virtual key created");
    Ok(with_secret(access, &record, &secret))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    tenant: Option<String>,
}

pub async fn list(
    State(app): State<Arc<App>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&app)?;
    let q = query(q)?;
    let data: Vec<Value> = access
        .store
        .list(q.tenant.as_deref())
        .iter()
        .map(|k| key_json(access, k))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&app)?;
    let k = access
        .store
        .get(&id)
        .ok_or_else(|| store_error(StoreError::NoSuchKey(id)))?;
    Ok(Json(key_json(access, &k)))
}

pub async fn update(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Json<Value>, ApiError> {
    let access = access(&app)?;
    let patch: KeyPatch = view(&body)?;
    check_models(&app, &patch)?;
    let record = access
        .store
        .update(&id, patch, &actor(&headers))
        .map_err(store_error)?;
    Ok(Json(key_json(access, &record)))
}

pub async fn rotate(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let access = access(&app)?;
    let (record, secret) = access
        .store
        .rotate(&id, &actor(&headers))
        .map_err(store_error)?;
    tracing::info!(key_id = %record.id, "virtual key rotated");
    Ok(with_secret(access, &record, &secret))
}

pub async fn revoke(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let access = access(&app)?;
    let record = access
        .store
        .revoke(&id, &actor(&headers))
        .map_err(store_error)?;
    tracing::info!(key_id = %record.id, "virtual key revoked");
    Ok(Json(key_json(access, &record)))
}

/// The ledger, aggregated; every record written so far is included.
pub async fn usage(
    State(app): State<Arc<App>>,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&app)?.clone();
    let q = query(q)?;
    let rows = tokio::task::spawn_blocking(move || {
        access.ledger.flush();
        report(&access.store, &q)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(store_error)?;
    Ok(Json(json!({"object": "list", "data": rows})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Most entries returned (default 100, at most 10,000).
    limit: Option<usize>,
    /// Unix seconds.
    since: Option<u64>,
}

pub async fn audit(
    State(app): State<Arc<App>>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let access = access(&app)?.clone();
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    let since = q.since.unwrap_or(0).saturating_mul(1000);
    let entries = tokio::task::spawn_blocking(move || access.store.audit_log(limit, since))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(store_error)?;
    Ok(Json(json!({"object": "list", "data": entries})))
}
