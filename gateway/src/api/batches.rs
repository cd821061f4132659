//! OpenAI's Files (`purpose=batch`) and Batches API over the batch store
//! (docs/batch.md): upload a JSONL file, create a batch from it, poll it,
//! download its output and error files.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Multipart, Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::extract::JsonObject;
use crate::access::Principal;
use crate::app::App;
use crate::batch::store::{BatchSpec, FileRow};
use crate::batch::{
    BatchError, BatchRow, Batches, Endpoint, Invalid, NewItem, blocking, now_ms, openai_line,
};
use crate::error::ApiError;

/// Output lines rendered per store read.
const PAGE: usize = 1_000;

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Invalid(m) => ApiError::InvalidRequest {
                message: m,
                param: None,
                code: Some("invalid_batch"),
            },
            BatchError::NotFound(m) => ApiError::Missing(m),
            BatchError::Conflict(m) => ApiError::Conflict(m),
            BatchError::Store(e) => {
                tracing::error!(error = %e, "batch store error");
                ApiError::Internal("The batch store failed (logged).".into())
            }
        }
    }
}

impl From<crate::batch::store::StoreError> for ApiError {
    fn from(e: crate::batch::store::StoreError) -> Self {
        BatchError::from(e).into()
    }
}

fn enabled(app: &App) -> Result<&Arc<Batches>, ApiError> {
    app.batches.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "The batch API is disabled on this gateway: set [batch] enabled = true.".into(),
        )
    })
}

fn reply(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn secs(ms: i64) -> i64 {
    ms / 1_000
}

fn file_json(f: &FileRow, bytes: i64) -> Value {
    json!({
        "id": f.id,
        "object": "file",
        "bytes": bytes,
        "created_at": secs(f.created_ms),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "status_details": null,
        "expires_at": null,
    })
}

/// A batch in OpenAI's shape, plus Switchyard's own counts.
pub fn batch_json(b: &BatchRow) -> Value {
    let c = b.counts;
    let at = |state: crate::batch::State| {
        (b.state == state)
            .then_some(b.finished_ms)
            .flatten()
            .map(secs)
    };
    use crate::batch::State as S;
    let status = b.state.as_str();
    json!({
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint.path(),
        "errors": null,
        "input_file_id": b.input_file_id.clone().unwrap_or_default(),
        "completion_window": b.completion_window,
        "status": status,
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": secs(b.created_ms),
        "in_progress_at": secs(b.created_ms),
        "expires_at": secs(b.deadline_ms),
        "finalizing_at": b.finished_ms.map(secs),
        "completed_at": at(S::Completed),
        "failed_at": at(S::Failed),
        "expired_at": at(S::Expired),
        "cancelling_at": at(S::Cancelled),
        "cancelled_at": at(S::Cancelled),
        "request_counts": {
            "total": c.total,
            "completed": c.succeeded,
            "failed": c.failed + c.cancelled + c.expired,
        },
        "metadata": serde_json::from_str::<Value>(&b.metadata).unwrap_or(json!({})),
        "switchyard": {
            "priority": b.priority,
            "pending": c.pending(),
            "cancelled": c.cancelled,
            "expired": c.expired,
            "placed_local": c.placed_local,
            "placed_external": c.placed_external,
            "from_cache": c.from_cache,
        },
    })
}

/// `POST /v1/files` (multipart: `purpose`, `file`): the file goes to disk
/// as it arrives, then its row is committed.
pub async fn upload(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Principal>,
    mut form: Multipart,
) -> Response {
    reply(upload_in(&app, &mut form, &caller).await)
}

async fn upload_in(app: &App, form: &mut Multipart, caller: &Principal) -> Result<Value, ApiError> {
    let batches = enabled(app)?;
    let limit = batches.settings.max_file_bytes;
    let id = format!("file-{}", uuid::Uuid::new_v4().simple());
    let path = batches.store.file_path(&id);
    let tmp = path.with_extension("part");
    // Removes the part file however this ends (the client may go away
    // mid-upload, dropping this future); disarmed once renamed.
    let mut guard = PartFile(Some(tmp.clone()));
    let mut purpose = None;
    let mut stored: Option<(String, u64)> = None;
    let bad = |m: String| ApiError::invalid(m, None);
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("Could not read the multipart body: {e}")))?
    {
        match field.name() {
            Some("purpose") => {
                purpose = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| bad(format!("Could not read 'purpose': {e}")))?,
                );
            }
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_owned();
                let mut out = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| ApiError::Internal(format!("cannot store the file: {e}")))?;
                let mut bytes = 0u64;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| bad(format!("Could not read 'file': {e}")))?
                {
                    bytes += chunk.len() as u64;
                    if bytes > limit {
                        return Err(ApiError::InvalidRequest {
                            message: format!(
                                "The file is larger than this gateway's limit of {limit} bytes (batch.max_file_bytes)."
                            ),
                            param: Some("file".into()),
                            code: Some("file_too_large"),
                        });
                    }
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| ApiError::Internal(format!("cannot store the file: {e}")))?;
                }
                out.sync_all()
                    .await
                    .map_err(|e| ApiError::Internal(format!("cannot store the file: {e}")))?;
                stored = Some((filename, bytes));
            }
            _ => {}
        }
    }
    let result = async {
        match purpose.as_deref() {
            Some("batch") => {}
            Some(p) => {
                return Err(ApiError::InvalidRequest {
                    message: format!(
                        "Unsupported purpose `{p}`: this gateway stores files for purpose=batch only."
                    ),
                    param: Some("purpose".into()),
                    code: Some("invalid_purpose"),
                });
            }
            None => return Err(ApiError::invalid("Missing 'purpose'.", Some("purpose"))),
        }
        let Some((filename, bytes)) = stored.clone() else {
            return Err(ApiError::invalid("Missing 'file'.", Some("file")));
        };
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| ApiError::Internal(format!("cannot store the file: {e}")))?;
        guard.0 = None;
        // The rename itself must survive a crash before the row says so.
        if let Some(parent) = path.parent()
            && let Ok(d) = tokio::fs::File::open(parent).await
        {
            let _ = d.sync_all().await;
        }
        let row = FileRow {
            id: id.clone(),
            purpose: "batch".into(),
            filename,
            bytes: bytes as i64,
            created_ms: now_ms(),
            kind: "upload".into(),
            batch: None,
            owner: caller.tenant.to_string(),
        };
        let store = batches.store.clone();
        let r = row.clone();
        blocking(move || store.insert_file(&r)).await?;
        Ok(file_json(&row, row.bytes))
    }
    .await;
    if result.is_err() && guard.0.is_none() {
        // Renamed, but the row was not stored.
        let _ = tokio::fs::remove_file(&path).await;
    }
    result
}

/// A part file to delete on drop.
struct PartFile(Option<std::path::PathBuf>);

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The caller's file `id`; another tenant's is as missing as none.
async fn file_row(batches: &Batches, id: &str, caller: &Principal) -> Result<FileRow, ApiError> {
    let store = batches.store.clone();
    let key = id.to_owned();
    blocking(move || store.file(&key))
        .await?
        .filter(|f| f.owner == *caller.tenant)
        .ok_or_else(|| ApiError::Missing(format!("No file with id `{id}`.")))
}

/// `GET /v1/files/{id}`.
pub async fn file(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    reply(
        async {
            let batches = enabled(&app)?;
            let f = file_row(batches, &id, &caller).await?;
            let bytes = match f.batch {
                Some(seq) if f.kind != "upload" => {
                    let mut n = 0i64;
                    let mut lines = Box::pin(output_lines(batches.clone(), seq, f.kind == "error"));
                    while let Some(chunk) = lines.next().await {
                        n += chunk?.len() as i64;
                    }
                    n
                }
                _ => f.bytes,
            };
            Ok(file_json(&f, bytes))
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
    purpose: Option<String>,
}

/// `GET /v1/files`.
pub async fn files(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    reply(
        async {
            let batches = enabled(&app)?;
            let limit = q.limit.unwrap_or(10_000).clamp(1, 10_000);
            let store = batches.store.clone();
            let rows =
                blocking(move || store.files(limit, q.purpose.as_deref(), &caller.tenant)).await?;
            let data: Vec<Value> = rows.iter().map(|f| file_json(f, f.bytes)).collect();
            Ok(json!({"object": "list", "data": data, "has_more": false}))
        }
        .await,
    )
}

/// `DELETE /v1/files/{id}`: uploads only.
pub async fn delete_file(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    reply(
        async {
            let batches = enabled(&app)?;
            let f = file_row(batches, &id, &caller).await?;
            if f.kind != "upload" {
                return Err(ApiError::Conflict(format!(
                    "File `{id}` is a batch's output; it goes with its batch."
                )));
            }
            let store = batches.store.clone();
            let key = id.clone();
            blocking(move || store.delete_file(&key)).await?;
            let _ = tokio::fs::remove_file(batches.store.file_path(&id)).await;
            Ok(json!({"id": id, "object": "file", "deleted": true}))
        }
        .await,
    )
}

/// A batch's output (`errors == false`) or error file, rendered from its
/// items page by page.
fn output_lines(
    batches: Arc<Batches>,
    seq: i64,
    errors: bool,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, ApiError>> + Send {
    futures_util::stream::unfold(Some(i64::MIN), move |after| {
        let batches = batches.clone();
        async move {
            let after = after?;
            let store = batches.store.clone();
            let page = blocking(move || {
                let batch = store.batch_by_seq(seq)?;
                let rows = store.finished_in_order(seq, after, errors, PAGE)?;
                Ok((batch, rows))
            })
            .await;
            match page {
                Err(e) => Some((Err(ApiError::from(e)), None)),
                Ok((_, rows)) if rows.is_empty() => None,
                Ok((batch, rows)) => {
                    let id = batch.map(|b| b.id).unwrap_or_default();
                    let next = (rows.len() == PAGE)
                        .then(|| {
                            rows.last()
                                .map(|r| crate::batch::store::item_key(seq, r.index))
                        })
                        .flatten();
                    let mut text = String::new();
                    for r in &rows {
                        text.push_str(&openai_line(&id, r));
                        text.push('\n');
                    }
                    Some((Ok(bytes::Bytes::from(text)), next))
                }
            }
        }
    })
}

/// `GET /v1/files/{id}/content`.
pub async fn file_content(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let batches = enabled(&app)?;
        let f = file_row(batches, &id, &caller).await?;
        let body = match f.batch {
            Some(seq) if f.kind != "upload" => {
                let lines = output_lines(batches.clone(), seq, f.kind == "error");
                Body::from_stream(
                    lines.map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))),
                )
            }
            _ => {
                let file = tokio::fs::File::open(batches.store.file_path(&id))
                    .await
                    .map_err(|e| ApiError::Internal(format!("file `{id}` unreadable: {e}")))?;
                Body::from_stream(tokio_util_stream(file))
            }
        };
        let mut resp = Response::new(body);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jsonl"),
        );
        Ok::<_, ApiError>(resp)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A file read in 64 KiB chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// `"24h"`, or (a Switchyard extension) any `<n>s|m|h|d` up to 366 days.
fn parse_window(w: &str) -> Option<u64> {
    let (n, unit) = w.split_at(w.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    let secs = n.checked_mul(match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    })?;
    (1..=366 * 86_400).contains(&secs).then_some(secs)
}

#[derive(Debug, Deserialize)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
}

/// `POST /v1/batches`: reads the input file line by line into the store;
/// the batch is returned once it is committed (durable).
pub async fn create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Principal>,
    body: Result<JsonObject, ApiError>,
) -> Response {
    reply(create_in(&app, body, &caller).await)
}

async fn create_in(
    app: &App,
    body: Result<JsonObject, ApiError>,
    caller: &Principal,
) -> Result<Value, ApiError> {
    let batches = enabled(app)?;
    let body = body?;
    let req: CreateBatch = super::extract::view(&body)?;
    let endpoint = Endpoint::from_path(&req.endpoint).ok_or_else(|| ApiError::InvalidRequest {
        message: format!(
            "Unsupported endpoint `{}`: batches support /v1/chat/completions, /v1/embeddings and /v1/completions.",
            req.endpoint
        ),
        param: Some("endpoint".into()),
        code: Some("invalid_endpoint"),
    })?;
    let window = parse_window(&req.completion_window).ok_or_else(|| ApiError::InvalidRequest {
        message: format!(
            "Invalid completion_window `{}`: use `24h`, or a duration such as `90s`, `30m`, `2h`, `1d`.",
            req.completion_window
        ),
        param: Some("completion_window".into()),
        code: Some("invalid_completion_window"),
    })?;
    if let Some(m) = &req.metadata
        && (m.len() > 16 || m.values().any(|v| !v.is_string()))
    {
        return Err(ApiError::invalid(
            "'metadata' holds at most 16 string values.",
            Some("metadata"),
        ));
    }
    let file = file_row(batches, &req.input_file_id, caller).await?;
    if file.kind != "upload" || file.purpose != "batch" {
        return Err(ApiError::invalid(
            format!("File `{}` is not a purpose=batch upload.", file.id),
            Some("input_file_id"),
        ));
    }
    let created_ms = now_ms();
    let spec = BatchSpec {
        id: format!("batch_{}", uuid::Uuid::new_v4().simple()),
        endpoint,
        priority: 2,
        metadata: Value::Object(req.metadata.unwrap_or_default()).to_string(),
        input_file_id: Some(file.id.clone()),
        completion_window: req.completion_window.clone(),
        created_ms,
        deadline_ms: created_ms + (window as i64) * 1_000,
        owner: caller.tenant.to_string(),
        owner_key: caller.key_id().map(str::to_owned),
    };
    let reader = tokio::fs::File::open(batches.store.file_path(&file.id))
        .await
        .map_err(|e| ApiError::Internal(format!("file `{}` unreadable: {e}", file.id)))?;
    let mut reader = tokio::io::BufReader::new(reader);
    let mut creating = batches.begin(spec).await?;
    // A line holds one request body plus its envelope.
    let cap = batches.max_body_bytes + 64 * 1024;
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        let read = read_line_capped(&mut reader, &mut buf, cap)
            .await
            .map_err(|e| ApiError::Internal(format!("input file unreadable: {e}")))?;
        let item = match read {
            Line::End => break,
            Line::TooLong => {
                n += 1;
                NewItem {
                    custom_id: None,
                    endpoint,
                    body: Vec::new(),
                    invalid: Some(Invalid::line(
                        "line_too_long",
                        format!("line {}: longer than {cap} bytes", n),
                    )),
                }
            }
            Line::Complete => {
                n += 1;
                match std::str::from_utf8(&buf) {
                    Ok(line) if line.trim().is_empty() => continue,
                    Ok(line) => parse_line(line, n, endpoint),
                    Err(_) => NewItem {
                        custom_id: None,
                        endpoint,
                        body: Vec::new(),
                        invalid: Some(Invalid::line(
                            "invalid_json_line",
                            format!("line {n}: not UTF-8 text"),
                        )),
                    },
                }
            }
        };
        creating.push(item).await?;
    }
    let row = creating.finish().await?;
    Ok(batch_json(&row))
}

enum Line {
    Complete,
    TooLong,
    End,
}

/// Reads one line (without its newline) into `buf`, keeping at most `cap`
/// bytes: a longer line is skipped to its end and reported, so memory is
/// bounded by `cap` whatever the file holds.
async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Complete,
            });
        }
        any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if !too_long {
            if buf.len() + part.len() > cap {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// One input line (`{"custom_id", "method", "url", "body"}`) as an item;
/// what is wrong with it becomes its error-file entry.
fn parse_line(line: &str, n: u64, endpoint: Endpoint) -> NewItem {
    let item = |custom_id, body: Vec<u8>, invalid| NewItem {
        custom_id,
        endpoint,
        body,
        invalid,
    };
    let v: Value = match serde_json::from_str(line) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return item(
                None,
                Vec::new(),
                Some(Invalid::line(
                    "invalid_json_line",
                    format!("line {n}: not a JSON object"),
                )),
            );
        }
        Err(e) => {
            return item(
                None,
                Vec::new(),
                Some(Invalid::line(
                    "invalid_json_line",
                    format!("line {n}: not JSON: {e}"),
                )),
            );
        }
    };
    let custom_id = v
        .get("custom_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let body = v
        .get("body")
        .map(|b| b.to_string().into_bytes())
        .unwrap_or_default();
    let method = v.get("method").and_then(Value::as_str).unwrap_or("POST");
    let url = v
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or(endpoint.path());
    let invalid = if !method.eq_ignore_ascii_case("POST") {
        Some(Invalid::request(
            400,
            "invalid_method",
            Some("method"),
            format!("line {n}: method `{method}`; batch items are POST requests."),
        ))
    } else if url != endpoint.path() {
        Some(Invalid::request(
            400,
            "endpoint_mismatch",
            Some("url"),
            format!(
                "line {n}: url `{url}` differs from the batch's endpoint `{}`.",
                endpoint.path()
            ),
        ))
    } else if v.get("body").is_none() {
        Some(Invalid::request(
            400,
            "missing_body",
            Some("body"),
            format!("line {n}: no 'body'."),
        ))
    } else {
        None
    };
    item(custom_id, body, invalid)
}

/// The caller's batch `id`; another tenant's is as missing as none.
async fn batch_row(app: &App, id: &str, caller: &Principal) -> Result<BatchRow, ApiError> {
    let row = enabled(app)?.get(id).await?;
    if row.owner != *caller.tenant {
        return Err(ApiError::Missing(format!("No batch with id `{id}`.")));
    }
    Ok(row)
}

/// `GET /v1/batches/{id}`.
pub async fn batch(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    reply(batch_row(&app, &id, &caller).await.map(|b| batch_json(&b)))
}

/// `POST /v1/batches/{id}/cancel`.
pub async fn cancel(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    reply(
        async {
            batch_row(&app, &id, &caller).await?;
            let row = enabled(&app)?.cancel(&id).await?;
            Ok(batch_json(&row))
        }
        .await,
    )
}

/// `GET /v1/batches?limit=&after=`: the caller's tenant's, newest first.
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    reply(
        async {
            let batches = enabled(&app)?;
            let limit = q.limit.unwrap_or(20).clamp(1, 100);
            let store = batches.store.clone();
            let after = q.after.clone();
            let mut rows =
                blocking(move || store.list(limit, after.as_deref(), &caller.tenant)).await?;
            let has_more = rows.len() > limit;
            rows.truncate(limit);
            let data: Vec<Value> = rows.iter().map(batch_json).collect();
            Ok(json!({
                "object": "list",
                "data": data,
                "first_id": rows.first().map(|b| b.id.clone()),
                "last_id": rows.last().map(|b| b.id.clone()),
                "has_more": has_more,
            }))
        }
        .await,
    )
}

/// `GET /api/v1/batches/stats`: batches by state, items by state and
/// placement, and what the runner is doing (queue depth, deadline slack).
pub async fn stats(State(app): State<Arc<App>>) -> Response {
    reply(
        async {
            let batches = enabled(&app)?;
            let store = batches.store.clone();
            let (by_state, items) =
                blocking(move || Ok((store.batches_by_state()?, store.item_totals()?))).await?;
            let by_state: serde_json::Map<String, Value> =
                by_state.into_iter().map(|(k, v)| (k, json!(v))).collect();
            let runner = batches.runner.borrow().clone();
            Ok(json!({
                "batches": by_state,
                "items": {
                    "total": items.total,
                    "pending": items.pending(),
                    "succeeded": items.succeeded,
                    "failed": items.failed,
                    "cancelled": items.cancelled,
                    "expired": items.expired,
                    "placed_local": items.placed_local,
                    "placed_external": items.placed_external,
                    "from_cache": items.from_cache,
                },
                "runner": runner,
            }))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_skipped_not_held() {
        let data = format!("short\r\n{}\n\nlast", "x".repeat(100));
        // A tiny buffer: lines span many reads.
        let mut r = tokio::io::BufReader::with_capacity(8, data.as_bytes());
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        loop {
            let line = read_line_capped(&mut r, &mut buf, 50).await.unwrap();
            match line {
                Line::End => break,
                Line::TooLong => {
                    assert!(buf.is_empty());
                    seen.push("<too long>".to_owned());
                }
                Line::Complete => seen.push(String::from_utf8(buf.clone()).unwrap()),
            }
        }
        assert_eq!(seen, ["short", "<too long>", "", "last"]);
    }

    #[test]
    fn completion_windows() {
        assert_eq!(parse_window("24h"), Some(86_400));
        assert_eq!(parse_window("90s"), Some(90));
        assert_eq!(parse_window("30m"), Some(1_800));
        assert_eq!(parse_window("2d"), Some(172_800));
        for bad in ["", "h", "0s", "24", "-1h", "1y", "400d", "1.5h"] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
    }

    #[test]
    fn input_lines_name_what_is_wrong_with_them() {
        let e = Endpoint::ChatCompletions;
        let ok = parse_line(
            r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}"#,
            1,
            e,
        );
        assert!(ok.invalid.is_none());
        assert_eq!(ok.custom_id.as_deref(), Some("a"));
        let code = |item: NewItem| {
            let inv = item.invalid.expect("invalid");
            let v: Value = serde_json::from_slice(&inv.response).expect("json");
            v.pointer("/error/code")
                .or_else(|| v.get("code"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        assert_eq!(
            code(parse_line("{not json", 2, e)).as_deref(),
            Some("invalid_json_line")
        );
        assert_eq!(
            code(parse_line("[1]", 3, e)).as_deref(),
            Some("invalid_json_line")
        );
        let wrong_url = parse_line(
            r#"{"custom_id":"b","url":"/v1/embeddings","body":{}}"#,
            4,
            e,
        );
        assert_eq!(code(wrong_url).as_deref(), Some("endpoint_mismatch"));
        let get = parse_line(r#"{"custom_id":"c","method":"GET","body":{}}"#, 5, e);
        assert_eq!(code(get).as_deref(), Some("invalid_method"));
        assert_eq!(
            code(parse_line(r#"{"custom_id":"d"}"#, 6, e)).as_deref(),
            Some("missing_body")
        );
    }
}
