//! The batch runner: takes pending items of running batches (highest
//! priority, then earliest deadline first) and sends each through the same
//! path as an interactive request (validation, cache, placement, retries
//! and fallbacks), at batch priority.
//!
//! - **Idle GPUs only.** Placement runs a batch item on a local backend
//!   only while it has fewer than `[batch] idle_share` of its permits in
//!   flight, and never queues it for a permit; otherwise the item is
//!   *deferred* and tried again shortly. Interactive requests always find
//!   the rest of the permits free.
//! - **Deadlines.** Per batch, the runner measures how fast its items
//!   finish without going external, and from that how many of the rest the
//!   local fleet will finish before the deadline (less a reserve of
//!   `deadline_margin` of the window). Only the shortfall may overflow:
//!   that many items are marked so that placement sends them to the
//!   allowed external deployment cheapest at batch price when no local
//!   backend is idle. At the deadline, what is left expires.
//! - **Retries.** A retryable failure (429, 408, 5xx, time-outs) is tried
//!   again with backoff up to `max_attempts`; then, or at once for other
//!   failures, the error is the item's result.
//! - **Exactly once.** Results are committed in groups by one writer;
//!   the store ignores a result for an item that is no longer pending.
//!   Attempt counts are not stored: after a restart, an unfinished item
//!   starts again from its first attempt.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::to_bytes;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::remote::{self, RemoteDone};
use super::store::{Finished, Pending};
use super::{BatchRow, Batches, ItemState, blocking, now_ms};
use crate::api::extract::JsonObject;
use crate::api::proxy::{BACKEND, PLACEMENT};
use crate::app::App;
use crate::fleet::{Class, DEFERRED, REMOTE_BATCH, REMOTE_DEPLOYMENT};

/// Items read from the store per batch at a time.
const READ_AHEAD: usize = 256;
/// Largest answer body kept as a result.
const MAX_RESULT_BYTES: usize = 64 * 1024 * 1024;
/// How long a batch waits after a deferral before trying again.
const DEFER_PAUSE: Duration = Duration::from_millis(100);
/// Attempts a batch starts with in flight.
const INITIAL_WINDOW: usize = 8;
/// The local finishing rate is measured over this window.
const RATE_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Item {
    pending: Pending,
    attempts: u32,
    /// Released by a provider batch: not sent to one again.
    no_remote: bool,
}

/// How long items for a provider batch are collected before it is sent
/// (unless it fills up first).
const REMOTE_COLLECT: Duration = Duration::from_secs(2);

/// What became of one attempt.
enum Outcome {
    Done {
        finished: Finished,
        external: bool,
        /// How long the attempt took.
        took: Duration,
    },
    Deferred(Item),
    /// For a provider batch on this deployment (by id).
    Remote(Item, String),
    Retry(Item, Duration),
    /// Its batch ended while it ran.
    Aborted,
}

/// The result of an item whose attempts failed inside the gateway.
const INTERNAL_ERROR: &[u8] = br#"{"error":{"message":"The gateway failed while running this item (logged).","type":"server_error","param":null,"code":null}}"#;

#[derive(Debug)]
struct Active {
    row: BatchRow,
    /// Items not yet finished (as far as this runner knows).
    remaining: i64,
    queue: VecDeque<Item>,
    retry: Vec<(Instant, Item)>,
    /// The last key read from the store; `None` once all are read.
    scanned_to: Option<i64>,
    in_flight: usize,
    /// Items in flight that were allowed to go external.
    in_flight_overflow: usize,
    paused_until: Instant,
    /// When items finished without going external, within RATE_WINDOW.
    local_done: VecDeque<Instant>,
    /// Seconds an item takes when it runs locally (moving average).
    local_latency_s: Option<f64>,
    /// Attempts not allowed to overflow in flight when the last local
    /// item finished, itself included (the local slots the batch holds).
    running_at_completion: usize,
    started: Instant,
    /// Items that may go external now.
    quota: i64,
    /// Items of this batch that finished externally (since this runner
    /// took it up).
    external_done: i64,
    /// Most attempts in flight: grows by one per finished item, halves on
    /// a deferral (so a batch waiting for idle GPUs probes, not floods).
    window: usize,
    /// Its attempts in flight, to abort when the batch ends.
    tasks: Vec<tokio::task::AbortHandle>,
    /// Inside its deadline reserve: items go external only.
    urgent: bool,
    /// Enough time left for a provider batch.
    remote_ok: bool,
    /// Items collected for, or held by, provider batches.
    remote_in_flight: i64,
    /// Items collected per deployment (id) and endpoint, with when the
    /// first came.
    remote_buf: HashMap<(String, super::Endpoint), (Instant, Vec<Item>)>,
}

impl Active {
    fn new(row: BatchRow) -> Self {
        let now = Instant::now();
        Self {
            remaining: row.counts.pending(),
            scanned_to: Some((row.seq << 32) - 1),
            row,
            queue: VecDeque::new(),
            retry: Vec::new(),
            in_flight: 0,
            in_flight_overflow: 0,
            paused_until: now,
            local_done: VecDeque::new(),
            local_latency_s: None,
            running_at_completion: 0,
            started: now,
            quota: 0,
            external_done: 0,
            window: INITIAL_WINDOW,
            tasks: Vec::new(),
            urgent: false,
            remote_ok: false,
            remote_in_flight: 0,
            remote_buf: HashMap::new(),
        }
    }

    /// Items that must go external for the deadline (see module docs).
    fn update_quota(&mut self, now: Instant, settings: &crate::config::BatchConfig) {
        let margin = settings.deadline_margin;
        while self
            .local_done
            .front()
            .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
        {
            self.local_done.pop_front();
        }
        let window_s = (self.row.deadline_ms - self.row.created_ms).max(1) as f64 / 1e3;
        let left_s = (self.row.deadline_ms - now_ms()) as f64 / 1e3;
        // The reserve is at least two local latencies, so work started
        // locally before it still finishes in time.
        let reserve_s = (margin * window_s)
            .max(2.0 * self.local_latency_s.unwrap_or(0.0))
            .min(window_s);
        let usable_s = left_s - reserve_s;
        // Inside the reserve nothing more starts locally.
        self.urgent = usable_s <= 0.0;
        self.remote_ok =
            settings.provider_batches && usable_s > settings.provider_batch_turnaround_secs as f64;
        let observed = now.duration_since(self.started).min(RATE_WINDOW);
        let warmup = Duration::from_secs_f64((0.05 * window_s).clamp(0.5, 10.0));
        // The rate means something once an item has finished locally (or,
        // if none has, after a quarter of the window: then it is zero).
        let measured = !self.local_done.is_empty()
            || observed.as_secs_f64() >= (0.25 * window_s).min(RATE_WINDOW.as_secs_f64());
        let shortfall = if usable_s <= 0.0 {
            self.remaining as f64
        } else if observed < warmup || !measured {
            0.0
        } else {
            self.remaining as f64 - self.local_rate(now) * usable_s
        };
        // Overflow is paced over the first half of the window: by then the
        // local rate is well measured, and sending early work out on an
        // early (low) estimate would spend more than the deadline needs.
        // Past half the window, or out of usable time, the whole shortfall.
        let elapsed_s = (now_ms() - self.row.created_ms).max(0) as f64 / 1e3;
        let pace = if usable_s <= 0.0 {
            1.0
        } else {
            (elapsed_s / (0.5 * window_s)).min(1.0)
        };
        let planned = pace * (self.external_done as f64 + shortfall.max(0.0));
        self.quota = (planned.ceil() as i64
            - self.external_done
            - self.in_flight_overflow as i64
            - self.remote_in_flight)
            .max(0);
        tracing::debug!(batch = %self.row.id, remaining = self.remaining, usable_s, shortfall, quota = self.quota, rate = self.local_rate(now), latency = ?self.local_latency_s, in_flight = self.in_flight, overflow = self.in_flight_overflow, at_completion = self.running_at_completion, "overflow quota");
    }

    /// Items finished per second without going external: the rate seen
    /// over the last RATE_WINDOW, or, when higher (at the start, before
    /// a window's worth has finished), what the items running now will
    /// sustain by Little's law: their number over the local latency.
    /// Attempts not allowed to overflow run locally (a deferred one is
    /// back at once), so they are the ones counted.
    fn local_rate(&self, now: Instant) -> f64 {
        let observed = now.duration_since(self.started).min(RATE_WINDOW);
        let seen = self.local_done.len() as f64 / observed.as_secs_f64().max(1e-3);
        let running =
            (self.in_flight - self.in_flight_overflow).max(self.running_at_completion) as f64;
        let sustained = self.local_latency_s.map_or(0.0, |w| running / w.max(1e-3));
        seen.max(sustained)
    }

    fn stats(&self, now: Instant) -> super::RunningBatch {
        let rate = self.local_rate(now);
        let left_s = (self.row.deadline_ms - now_ms()) as f64 / 1e3;
        super::RunningBatch {
            id: self.row.id.clone(),
            priority: self.row.priority,
            remaining: self.remaining,
            in_flight: self.in_flight,
            overflow_quota: self.quota,
            deadline_slack_s: (rate > 0.0).then(|| left_s - self.remaining as f64 / rate),
            local_rate_per_s: rate,
            in_provider_batches: self.remote_in_flight,
        }
    }
}

/// Starts the runner and its result writer.
/// What the writer commits, in order.
#[derive(Debug, Clone)]
enum Write {
    Result(Finished),
    /// End a batch past its deadline: after every result sent before it,
    /// so work finished in time is never recorded expired.
    Expire {
        seq: i64,
        id: String,
    },
}

pub fn spawn(app: Arc<App>, batches: Arc<Batches>) {
    let (tx, rx) = mpsc::channel(4_096);
    tokio::spawn(writer(batches.clone(), rx));
    tokio::spawn(run(app, batches, tx));
}

/// Commits results in groups (one transaction each, at most every few
/// milliseconds), retrying until the store takes them; expires batches in
/// order with them.
async fn writer(batches: Arc<Batches>, mut rx: mpsc::Receiver<Write>) {
    let mut next = rx.recv().await;
    while let Some(first) = next.take() {
        let mut buf = Vec::new();
        let mut expire = None;
        match first {
            Write::Result(f) => buf.push(f),
            Write::Expire { seq, id } => expire = Some((seq, id)),
        }
        let until = Instant::now() + Duration::from_millis(5);
        while expire.is_none() && buf.len() < 1_024 {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(Write::Result(f))) => buf.push(f),
                Ok(Some(Write::Expire { seq, id })) => expire = Some((seq, id)),
                _ => break,
            }
        }
        if !buf.is_empty() {
            let buf = Arc::new(buf);
            loop {
                let store = batches.store.clone();
                let results = buf.clone();
                match blocking(move || store.record(&results)).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "batch results not recorded; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        if let Some((seq, id)) = expire {
            let store = batches.store.clone();
            match blocking(move || store.end_pending(seq, ItemState::Expired)).await {
                Ok(true) => {
                    tracing::warn!(batch = %id, "batch expired: its deadline passed with items unfinished")
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "batch runner: cannot expire a batch"),
            }
        }
        batches.progress.send_modify(|v| *v += 1);
        next = rx.recv().await;
    }
}

async fn run(app: Arc<App>, batches: Arc<Batches>, results: mpsc::Sender<Write>) {
    let settings = batches.settings.clone();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(i64, bool, Outcome)>();
    let (remote_tx, mut remote_rx) = mpsc::unbounded_channel::<RemoteDone>();
    remote::resume(&app, &batches, &remote_tx).await;
    let mut active: HashMap<i64, Active> = HashMap::new();
    let mut in_flight = 0usize;
    let mut next_refresh = Instant::now();
    let mut next_stats = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = Instant::now();
        if now >= next_refresh {
            refresh(&batches, &mut active, &results).await;
            next_refresh = now + Duration::from_secs(1);
        }
        for a in active.values_mut() {
            a.update_quota(now, &settings);
        }
        if now >= next_stats {
            next_stats = now + Duration::from_millis(500);
            batches.runner.send_replace(super::RunnerStats {
                queue_depth: active.values().map(|a| a.remaining).sum(),
                in_flight,
                batches: active.values().map(|a| a.stats(now)).collect(),
            });
        }
        fill(&batches, &mut active).await;
        // Send the provider batches that are full or have waited enough.
        for a in active.values_mut() {
            let due: Vec<(String, super::Endpoint)> = a
                .remote_buf
                .iter()
                .filter(|(_, (since, items))| {
                    items.len() >= settings.provider_batch_max_items
                        || now.duration_since(*since) >= REMOTE_COLLECT
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in due {
                let Some((_, items)) = a.remote_buf.remove(&key) else {
                    continue;
                };
                let (deployment, endpoint) = key;
                tokio::spawn(remote::submit(
                    app.clone(),
                    batches.clone(),
                    (a.row.seq, deployment, endpoint),
                    items.into_iter().map(|i| i.pending).collect(),
                    remote_tx.clone(),
                ));
            }
        }
        // Start items while there is room: priority, then deadline.
        let mut order: Vec<(i64, i64, i64)> = active
            .values()
            .map(|a| (-a.row.priority, a.row.deadline_ms, a.row.seq))
            .collect();
        order.sort_unstable();
        'batches: for (_, _, seq) in order {
            let Some(a) = active.get_mut(&seq) else {
                continue;
            };
            if a.paused_until > now {
                continue;
            }
            let mut i = 0;
            while i < a.retry.len() {
                if a.retry[i].0 <= now {
                    let (_, item) = a.retry.swap_remove(i);
                    a.queue.push_front(item);
                } else {
                    i += 1;
                }
            }
            while a.in_flight < a.window
                && let Some(item) = a.queue.pop_front()
            {
                if in_flight >= settings.concurrency {
                    a.queue.push_front(item);
                    break 'batches;
                }
                let overflow = a.quota > 0;
                let urgent = overflow && a.urgent;
                let remote_ok = a.remote_ok && !item.no_remote;
                if overflow {
                    a.quota -= 1;
                    a.in_flight_overflow += 1;
                }
                in_flight += 1;
                a.in_flight += 1;
                let app = app.clone();
                let done = done_tx.clone();
                let batch_id = a.row.id.clone();
                let owner = (a.row.owner.clone(), a.row.owner_key.clone());
                let max_attempts = settings.max_attempts;
                // If the attempt panics or is aborted, the item goes back
                // (or fails, out of attempts) and its slot is freed.
                let backup = Item {
                    pending: item.pending.clone(),
                    attempts: item.attempts + 1,
                    no_remote: item.no_remote,
                };
                let task = tokio::spawn(async move {
                    attempt(
                        &app,
                        seq,
                        &batch_id,
                        owner,
                        item,
                        (overflow, urgent, remote_ok),
                        max_attempts,
                    )
                    .await
                });
                a.tasks.retain(|t| !t.is_finished());
                a.tasks.push(task.abort_handle());
                tokio::spawn(async move {
                    let outcome = match task.await {
                        Ok(outcome) => outcome,
                        Err(e) if e.is_cancelled() => Outcome::Aborted,
                        Err(_) if backup.attempts >= max_attempts => {
                            tracing::error!(
                                batch = seq,
                                "batch item attempt panicked; out of attempts"
                            );
                            Outcome::Done {
                                finished: finished(
                                    seq,
                                    &backup,
                                    ItemState::Failed,
                                    Some(500),
                                    INTERNAL_ERROR.to_vec(),
                                    String::new(),
                                ),
                                external: false,
                                took: Duration::ZERO,
                            }
                        }
                        Err(_) => {
                            tracing::error!(batch = seq, "batch item attempt panicked; will retry");
                            Outcome::Retry(backup, Duration::from_secs(1))
                        }
                    };
                    let _ = done.send((seq, overflow, outcome));
                });
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            Some(r) = remote_rx.recv() => {
                if let Some(a) = active.get_mut(&r.seq) {
                    a.remote_in_flight -= r.items as i64;
                    a.remaining -= r.finished;
                    a.external_done += r.finished;
                    for pending in r.released {
                        // Items past what this batch has read come from the
                        // store in their turn; the others are queued here.
                        if a.scanned_to.is_none_or(|s| pending.key <= s) {
                            a.queue.push_back(Item { pending, attempts: 0, no_remote: true });
                        }
                    }
                }
            }
            () = batches.wake.notified() => next_refresh = Instant::now(),
            Some((seq, overflow, outcome)) = done_rx.recv() => {
                in_flight -= 1;
                let mut a = active.get_mut(&seq);
                if let Some(a) = a.as_deref_mut() {
                    if let Outcome::Done { finished, .. } = &outcome
                        && finished.placement.starts_with("local:")
                    {
                        a.running_at_completion = a.in_flight - a.in_flight_overflow;
                    }
                    a.in_flight -= 1;
                    if overflow {
                        a.in_flight_overflow -= 1;
                    }
                }
                match outcome {
                    Outcome::Done { finished, external, took } => {
                        if let Some(a) = a {
                            a.remaining -= 1;
                            a.window = (a.window + 1).min(settings.concurrency);
                            // Failures that ran nowhere (invalid requests)
                            // say nothing of either rate.
                            if external {
                                a.external_done += 1;
                            } else if finished.placement.starts_with("local:")
                                || finished.placement == "cache"
                            {
                                a.local_done.push_back(Instant::now());
                            }
                            if finished.placement.starts_with("local:") {
                                let t = took.as_secs_f64();
                                a.local_latency_s =
                                    Some(a.local_latency_s.map_or(t, |w| 0.8 * w + 0.2 * t));
                            }
                        }
                        if results.send(Write::Result(finished)).await.is_err() {
                            return;
                        }
                    }
                    Outcome::Deferred(item) => {
                        if let Some(a) = a {
                            a.queue.push_front(item);
                            a.window = (a.window / 2).max(1);
                            a.paused_until = Instant::now() + DEFER_PAUSE;
                        }
                    }
                    Outcome::Remote(item, deployment) => {
                        if let Some(a) = a {
                            a.remote_in_flight += 1;
                            // Every endpoint gets its own provider batch.
                            let key = (deployment, item.pending.endpoint);
                            a.remote_buf
                                .entry(key)
                                .or_insert_with(|| (Instant::now(), Vec::new()))
                                .1
                                .push(item);
                        }
                    }
                    Outcome::Aborted => {}
                    Outcome::Retry(item, after) => {
                        if let Some(a) = a {
                            a.retry.push((Instant::now() + after, item));
                        }
                    }
                }
            }
        }
    }
}

/// Loads running batches, drops those no longer running (aborting their
/// attempts in flight), and has the writer end those past their deadline.
async fn refresh(
    batches: &Arc<Batches>,
    active: &mut HashMap<i64, Active>,
    writes: &mpsc::Sender<Write>,
) {
    let store = batches.store.clone();
    let rows = match blocking(move || store.active()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "batch runner: cannot read running batches");
            return;
        }
    };
    let now = now_ms();
    let mut running = std::collections::HashSet::new();
    for row in rows {
        if row.deadline_ms <= now {
            let _ = writes
                .send(Write::Expire {
                    seq: row.seq,
                    id: row.id.clone(),
                })
                .await;
            continue;
        }
        running.insert(row.seq);
        if !active.contains_key(&row.seq) {
            tracing::info!(batch = %row.id, pending = row.counts.pending(), "batch running");
            let store = batches.store.clone();
            let seq = row.seq;
            let held = blocking(move || store.remote_pending(seq))
                .await
                .unwrap_or(0);
            let mut a = Active::new(row);
            a.remote_in_flight = held;
            active.insert(seq, a);
        }
    }
    active.retain(|seq, a| {
        let keep = running.contains(seq);
        if !keep {
            // Cancelled, expired or complete: stop what still runs (its
            // result would be ignored anyway).
            for t in a.tasks.drain(..) {
                t.abort();
            }
        }
        keep
    });
}

/// Tops up each batch's queue from the store.
async fn fill(batches: &Arc<Batches>, active: &mut HashMap<i64, Active>) {
    for a in active.values_mut() {
        let Some(after) = a.scanned_to else {
            continue;
        };
        // Read ahead only what this batch can start soon.
        if a.queue.len() >= a.window.max(16) {
            continue;
        }
        let store = batches.store.clone();
        let seq = a.row.seq;
        match blocking(move || store.pending(seq, after, READ_AHEAD)).await {
            Ok(items) => {
                a.scanned_to = items
                    .last()
                    .map(|p| p.key)
                    .filter(|_| items.len() == READ_AHEAD);
                a.queue.extend(items.into_iter().map(|pending| Item {
                    pending,
                    attempts: 0,
                    no_remote: false,
                }));
            }
            Err(e) => tracing::error!(error = %e, "batch runner: cannot read items"),
        }
    }
}

/// The error code of an OpenAI-shaped error body.
fn error_code(body: &Bytes) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/code")?.as_str().map(str::to_owned)
}

/// One attempt at one item.
async fn attempt(
    app: &App,
    seq: i64,
    batch_id: &str,
    (tenant, key): (String, Option<String>),
    mut item: Item,
    (overflow, urgent, remote): (bool, bool, bool),
    max_attempts: u32,
) -> Outcome {
    let started = Instant::now();
    let index = (item.pending.key & 0xffff_ffff) as u64;
    let request_id = super::request_id(batch_id, index);
    let body = match serde_json::from_slice::<Value>(&item.pending.body) {
        Ok(v @ Value::Object(_)) => JsonObject(v),
        // Validated at creation; a stored body that no longer parses fails.
        _ => {
            return Outcome::Done {
                finished: finished(seq, &item, ItemState::Failed, Some(400), b"{\"error\":{\"message\":\"The stored body is not a JSON object.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_body\"}}".to_vec(), String::new()),
                external: false,
                took: started.elapsed(),
            };
        }
    };
    // The item runs as its batch's creator: that tenant's cache scope,
    // budgets and usage.
    let principal = crate::access::Principal {
        tenant: std::sync::Arc::from(tenant.as_str()),
        key: key.and_then(|k| app.access.as_ref()?.store.get(&k)),
    };
    let resp = crate::api::endpoints::call(
        app,
        item.pending.endpoint,
        body,
        request_id,
        principal,
        Class::Batch {
            overflow,
            urgent,
            remote,
        },
    )
    .await;
    let mut status = resp.status().as_u16();
    let placement = placement_of(resp.headers());
    // The deployment's id, for an item handed back for a provider batch.
    let remote_deployment = resp
        .headers()
        .get(REMOTE_DEPLOYMENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .and_then(|i| {
            let model = item.pending.body_model()?;
            Some(app.groups.get(&model)?.deployments.get(i)?.id.clone())
        });
    let body = match to_bytes(resp.into_body(), MAX_RESULT_BYTES).await {
        Ok(b) => b,
        // Cut short, or over the limit: a failure (retried), never a success.
        Err(e) => {
            status = 502;
            Bytes::from(
                serde_json::json!({"error": {"message": format!("The answer could not be read in full (at most {MAX_RESULT_BYTES} bytes are kept): {e}"), "type": "upstream_error", "param": null, "code": "upstream_invalid_response"}})
                    .to_string(),
            )
        }
    };
    if status == 503 {
        match error_code(&body).as_deref() {
            Some(DEFERRED) => return Outcome::Deferred(item),
            Some(REMOTE_BATCH) => {
                if let Some(d) = remote_deployment {
                    return Outcome::Remote(item, d);
                }
            }
            _ => {}
        }
    }
    item.attempts += 1;
    let retryable = status == 408 || status == 429 || status >= 500;
    if retryable && item.attempts < max_attempts {
        let after = Duration::from_millis(500u64 << (item.attempts - 1).min(6));
        tracing::debug!(batch = %batch_id, index, status, attempt = item.attempts, "batch item failed; will retry");
        return Outcome::Retry(item, after);
    }
    let state = if (200..300).contains(&status) {
        ItemState::Succeeded
    } else {
        ItemState::Failed
    };
    let external = placement.starts_with("external:");
    Outcome::Done {
        finished: finished(seq, &item, state, Some(status), body.to_vec(), placement),
        external,
        took: started.elapsed(),
    }
}

/// Where an answer came from, by Switchyard's response headers.
fn placement_of(h: &axum::http::HeaderMap) -> String {
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    match (header(PLACEMENT), header(BACKEND)) {
        (Some(p), _) => p.to_owned(),
        (None, Some("cache")) => "cache".into(),
        (None, Some(b)) if b.starts_with("local/") => format!("local:{b}"),
        (None, Some(b)) => format!("external:{b}"),
        (None, None) => String::new(),
    }
}

fn finished(
    batch: i64,
    item: &Item,
    state: ItemState,
    status: Option<u16>,
    response: Vec<u8>,
    placement: String,
) -> Finished {
    Finished {
        batch,
        key: item.pending.key,
        state,
        status,
        response,
        placement,
        finished_ms: now_ms(),
    }
}
