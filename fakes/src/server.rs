//! The fake upstream's HTTP server: accept loop, fault queue, request log.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, Response, StatusCode, Uri, header};
use axum::routing::{get, post};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::faults::Fault;
use crate::{anthropic, batches, openai};

/// How a fake upstream behaves when no fault is queued.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Pause between two streamed events.
    pub token_delay: Duration,
    /// When set, requests must carry exactly this key (Bearer, `api-key` or
    /// `x-api-key` by wire format); otherwise any non-empty key is accepted.
    pub api_key: Option<String>,
    /// Keep a log of the requests (disable for load benchmarks).
    pub record_requests: bool,
    /// How long a batch (OpenAI Batch API, Anthropic Message Batches)
    /// stays in progress before its requests run.
    pub batch_delay: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            token_delay: Duration::ZERO,
            api_key: None,
            record_requests: true,
            batch_delay: Duration::ZERO,
        }
    }
}

/// A request as it reached the fake upstream.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Value::String` with the raw text if it was not JSON).
    pub body: Value,
}

/// Shared state of one fake upstream.
#[derive(Debug)]
pub(crate) struct FakeState {
    pub(crate) config: FakeConfig,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<Vec<RecordedRequest>>,
    pub(crate) batches: Mutex<crate::batches::BatchStore>,
}

/// Requests kept in the log at most; older ones are dropped first.
const MAX_RECORDED: usize = 10_000;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeState {
    pub(crate) fn record(&self, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
        if !self.config.record_requests {
            return;
        }
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let mut log = lock(&self.requests);
        if log.len() >= MAX_RECORDED {
            log.remove(0);
        }
        log.push(RecordedRequest {
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers,
            body,
        });
    }

    /// The key a request must carry, if one is configured.
    pub(crate) fn key_ok(&self, presented: Option<&str>) -> bool {
        match (presented, &self.config.api_key) {
            (None, _) => false,
            (Some(p), Some(expected)) => p == expected,
            (Some(p), None) => !p.is_empty(),
        }
    }
}

/// A running fake upstream; stops when dropped.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<FakeState>,
    task: JoinHandle<()>,
}

impl FakeUpstream {
    /// Bind `listen` (port 0 picks a free port) and serve in the background.
    pub async fn start(listen: SocketAddr, config: FakeConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(FakeState {
            config,
            faults: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            batches: Mutex::default(),
        });
        let task = tokio::spawn(accept_loop(listener, routes(state.clone()), state.clone()));
        Ok(Self { addr, state, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL without a path.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue a fault for the next model request.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.state.faults).push_back(fault);
    }

    /// Faults not yet consumed.
    pub fn pending_faults(&self) -> usize {
        lock(&self.state.faults).len()
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Wait until the server task ends (it runs until dropped or aborted).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_model_path(path: &str) -> bool {
    !path.starts_with("/__fake/") && path != "/v1/models"
}

async fn accept_loop(listener: TcpListener, router: Router, state: Arc<FakeState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let router = router.clone();
                let state = state.clone();
                async move { serve_one(router, state, req).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Apply the transport-level faults, then hand the request to the router
/// with the fault (if any) attached as an extension.
async fn serve_one(
    router: Router,
    state: Arc<FakeState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    let fault = if is_model_path(req.uri().path()) {
        lock(&state.faults).pop_front()
    } else {
        None
    };
    let mut req = req.map(Body::new);
    match fault {
        Some(Fault::Reset) => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected connection reset",
            ));
        }
        Some(Fault::SlowFirstByte { delay_ms }) => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        Some(f) => {
            req.extensions_mut().insert(f);
        }
        None => {}
    }
    let resp: Result<Response<Body>, Infallible> = router.oneshot(req).await;
    Ok(resp.unwrap_or_else(|never| match never {}))
}

pub(crate) fn routes(state: Arc<FakeState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(openai::azure_chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(openai::azure_embeddings),
        )
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/files", post(batches::upload))
        .route("/v1/files/{id}/content", get(batches::file_content))
        .route("/v1/batches", post(batches::create_batch))
        .route("/v1/batches/{id}", get(batches::get_batch))
        .route("/v1/batches/{id}/cancel", post(batches::cancel_batch))
        .route("/v1/messages/batches", post(batches::create_message_batch))
        .route("/v1/messages/batches/{id}", get(batches::get_message_batch))
        .route(
            "/v1/messages/batches/{id}/results",
            get(batches::message_batch_results),
        )
        .route(
            "/v1/messages/batches/{id}/cancel",
            post(batches::cancel_message_batch),
        )
        // Batch input files and request lists are larger than one request.
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
        .route("/__fake/faults", post(push_faults))
        .route("/__fake/requests", get(list_requests))
        .with_state(state)
}

async fn push_faults(State(state): State<Arc<FakeState>>, body: Bytes) -> Response<Body> {
    #[derive(serde::Deserialize)]
    struct Faults {
        faults: Vec<Fault>,
    }
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            let n = f.faults.len();
            lock(&state.faults).extend(f.faults);
            json_response(StatusCode::OK, &json!({ "queued": n }))
        }
        Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({ "error": e.to_string() })),
    }
}

async fn list_requests(State(state): State<Arc<FakeState>>) -> Response<Body> {
    json_response(StatusCode::OK, &json!(*lock(&state.requests)))
}

/// A JSON response with the given status.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Apply a `DropMidStream` fault to a JSON body: send part of it, then
/// break the connection.
pub(crate) fn json_or_truncated(fault: Option<&Fault>, body: &Value) -> Response<Body> {
    match fault {
        Some(Fault::DropMidStream { after_chunks }) => {
            let text = body.to_string().into_bytes();
            let cut = (*after_chunks).clamp(1, text.len().saturating_sub(1).max(1));
            let head = Bytes::from(text[..cut].to_vec());
            let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(2);
            tokio::spawn(async move {
                let _ = tx.send(Ok(head)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = tx
                    .send(Err(io::Error::other("injected drop mid-body")))
                    .await;
            });
            let mut resp = Response::new(Body::from_stream(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        _ => json_response(StatusCode::OK, body),
    }
}

/// An SSE response that sends `events` (complete frames) with `delay`
/// between them; with a `DropMidStream` fault it breaks the connection after
/// that many frames instead of finishing.
pub(crate) fn sse_response(
    events: Vec<Bytes>,
    delay: Duration,
    fault: Option<&Fault>,
) -> Response<Body> {
    let drop_after = match fault {
        Some(Fault::DropMidStream { after_chunks }) => Some(*after_chunks),
        _ => None,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(16);
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if drop_after == Some(i) {
                // Let the frames already sent reach the client first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx
                    .send(Err(io::Error::other("injected drop mid-stream")))
                    .await;
                return;
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    event_stream(rx)
}

/// An SSE response whose frames come from `rx`.
pub(crate) fn event_stream(rx: mpsc::Receiver<Result<Bytes, io::Error>>) -> Response<Body> {
    let mut resp = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// Attach `retry-after` to an error response when the fault asked for it.
pub(crate) fn with_retry_after(mut resp: Response<Body>, secs: Option<u64>) -> Response<Body> {
    if let Some(s) = secs
        && let Ok(v) = header::HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// A fresh id for responses (`chatcmpl-…`, `msg_…`).
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
