//! SIMULATED GPU inference engines (`switchyard sim`): each one is an
//! OpenAI-compatible HTTP server in front of the scheduler's engine model
//! ([`switchyard_scheduler::engine`]) on one simulated GPU profile, run in
//! real time: a step of the model takes its simulated duration (divided by
//! `speed`) on the wall clock, and tokens stream out at the end of the step
//! that made them. So a simulated H100 serving an 8B model streams about
//! 145 tokens a second to a lone request and slows as its batch grows.
//!
//! Each engine serves, on its own port:
//!
//! - `POST /v1/chat/completions` and `POST /v1/completions` (JSON and SSE,
//!   `stream_options.include_usage`, `usage.prompt_tokens_details.cached_tokens`
//!   from the simulated prefix cache), `GET /v1/models`, `GET /health`;
//! - `GET /metrics` in vLLM's metric names (`vllm:num_requests_running`,
//!   `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`, token and
//!   prefix-cache counters), labelled `simulated="true"`;
//! - `GET /sim/telemetry`: its GPU as NVML would report it
//!   ([`GpuSample`], `simulated: true`, product name ending in
//!   "(simulated)");
//! - `POST /sim/faults`: `{"xid": 79}` records an XID error,
//!   `{"throttle": ["hw_thermal_slowdown"]}` throttles the GPU (steps take
//!   1.5× as long, as a throttled GPU's would), `{"clear": true}` ends the
//!   throttling.
//!
//! The prompt's token count and prefix blocks come from
//! [`switchyard_scheduler::prompt`] (4 bytes a token); answers are
//! deterministic words, one token each. A client that disconnects does not
//! abort its request (the engine finishes it, as an engine without abort
//! support would).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Response, StatusCode, header};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use switchyard_scheduler::engine::{Engine, EngineConfig, Refused, Request};
use switchyard_scheduler::profile::GpuProfile;
use switchyard_scheduler::prompt;
use switchyard_scheduler::telemetry::{GpuSample, THROTTLE_REASONS};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::server::{event_stream, json_response, new_id, now_secs};

/// How much longer a throttled GPU's steps take.
const THROTTLE_SLOWDOWN: f64 = 1.5;

/// One simulated engine's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Its name (`sim-h100-0`): in logs, `/metrics` and telemetry.
    pub name: String,
    pub profile: GpuProfile,
    /// The model names it serves.
    pub models: Vec<String>,
    /// Simulated seconds per wall-clock second (1: real time).
    pub speed: f64,
    /// Tokens generated when the request sets no `max_tokens`.
    pub default_output_tokens: u32,
    /// Its GPU's index in telemetry.
    pub gpu_index: u32,
    /// Tokens of evicted KV its host-memory tier keeps (0: none).
    pub host_kv_tokens: u64,
}

/// A token event for one request.
#[derive(Debug, Clone, Copy)]
enum Tok {
    First { cached: u32 },
    Next,
    Done,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    streams: HashMap<u64, mpsc::UnboundedSender<Tok>>,
    next_id: u64,
    /// Wall-clock intervals of the last two seconds' steps, and the start of
    /// the step in progress: utilisation is their share of the last second.
    busy: VecDeque<(Instant, Instant)>,
    step_started: Option<Instant>,
    xid_errors: u64,
    last_xid: Option<u64>,
    throttle: Vec<String>,
}

#[derive(Debug)]
struct Sim {
    config: SimConfig,
    inner: Mutex<Inner>,
    wake: Notify,
    uuid: String,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running simulated engine; stops when dropped.
#[derive(Debug)]
pub struct SimEngine {
    addr: SocketAddr,
    sim: Arc<Sim>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimEngine {
    /// Binds `listen` (port 0: any free port) and starts serving.
    pub async fn start(listen: SocketAddr, config: SimConfig) -> io::Result<Self> {
        if !(config.speed > 0.0 && config.speed.is_finite()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sim speed must be a positive number",
            ));
        }
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let uuid = format!("GPU-SIMULATED-{}-{}", addr.port(), config.name);
        let sim = Arc::new(Sim {
            inner: Mutex::new(Inner {
                engine: Engine::new(EngineConfig {
                    host_kv_tokens: config.host_kv_tokens,
                    ..EngineConfig::new(config.profile.clone())
                }),
                streams: HashMap::new(),
                next_id: 1,
                busy: VecDeque::new(),
                step_started: None,
                xid_errors: 0,
                last_xid: None,
                throttle: Vec::new(),
            }),
            config,
            wake: Notify::new(),
            uuid,
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/models", get(models))
            .route("/health", get(|| async { "" }))
            .route("/metrics", get(metrics))
            .route("/sim/telemetry", get(telemetry))
            .route("/sim/faults", post(faults))
            .with_state(sim.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let driver = tokio::spawn(drive(sim.clone()));
        Ok(Self {
            addr,
            sim,
            tasks: vec![server, driver],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn name(&self) -> &str {
        &self.sim.config.name
    }

    /// Waits until every task ends (they run until dropped).
    pub async fn wait(mut self) {
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for SimEngine {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs the engine's steps in (scaled) real time.
async fn drive(sim: Arc<Sim>) {
    loop {
        let step = lock(&sim.inner).engine.step();
        let Some(step) = step else {
            // A submission stores a wake-up permit if we are not waiting yet.
            sim.wake.notified().await;
            continue;
        };
        let started = Instant::now();
        let factor = {
            let mut g = lock(&sim.inner);
            g.step_started = Some(started);
            if g.throttle.is_empty() {
                1.0
            } else {
                THROTTLE_SLOWDOWN
            }
        };
        let wall = step.duration * factor / sim.config.speed;
        tokio::time::sleep(Duration::from_secs_f64(wall)).await;
        let mut g = lock(&sim.inner);
        let now = Instant::now();
        g.step_started = None;
        g.busy.push_back((started, now));
        while g
            .busy
            .front()
            .is_some_and(|(_, end)| now.duration_since(*end) > Duration::from_secs(2))
        {
            g.busy.pop_front();
        }
        let send = |g: &mut Inner, id: u64, t: Tok| {
            if let Some(tx) = g.streams.get(&id) {
                let _ = tx.send(t);
            }
        };
        for &(id, cached) in &step.first_tokens {
            send(&mut g, id, Tok::First { cached });
        }
        for &id in &step.tokens {
            send(&mut g, id, Tok::Next);
        }
        for &id in &step.finished {
            send(&mut g, id, Tok::Done);
            g.streams.remove(&id);
        }
    }
}

impl Sim {
    fn sample(&self) -> GpuSample {
        let g = lock(&self.inner);
        let p = &self.config.profile;
        let now = Instant::now();
        // Busy share of the last second, the step in progress included.
        let from = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let busy: f64 = g
            .busy
            .iter()
            .copied()
            .chain(g.step_started.map(|s| (s, now)))
            .map(|(s, e)| e.saturating_duration_since(s.max(from)).as_secs_f64())
            .sum();
        let util = busy.clamp(0.0, 1.0);
        let kv = g.engine.metrics().kv_usage;
        // vLLM takes 90% of the memory up front (weights and KV cache pool).
        let used = (p.memory_bytes as f64 * (0.9 * (0.95 + 0.05 * kv))) as u64;
        GpuSample {
            index: self.config.gpu_index,
            uuid: self.uuid.clone(),
            name: p.product.to_owned(),
            utilization_pct: (util * 100.0).round(),
            memory_used_bytes: used,
            memory_total_bytes: p.memory_bytes,
            power_w: p.idle_power_w + (p.power_limit_w - p.idle_power_w) * util,
            power_limit_w: p.power_limit_w,
            temperature_c: if g.throttle.iter().any(|t| t.contains("thermal")) {
                92.0
            } else {
                32.0 + 40.0 * util
            },
            throttle: g.throttle.clone(),
            xid_errors: g.xid_errors,
            last_xid: g.last_xid,
            ecc_uncorrected: 0,
            simulated: true,
        }
    }
}

/// OpenAI's error shape.
fn error(status: StatusCode, message: &str, kind: &str, param: Option<&str>) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": param, "code": null}}),
    )
}

/// A submitted request.
struct Submitted {
    req: Map<String, Value>,
    prompt_tokens: u32,
    /// Seeds the answer's words: equal prompts, equal answers.
    seed: u64,
    rx: mpsc::UnboundedReceiver<Tok>,
}

/// What both generation endpoints share: parse, check, submit.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response itself, returned at once"
)]
fn submit(sim: &Sim, body: &Bytes) -> Result<Submitted, Response<Body>> {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "The request body is not a JSON object.",
            "BadRequestError",
            None,
        ));
    };
    let model = req.get("model").and_then(Value::as_str).unwrap_or("");
    if !sim.config.models.iter().any(|m| m == model) {
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist."),
            "NotFoundError",
            Some("model"),
        ));
    }
    let shape = prompt::from_request(&req);
    let output = prompt::max_output_tokens(&req)
        .map(|m| m.clamp(1, u64::from(u32::MAX)) as u32)
        .unwrap_or(sim.config.default_output_tokens)
        .max(1);
    let prompt_tokens = shape.tokens;
    let seed = shape
        .blocks
        .first()
        .copied()
        .unwrap_or(u64::from(prompt_tokens));
    let (tx, rx) = mpsc::unbounded_channel();
    let mut g = lock(&sim.inner);
    let id = g.next_id;
    g.next_id += 1;
    let submitted = g.engine.submit(Request {
        id,
        prompt_tokens,
        output_tokens: output,
        blocks: shape.blocks,
    });
    match submitted {
        Ok(()) => {}
        Err(Refused::TooLong(need, cap)) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "This model's maximum context length is {cap} tokens. However, you requested {need} tokens. Please reduce the length of the messages or completion."
                ),
                "BadRequestError",
                Some("messages"),
            ));
        }
        Err(Refused::Empty) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "The prompt is empty.",
                "BadRequestError",
                None,
            ));
        }
    }
    g.streams.insert(id, tx);
    drop(g);
    sim.wake.notify_one();
    Ok(Submitted {
        req,
        prompt_tokens,
        seed,
        rx,
    })
}

/// The answer's words: deterministic in the prompt, one token each.
fn word(seed: u64, i: u32) -> &'static str {
    const WORDS: [&str; 16] = [
        "simulated",
        "tokens",
        "stream",
        "from",
        "a",
        "GPU",
        "that",
        "does",
        "not",
        "exist",
        "so",
        "the",
        "scheduler",
        "can",
        "be",
        "seen",
    ];
    let h = seed
        .wrapping_add(u64::from(i))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    WORDS[(h >> 60) as usize]
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

async fn chat(State(sim): State<Arc<Sim>>, body: Bytes) -> Response<Body> {
    generate(sim, body, Kind::Chat).await
}

async fn completions(State(sim): State<Arc<Sim>>, body: Bytes) -> Response<Body> {
    generate(sim, body, Kind::Completion).await
}

async fn generate(sim: Arc<Sim>, body: Bytes, kind: Kind) -> Response<Body> {
    let Submitted {
        req,
        prompt_tokens,
        seed,
        mut rx,
    } = match submit(&sim, &body) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let limited = prompt::max_output_tokens(&req).is_some();
    let finish = if limited { "length" } else { "stop" };
    let id = new_id(if kind == Kind::Chat {
        "chatcmpl-sim"
    } else {
        "cmpl-sim"
    });
    let created = now_secs();
    let usage = move |completion: u32, cached: u32| {
        json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        })
    };
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let mut n = 0u32;
        let mut cached = 0;
        let mut text = String::new();
        while let Some(t) = rx.recv().await {
            match t {
                Tok::First { cached: c } => cached = c,
                Tok::Next => {}
                Tok::Done => break,
            }
            if n > 0 {
                text.push(' ');
            }
            text.push_str(word(seed, n));
            n += 1;
        }
        let body = match kind {
            Kind::Chat => json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": null, "finish_reason": finish}],
                "usage": usage(n, cached),
                "system_fingerprint": "switchyard-sim",
            }),
            Kind::Completion => json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
                "usage": usage(n, cached),
            }),
        };
        return json_response(StatusCode::OK, &body);
    }
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (tx, out) = mpsc::channel::<Result<Bytes, io::Error>>(64);
    tokio::spawn(async move {
        let frame = |v: Value| Ok(Bytes::from(format!("data: {v}\n\n")));
        let chunk = |delta: Value, finish: Option<&str>| match kind {
            Kind::Chat => json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            }),
            Kind::Completion => json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")),
                             "logprobs": null, "finish_reason": finish}],
            }),
        };
        let mut n = 0u32;
        let mut cached = 0;
        while let Some(t) = rx.recv().await {
            if let Tok::Done = t {
                break;
            }
            if let Tok::First { cached: c } = t {
                cached = c;
                if kind == Kind::Chat
                    && tx
                        .send(frame(chunk(
                            json!({"role": "assistant", "content": ""}),
                            None,
                        )))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            let text = if n == 0 {
                word(seed, n).to_owned()
            } else {
                format!(" {}", word(seed, n))
            };
            n += 1;
            if tx
                .send(frame(chunk(json!({"content": text}), None)))
                .await
                .is_err()
            {
                return;
            }
            if let Tok::Done = t {
                break;
            }
        }
        let mut last = chunk(json!({}), Some(finish));
        if include_usage {
            last["usage"] = Value::Null;
        }
        let _ = tx.send(frame(last)).await;
        if include_usage {
            let mut u = chunk(json!({}), None);
            u["choices"] = json!([]);
            u["usage"] = usage(n, cached);
            let _ = tx.send(frame(u)).await;
        }
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    event_stream(out)
}

async fn models(State(sim): State<Arc<Sim>>) -> Response<Body> {
    let data: Vec<Value> = sim
        .config
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "switchyard-sim"}))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// vLLM's metric names, one series per served model.
async fn metrics(State(sim): State<Arc<Sim>>) -> Response<Body> {
    let m = lock(&sim.inner).engine.metrics();
    let mut out = String::new();
    let gauges: [(&str, &str, &str, f64); 3] = [
        (
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            m.running as f64,
        ),
        (
            "vllm:num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            m.waiting as f64,
        ),
        (
            "vllm:kv_cache_usage_perc",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            m.kv_usage,
        ),
    ];
    let counters: [(&str, &str, &str, f64); 5] = [
        (
            "vllm:prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            m.prompt_tokens_total as f64,
        ),
        (
            "vllm:generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            m.generation_tokens_total as f64,
        ),
        (
            "vllm:prefix_cache_queries_total",
            "counter",
            "Prefix cache queries, in terms of number of queried tokens.",
            m.prefix_queries_total as f64,
        ),
        (
            "vllm:prefix_cache_hits_total",
            "counter",
            "Prefix cache hits, in terms of number of cached tokens.",
            m.prefix_hits_total as f64,
        ),
        (
            "vllm:request_success_total",
            "counter",
            "Count of successfully processed requests.",
            m.requests_finished_total as f64,
        ),
    ];
    // The engine's counters are not per model; report them on the first
    // model's series so sums over models stay right.
    let model = sim.config.models.first().map(String::as_str).unwrap_or("");
    for (name, kind, help, value) in gauges.iter().chain(counters.iter()) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        out.push_str(&format!(
            "{name}{{engine=\"0\",model_name=\"{model}\",simulated=\"true\",sim_engine=\"{}\"}} {value}\n",
            sim.config.name
        ));
    }
    let mut resp = Response::new(Body::from(out));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn telemetry(State(sim): State<Arc<Sim>>) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"source": "sim", "engine": sim.config.name, "gpus": [sim.sample()]}),
    )
}

async fn faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response<Body> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Faults {
        xid: Option<u64>,
        #[serde(default)]
        throttle: Vec<String>,
        #[serde(default)]
        clear: bool,
    }
    let f: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &e.to_string(),
                "BadRequestError",
                None,
            );
        }
    };
    if let Some(bad) = f
        .throttle
        .iter()
        .find(|t| !THROTTLE_REASONS.iter().any(|(n, _)| n == t))
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("unknown throttle reason `{bad}`"),
            "BadRequestError",
            Some("throttle"),
        );
    }
    let mut g = lock(&sim.inner);
    if f.clear {
        g.throttle.clear();
    }
    g.throttle.extend(f.throttle);
    if let Some(x) = f.xid {
        g.xid_errors += 1;
        g.last_xid = Some(x);
    }
    drop(g);
    json_response(StatusCode::OK, &json!({"gpus": [sim.sample()]}))
}
