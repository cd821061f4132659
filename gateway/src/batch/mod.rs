//! Durable batch jobs (docs/batch.md): created over gRPC
//! ([`grpc`], `switchyard.v1.BatchService`) or OpenAI's Files and Batches
//! API (`api::batches`), kept in SQLite ([`store`]), and run by the
//! [`runner`] at batch priority through the same path as interactive
//! requests (cache, placement, retries).

pub mod grpc;
mod remote;
pub mod runner;
pub mod store;

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::config::BatchConfig;
use store::{NewBatch, Store, StoreError};

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a batch item calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Embeddings,
    Completions,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Completions => "/v1/completions",
        }
    }

    pub fn from_path(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/embeddings" => Some(Self::Embeddings),
            "/v1/completions" => Some(Self::Completions),
            _ => None,
        }
    }
}

/// A batch's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    InProgress,
    Completed,
    Cancelled,
    Expired,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "in_progress" => Self::InProgress,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        self != Self::InProgress
    }
}

/// An item's state (stored as its number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    Pending = 0,
    Succeeded = 1,
    Failed = 2,
    Cancelled = 3,
    Expired = 4,
}

impl ItemState {
    pub fn from_i64(v: i64) -> Self {
        match v {
            1 => Self::Succeeded,
            2 => Self::Failed,
            3 => Self::Cancelled,
            4 => Self::Expired,
            _ => Self::Pending,
        }
    }
}

/// Items by outcome, and where the finished ones ran.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub expired: i64,
    pub placed_local: i64,
    pub placed_external: i64,
    pub from_cache: i64,
}

impl Counts {
    pub fn pending(&self) -> i64 {
        (self.total - self.succeeded - self.failed - self.cancelled - self.expired).max(0)
    }
}

/// A stored batch.
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub seq: i64,
    pub id: String,
    pub state: State,
    pub endpoint: Endpoint,
    /// 1 low, 2 normal, 3 high.
    pub priority: i64,
    /// JSON object of strings.
    pub metadata: String,
    pub input_file_id: Option<String>,
    pub completion_window: String,
    pub created_ms: i64,
    pub deadline_ms: i64,
    pub finished_ms: Option<i64>,
    pub counts: Counts,
    pub cursor: i64,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    /// The tenant that created it.
    pub owner: String,
    /// The virtual key that created it, if one did.
    pub owner_key: Option<String>,
}

/// A finished item, as results report it.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub cursor: i64,
    pub index: u64,
    pub custom_id: Option<String>,
    pub state: ItemState,
    /// The HTTP status of the answer; `None` when the item never ran.
    pub status: Option<u16>,
    /// The answer's body (JSON); for an item that never ran because it is
    /// invalid, an `{"code", "message"}` object.
    pub response: Option<Vec<u8>>,
    pub placement: String,
    pub finished_ms: i64,
}

/// An item to add to a batch.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub custom_id: Option<String>,
    pub endpoint: Endpoint,
    pub body: Vec<u8>,
    /// Set when the item cannot run: recorded failed at once.
    pub invalid: Option<Invalid>,
}

/// Why an item cannot run.
#[derive(Debug, Clone)]
pub struct Invalid {
    pub status: Option<u16>,
    pub response: Vec<u8>,
    pub at_ms: i64,
}

impl Invalid {
    /// A request the gateway would refuse, with its OpenAI-shaped error.
    pub(crate) fn request(status: u16, code: &str, param: Option<&str>, message: String) -> Self {
        let kind = if status == 404 {
            "not_found_error"
        } else {
            "invalid_request_error"
        };
        Self {
            status: Some(status),
            response:
                json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
                    .to_string()
                    .into_bytes(),
            at_ms: now_ms(),
        }
    }

    /// A line that is not a request at all (never sent).
    pub fn line(code: &str, message: String) -> Self {
        Self {
            status: None,
            response: json!({"code": code, "message": message})
                .to_string()
                .into_bytes(),
            at_ms: now_ms(),
        }
    }
}

/// Model names items may ask for, by endpoint.
#[derive(Debug, Clone, Default)]
pub struct Models {
    /// Model groups (every endpoint).
    pub groups: HashSet<String>,
    /// In-process embedding models (`/v1/embeddings` only).
    pub embeddings: HashSet<String>,
}

/// Errors of batch calls, mapped to gRPC and HTTP statuses by their
/// callers.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The batch subsystem: the store plus what wakes the runner and the
/// result followers.
#[derive(Debug)]
pub struct Batches {
    pub store: Arc<Store>,
    pub settings: BatchConfig,
    pub models: Models,
    pub max_body_bytes: usize,
    /// Wakes the runner: a batch was created or cancelled.
    pub wake: Notify,
    /// Bumped after every commit of results (result streams wait on it).
    pub progress: watch::Sender<u64>,
    /// What the runner is doing, published twice a second.
    pub runner: watch::Sender<RunnerStats>,
}

/// The runner's state, for `/api/v1/batches/stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunnerStats {
    /// Items of running batches not yet finished.
    pub queue_depth: i64,
    /// Items being attempted now.
    pub in_flight: usize,
    pub batches: Vec<RunningBatch>,
}

/// One running batch as the runner sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunningBatch {
    pub id: String,
    pub priority: i64,
    pub remaining: i64,
    pub in_flight: usize,
    /// Items allowed to go external now for the deadline.
    pub overflow_quota: i64,
    /// Seconds to spare at the local finishing rate (negative: behind;
    /// absent until a rate is measured).
    pub deadline_slack_s: Option<f64>,
    /// Items finished per second without going external, last 30 s.
    pub local_rate_per_s: f64,
    /// Items collected for, or waiting in, provider batches.
    pub in_provider_batches: i64,
}

/// Longest `custom_id`, bytes.
const MAX_CUSTOM_ID: usize = 512;

/// Items buffered before one insert transaction.
const CHUNK_ITEMS: usize = 4_096;
const CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Runs blocking store work on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Sqlite(format!("store task failed: {e}")))?
}

impl Batches {
    pub fn open(
        settings: &BatchConfig,
        models: Models,
        max_body_bytes: usize,
    ) -> Result<Self, StoreError> {
        let store = Store::open(&settings.dir)?;
        Ok(Self {
            store: Arc::new(store),
            settings: settings.clone(),
            models,
            max_body_bytes,
            wake: Notify::new(),
            progress: watch::Sender::new(0),
            runner: watch::Sender::new(RunnerStats::default()),
        })
    }

    /// Starts creating a batch; items follow with [`Creating::push`].
    pub async fn begin(self: &Arc<Self>, spec: store::BatchSpec) -> Result<Creating, BatchError> {
        let store = self.store.clone();
        let new = blocking(move || store.begin_create(&spec)).await?;
        Ok(Creating {
            batches: self.clone(),
            seq: new.seq,
            committed: false,
            new: Some(new),
            default_endpoint: Endpoint::ChatCompletions,
            buf: Vec::new(),
            buf_bytes: 0,
            pushed: 0,
        })
    }

    /// Cancels a running batch: its unfinished items end cancelled.
    pub async fn cancel(&self, id: &str) -> Result<BatchRow, BatchError> {
        let row = self.get(id).await?;
        if row.state.is_final() {
            return Err(BatchError::Conflict(format!(
                "Batch `{id}` is {} and cannot be cancelled.",
                row.state.as_str()
            )));
        }
        let store = self.store.clone();
        let seq = row.seq;
        if !blocking(move || store.end_pending(seq, ItemState::Cancelled)).await? {
            // It finished (or expired) in between.
            let row = self.get(id).await?;
            return Err(BatchError::Conflict(format!(
                "Batch `{id}` is {} and cannot be cancelled.",
                row.state.as_str()
            )));
        }
        self.wake.notify_one();
        self.progress.send_modify(|v| *v += 1);
        tracing::info!(batch = %id, "batch cancelled");
        self.get(id).await
    }

    pub async fn get(&self, id: &str) -> Result<BatchRow, BatchError> {
        let store = self.store.clone();
        let key = id.to_owned();
        blocking(move || store.batch(&key))
            .await?
            .ok_or_else(|| BatchError::NotFound(format!("No batch with id `{id}`.")))
    }
}

/// A batch being created. Dropped without [`Creating::finish`], it is
/// removed (and would be at the next start anyway).
#[derive(Debug)]
pub struct Creating {
    batches: Arc<Batches>,
    /// The batch's row, for removal if the create never commits.
    seq: i64,
    /// Set once the final commit succeeded: never removed after that.
    committed: bool,
    new: Option<NewBatch>,
    pub default_endpoint: Endpoint,
    buf: Vec<NewItem>,
    buf_bytes: usize,
    pushed: u64,
}

impl Creating {
    pub fn id(&self) -> &str {
        self.new.as_ref().map_or("", |n| n.id.as_str())
    }

    /// Adds an item (validated here: an invalid one is recorded failed,
    /// with its reason, and does not run).
    pub async fn push(&mut self, mut item: NewItem) -> Result<(), BatchError> {
        let max = self.batches.settings.max_items;
        if self.pushed >= max {
            return Err(BatchError::Invalid(format!(
                "A batch may hold at most {max} items (batch.max_items)."
            )));
        }
        self.pushed += 1;
        if item.invalid.is_none() {
            item.invalid = self.validate(&item);
        }
        // An unusable custom_id is not kept: two items without one must not
        // collide as "duplicates".
        if item
            .custom_id
            .as_deref()
            .is_some_and(|c| c.is_empty() || c.len() > MAX_CUSTOM_ID)
        {
            item.custom_id = None;
        }
        if item.invalid.is_some() {
            // A failed item never runs: its body is not needed.
            item.body = Vec::new();
        }
        self.buf_bytes += item.body.len();
        self.buf.push(item);
        if self.buf.len() >= CHUNK_ITEMS || self.buf_bytes >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    fn validate(&self, item: &NewItem) -> Option<Invalid> {
        let b = &self.batches;
        match item.custom_id.as_deref() {
            None | Some("") => {
                return Some(Invalid::request(
                    400,
                    "missing_custom_id",
                    Some("custom_id"),
                    "Every batch item needs a non-empty custom_id.".into(),
                ));
            }
            Some(id) if id.len() > MAX_CUSTOM_ID => {
                return Some(Invalid::request(
                    400,
                    "invalid_custom_id",
                    Some("custom_id"),
                    format!(
                        "custom_id is {} bytes; at most {MAX_CUSTOM_ID} are accepted.",
                        id.len()
                    ),
                ));
            }
            Some(_) => {}
        }
        if item.body.len() > b.max_body_bytes {
            return Some(Invalid::request(
                413,
                "request_too_large",
                None,
                format!(
                    "The item's body is {} bytes; this gateway accepts at most {} (server.max_body_bytes).",
                    item.body.len(),
                    b.max_body_bytes
                ),
            ));
        }
        let body: Value = match serde_json::from_slice(&item.body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return Some(Invalid::request(
                    400,
                    "invalid_body",
                    Some("body"),
                    "The item's body must be a JSON object.".into(),
                ));
            }
            Err(e) => {
                return Some(Invalid::request(
                    400,
                    "invalid_body",
                    Some("body"),
                    format!("The item's body is not JSON: {e}"),
                ));
            }
        };
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            return Some(Invalid::request(
                400,
                "stream_not_supported",
                Some("body.stream"),
                "Batch items cannot stream; leave 'stream' unset or false.".into(),
            ));
        }
        let Some(model) = body.get("model").and_then(Value::as_str) else {
            return Some(Invalid::request(
                400,
                "missing_model",
                Some("body.model"),
                "The item's body needs a 'model'.".into(),
            ));
        };
        let known = b.models.groups.contains(model)
            || (item.endpoint == Endpoint::Embeddings && b.models.embeddings.contains(model));
        if !known {
            return Some(Invalid::request(
                404,
                "model_not_found",
                Some("body.model"),
                format!(
                    "The model `{model}` does not exist or cannot serve {}.",
                    item.endpoint.path()
                ),
            ));
        }
        None
    }

    async fn flush(&mut self) -> Result<(), BatchError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut self.buf);
        self.buf_bytes = 0;
        let Some(mut new) = self.new.take() else {
            return Err(BatchError::Invalid("batch already finished".into()));
        };
        let store = self.batches.store.clone();
        let (new, result) = tokio::task::spawn_blocking(move || {
            let r = store.add_items(&mut new, &items);
            (new, r)
        })
        .await
        .map_err(|e| StoreError::Sqlite(format!("store task failed: {e}")))?;
        self.new = Some(new);
        match result {
            Ok(()) => Ok(()),
            Err(StoreError::Duplicate { custom_id, index }) => Err(BatchError::Invalid(format!(
                "Duplicate custom_id `{custom_id}` (item {index}): every item's custom_id must be unique within its batch."
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Commits the batch: from here on it is acknowledged and will run.
    pub async fn finish(mut self) -> Result<BatchRow, BatchError> {
        self.flush().await?;
        if self.pushed == 0 {
            return Err(BatchError::Invalid(
                "A batch needs at least one item.".into(),
            ));
        }
        let Some(new) = self.new.take() else {
            return Err(BatchError::Invalid("batch already finished".into()));
        };
        let store = self.batches.store.clone();
        blocking(move || store.finish_create(&new)).await?;
        self.committed = true;
        self.batches.wake.notify_one();
        let store = self.batches.store.clone();
        let seq = self.seq;
        let row = blocking(move || store.batch_by_seq(seq))
            .await?
            .ok_or_else(|| StoreError::Sqlite("a committed batch vanished".into()))?;
        tracing::info!(batch = %row.id, items = row.counts.total, "batch created");
        Ok(row)
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let store = self.batches.store.clone();
        let seq = self.seq;
        // Best effort now; the next start drops it regardless.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn_blocking(move || {
                if let Err(e) = store.abort_create(seq) {
                    tracing::warn!(error = %e, "batch store: could not remove an aborted batch");
                }
            });
        }
    }
}

/// The OpenAI batch line id of item `index` of batch `id`.
pub fn request_id(batch_id: &str, index: u64) -> String {
    let suffix = batch_id.strip_prefix("batch_").unwrap_or(batch_id);
    format!("batch_req_{suffix}_{index}")
}

/// One line of a batch's output or error file, in OpenAI's format.
pub fn openai_line(batch_id: &str, r: &ResultRow) -> String {
    let id = request_id(batch_id, r.index);
    let body = |raw: &Option<Vec<u8>>| -> Value {
        raw.as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null)
    };
    let (response, error) = match (r.state, r.status) {
        (ItemState::Cancelled, _) => (
            Value::Null,
            json!({"code": "batch_cancelled", "message": "This request was not executed because the batch was cancelled."}),
        ),
        (ItemState::Expired, _) => (
            Value::Null,
            json!({"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}),
        ),
        (_, Some(status)) => (
            json!({"status_code": status, "request_id": id, "body": body(&r.response)}),
            Value::Null,
        ),
        (_, None) => (Value::Null, body(&r.response)),
    };
    json!({"id": id, "custom_id": r.custom_id, "response": response, "error": error}).to_string()
}
