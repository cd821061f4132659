//! The providers' own batch APIs, as each documents them:
//!
//! - OpenAI: `POST /v1/files` (multipart, `purpose=batch`, JSONL of
//!   `{custom_id, method, url, body}`), `GET /v1/files/{id}/content`,
//!   `POST /v1/batches` (`input_file_id`, `endpoint`, `completion_window`
//!   `24h`), `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`. The
//!   output file holds 2xx answers, the error file the others, each line
//!   `{id, custom_id, response: {status_code, request_id, body}, error}`.
//! - Anthropic Message Batches: `POST /v1/messages/batches` (`requests` of
//!   `{custom_id, params}`), `GET /v1/messages/batches/{id}` (`processing_status`
//!   `in_progress`, `canceling`, `ended`; `results_url` once ended),
//!   `GET …/results` (JSONL of `{custom_id, result: {type, message | error}}`),
//!   `POST …/cancel`.
//!
//! A batch stays in progress for [`FakeConfig::batch_delay`](crate::FakeConfig),
//! then each request runs through this fake's own handler for its endpoint
//! (so it gets the same answer a direct call would); a batch cancelled
//! before then ends with no results.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Multipart, Path, State};
use axum::http::{HeaderMap, Request, Response, StatusCode, Uri};
use bytes::Bytes;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::faults::Fault;
use crate::server::{FakeState, json_response, lock, new_id, now_secs, with_retry_after};

type FaultExt = Option<Extension<Fault>>;

/// The error a queued `Status` fault makes of this request, in the
/// provider's shape (`anthropic`: Anthropic's, else OpenAI's).
fn status_fault(fault: FaultExt, anthropic: bool) -> Option<Response<Body>> {
    let Some(Extension(Fault::Status {
        status,
        retry_after_secs,
        message,
    })) = fault
    else {
        return None;
    };
    let message = message.unwrap_or_else(|| "injected failure".into());
    let resp = if anthropic {
        anthropic_error(status, "api_error", &message)
    } else {
        openai_error(status, &message)
    };
    Some(with_retry_after(resp, retry_after_secs))
}

/// Files and batches held by one fake.
#[derive(Debug, Default)]
pub(crate) struct BatchStore {
    files: HashMap<String, Bytes>,
    openai: HashMap<String, Value>,
    anthropic: HashMap<String, (Value, Option<Bytes>)>,
}

/// Request lines the fake takes per batch at most.
const MAX_REQUESTS: usize = 50_000;

fn openai_error(status: u16, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
    )
}

fn anthropic_error(status: u16, kind: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// Records the request, then the response that refuses it, if any: a
/// queued `Status` fault, or missing credentials in the provider's own
/// scheme (Anthropic's `x-api-key` and `anthropic-version`, else Bearer).
fn refusal(
    st: &FakeState,
    fault: FaultExt,
    (uri, headers, body): (&Uri, &HeaderMap, &Bytes),
    anthropic: bool,
) -> Option<Response<Body>> {
    st.record(uri, headers, body);
    if let Some(resp) = status_fault(fault, anthropic) {
        return Some(resp);
    }
    if anthropic {
        anthropic_refusal(st, headers)
    } else {
        (!bearer_ok(st, headers)).then(|| openai_error(401, "Incorrect API key provided."))
    }
}

fn bearer_ok(st: &FakeState, headers: &HeaderMap) -> bool {
    st.key_ok(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ")),
    )
}

/// The refusal of a request without Anthropic's headers, if any.
fn anthropic_refusal(st: &FakeState, headers: &HeaderMap) -> Option<Response<Body>> {
    if !st.key_ok(headers.get("x-api-key").and_then(|v| v.to_str().ok())) {
        return Some(anthropic_error(
            401,
            "authentication_error",
            "invalid x-api-key",
        ));
    }
    if headers.get("anthropic-version").is_none() {
        return Some(anthropic_error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    None
}

/// Runs one request through this fake's own handler for `path`, marked
/// so the request log tells it from a direct call.
async fn run_one(
    router: &Router,
    path: &str,
    auth: &[(String, String)],
    body: &Value,
) -> (u16, Value) {
    let mut req = Request::post(path).header("content-type", "application/json");
    for (k, v) in auth {
        req = req.header(k.as_str(), v.as_str());
    }
    let Ok(req) = req
        .header("x-fake-batch-item", "1")
        .body(Body::from(body.to_string()))
    else {
        return (500, json!({"error": "bad request line"}));
    };
    let Ok(resp) = router.clone().oneshot(req).await;
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn auth_headers(headers: &HeaderMap, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|n| {
            let v = headers.get(*n)?.to_str().ok()?;
            Some(((*n).to_owned(), v.to_owned()))
        })
        .collect()
}

// ---- OpenAI ----

pub(crate) async fn upload(
    State(st): State<Arc<FakeState>>,
    fault: FaultExt,
    uri: Uri,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response<Body> {
    if let Some(resp) = refusal(&st, fault, (&uri, &headers, &Bytes::new()), false) {
        return resp;
    }
    let (mut purpose, mut file, mut filename) = (None, None, String::new());
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("purpose") => purpose = field.text().await.ok(),
            Some("file") => {
                filename = field.file_name().unwrap_or("upload").to_owned();
                file = field.bytes().await.ok();
            }
            _ => {}
        }
    }
    let Some(file) = file else {
        return openai_error(400, "'file' is a required property");
    };
    if purpose.as_deref() != Some("batch") {
        return openai_error(400, "The fake takes purpose=batch uploads only.");
    }
    let id = new_id("file-");
    let object = json!({"id": id, "object": "file", "bytes": file.len(), "created_at": now_secs(), "filename": filename, "purpose": "batch"});
    lock(&st.batches).files.insert(id, file);
    json_response(StatusCode::OK, &object)
}

pub(crate) async fn file_content(
    State(st): State<Arc<FakeState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    if let Some(resp) = refusal(&st, None, (&uri, &headers, &Bytes::new()), false) {
        return resp;
    }
    match lock(&st.batches).files.get(&id) {
        Some(b) => Response::new(Body::from(b.clone())),
        None => openai_error(404, &format!("No such File object: {id}")),
    }
}

pub(crate) async fn create_batch(
    State(st): State<Arc<FakeState>>,
    fault: FaultExt,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Some(resp) = refusal(&st, fault, (&uri, &headers, &body), false) {
        return resp;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return openai_error(400, "We could not parse the JSON body of your request.");
    };
    let endpoint = req["endpoint"].as_str().unwrap_or_default().to_owned();
    if !["/v1/chat/completions", "/v1/completions", "/v1/embeddings"].contains(&endpoint.as_str()) {
        return openai_error(400, &format!("Invalid endpoint: {endpoint:?}"));
    }
    if req["completion_window"].as_str() != Some("24h") {
        return openai_error(400, "completion_window must be '24h'");
    }
    let file_id = req["input_file_id"].as_str().unwrap_or_default().to_owned();
    let Some(input) = lock(&st.batches).files.get(&file_id).cloned() else {
        return openai_error(404, &format!("No such File object: {file_id}"));
    };
    let lines: Vec<&[u8]> = input
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    if lines.len() > MAX_REQUESTS {
        return openai_error(400, "Too many requests in the batch file.");
    }
    let mut parsed = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<Value>(line) {
            Ok(v) if v["url"].as_str() == Some(&endpoint) && v["custom_id"].is_string() => {
                parsed.push(v);
            }
            _ => {
                return openai_error(
                    400,
                    &format!("Line {}: not a request line for {endpoint}", i + 1),
                );
            }
        }
    }
    let id = new_id("batch_");
    let object = json!({
        "id": id, "object": "batch", "endpoint": endpoint, "errors": null,
        "input_file_id": file_id, "completion_window": "24h", "status": "in_progress",
        "output_file_id": null, "error_file_id": null, "created_at": now_secs(),
        "in_progress_at": now_secs(), "completed_at": null, "cancelled_at": null,
        "request_counts": {"total": parsed.len(), "completed": 0, "failed": 0},
        "metadata": req.get("metadata").cloned().unwrap_or(Value::Null),
    });
    lock(&st.batches).openai.insert(id.clone(), object.clone());
    let auth = auth_headers(&headers, &["authorization"]);
    let router = crate::server::routes(st.clone());
    let state = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(state.config.batch_delay).await;
        let cancelled = |s: &FakeState| {
            lock(&s.batches)
                .openai
                .get(&id)
                .is_none_or(|b| b["status"] == "cancelling")
        };
        let (mut out, mut err, mut ok, mut failed) = (Vec::new(), Vec::new(), 0, 0);
        for line in &parsed {
            if cancelled(&state) {
                break;
            }
            let (status, body) = run_one(&router, &endpoint, &auth, &line["body"]).await;
            let row = json!({"id": new_id("batch_req_"), "custom_id": line["custom_id"], "response": {"status_code": status, "request_id": new_id("req_"), "body": body}, "error": null});
            let buf = if (200..300).contains(&status) {
                ok += 1;
                &mut out
            } else {
                failed += 1;
                &mut err
            };
            buf.extend_from_slice(row.to_string().as_bytes());
            buf.push(b'\n');
        }
        let mut store = lock(&state.batches);
        let file = |store: &mut BatchStore, data: Vec<u8>| {
            (!data.is_empty()).then(|| {
                let fid = new_id("file-");
                store.files.insert(fid.clone(), Bytes::from(data));
                fid
            })
        };
        let out_id = file(&mut store, out);
        let err_id = file(&mut store, err);
        if let Some(b) = store.openai.get_mut(&id) {
            let was_cancelling = b["status"] == "cancelling";
            b["status"] = json!(if was_cancelling {
                "cancelled"
            } else {
                "completed"
            });
            b[if was_cancelling {
                "cancelled_at"
            } else {
                "completed_at"
            }] = json!(now_secs());
            b["output_file_id"] = json!(out_id);
            b["error_file_id"] = json!(err_id);
            b["request_counts"] = json!({"total": parsed.len(), "completed": ok, "failed": failed});
        }
    });
    json_response(StatusCode::OK, &object)
}

pub(crate) async fn get_batch(
    State(st): State<Arc<FakeState>>,
    fault: FaultExt,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    if let Some(resp) = refusal(&st, fault, (&uri, &headers, &Bytes::new()), false) {
        return resp;
    }
    match lock(&st.batches).openai.get(&id) {
        Some(b) => json_response(StatusCode::OK, b),
        None => openai_error(404, &format!("No batch found with id '{id}'.")),
    }
}

pub(crate) async fn cancel_batch(
    State(st): State<Arc<FakeState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    if let Some(resp) = refusal(&st, None, (&uri, &headers, &Bytes::new()), false) {
        return resp;
    }
    match lock(&st.batches).openai.get_mut(&id) {
        Some(b) if b["status"] == "in_progress" => {
            b["status"] = json!("cancelling");
            json_response(StatusCode::OK, b)
        }
        Some(b) => {
            let status = b["status"].clone();
            openai_error(400, &format!("Cannot cancel a batch with status {status}."))
        }
        None => openai_error(404, &format!("No batch found with id '{id}'.")),
    }
}

// ---- Anthropic ----

fn message_batch(id: &str, status: &str, counts: [usize; 5], base: Option<&str>) -> Value {
    let ended = status == "ended";
    json!({
        "id": id, "type": "message_batch", "processing_status": status,
        "request_counts": {"processing": counts[0], "succeeded": counts[1], "errored": counts[2], "canceled": counts[3], "expired": counts[4]},
        "ended_at": if ended { json!(now_secs()) } else { Value::Null },
        "created_at": now_secs(), "expires_at": now_secs() + 86_400,
        "cancel_initiated_at": null,
        "results_url": match (ended, base) {
            (true, Some(b)) => json!(format!("{b}/v1/messages/batches/{id}/results")),
            _ => Value::Null,
        },
    })
}

pub(crate) async fn create_message_batch(
    State(st): State<Arc<FakeState>>,
    fault: FaultExt,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Some(resp) = refusal(&st, fault, (&uri, &headers, &body), true) {
        return resp;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return anthropic_error(400, "invalid_request_error", "body is not JSON");
    };
    let Some(requests) = req["requests"]
        .as_array()
        .filter(|r| !r.is_empty())
        .cloned()
    else {
        return anthropic_error(400, "invalid_request_error", "requests: field required");
    };
    if requests.len() > 100_000 {
        return anthropic_error(400, "invalid_request_error", "too many requests");
    }
    for r in &requests {
        let ok = r["custom_id"].as_str().is_some_and(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !ok || !r["params"].is_object() {
            return anthropic_error(
                400,
                "invalid_request_error",
                "requests: each needs a custom_id matching ^[a-zA-Z0-9_-]{1,64}$ and params",
            );
        }
    }
    let id = new_id("msgbatch_");
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(|h| format!("http://{h}"));
    let object = message_batch(&id, "in_progress", [requests.len(), 0, 0, 0, 0], None);
    lock(&st.batches)
        .anthropic
        .insert(id.clone(), (object.clone(), None));
    let auth = auth_headers(&headers, &["x-api-key", "anthropic-version"]);
    let router = crate::server::routes(st.clone());
    let state = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(state.config.batch_delay).await;
        let mut out = Vec::new();
        let mut counts = [0usize, 0, 0, 0, 0];
        for r in &requests {
            let canceling = lock(&state.batches)
                .anthropic
                .get(&id)
                .is_none_or(|(b, _)| b["processing_status"] == "canceling");
            let result = if canceling {
                counts[3] += 1;
                json!({"type": "canceled"})
            } else {
                let (status, body) = run_one(&router, "/v1/messages", &auth, &r["params"]).await;
                if status == 200 {
                    counts[1] += 1;
                    json!({"type": "succeeded", "message": body})
                } else {
                    counts[2] += 1;
                    json!({"type": "errored", "error": body})
                }
            };
            out.extend_from_slice(
                json!({"custom_id": r["custom_id"], "result": result})
                    .to_string()
                    .as_bytes(),
            );
            out.push(b'\n');
        }
        let object = message_batch(&id, "ended", counts, host.as_deref());
        lock(&state.batches)
            .anthropic
            .insert(id, (object, Some(Bytes::from(out))));
    });
    json_response(StatusCode::OK, &object)
}

pub(crate) async fn get_message_batch(
    State(st): State<Arc<FakeState>>,
    fault: FaultExt,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    if let Some(resp) = refusal(&st, fault, (&uri, &headers, &Bytes::new()), true) {
        return resp;
    }
    match lock(&st.batches).anthropic.get(&id) {
        Some((b, _)) => json_response(StatusCode::OK, b),
        None => anthropic_error(404, "not_found_error", "batch not found"),
    }
}

pub(crate) async fn message_batch_results(
    State(st): State<Arc<FakeState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    if let Some(resp) = refusal(&st, None, (&uri, &headers, &Bytes::new()), true) {
        return resp;
    }
    match lock(&st.batches).anthropic.get(&id) {
        Some((_, Some(results))) => {
            let mut resp = Response::new(Body::from(results.clone()));
            if let Ok(v) = "application/x-jsonl".parse() {
                resp.headers_mut().insert("content-type", v);
            }
            resp
        }
        Some((_, None)) => anthropic_error(
            400,
            "invalid_request_error",
            "batch has not ended: no results yet",
        ),
        None => anthropic_error(404, "not_found_error", "batch not found"),
    }
}

pub(crate) async fn cancel_message_batch(
    State(st): State<Arc<FakeState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    if let Some(resp) = refusal(&st, None, (&uri, &headers, &Bytes::new()), true) {
        return resp;
    }
    match lock(&st.batches).anthropic.get_mut(&id) {
        Some((b, None)) => {
            b["processing_status"] = json!("canceling");
            b["cancel_initiated_at"] = json!(now_secs());
            json_response(StatusCode::OK, b)
        }
        Some((b, Some(_))) => json_response(StatusCode::OK, b),
        None => anthropic_error(404, "not_found_error", "batch not found"),
    }
}
