//! Prometheus metrics (`GET /metrics`), through the `metrics` facade and
//! its Prometheus exporter.
//!
//! Two kinds of series:
//!
//! - **Recorded as things happen**, on the request path: requests, their
//!   duration and the gateway's overhead, tokens, time to first token and
//!   between chunks, semantic-cache similarity ([`request`], [`ttft`],
//!   [`inter_chunk`], [`similarity`]).
//! - **Read at scrape time** from the state the gateway already keeps
//!   (the fleet's ledgers and GPU samples, placement decision counts,
//!   circuit breakers, the cache's counters and sizes, the batch store and
//!   runner): [`render`] sets them, then renders everything. Counters
//!   among them (decisions, cache lookups, GPU errors) are set to their
//!   absolute values.
//!
//! Every label comes from a bounded set: configured model groups,
//! deployments, backends and GPUs, HTTP status codes, fixed outcome and
//! reason names. A model name a client made up is labelled `unknown`.
//! Names and units are listed in docs/operations.md.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use switchyard_scheduler::catalog::Price;

use crate::app::App;
use crate::dashboard::Answered;

/// Latency buckets, seconds: 0.5 ms to 2 min.
const SECONDS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];
/// The gateway's own overhead is sub-millisecond: finer buckets.
const OVERHEAD_SECONDS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];
/// A semantic lookup's phases, against a budget of tens of milliseconds
/// and a 3 ms target: millisecond steps.
const LOOKUP_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.05,
    0.1,
];
/// Cosine similarity of semantic hits.
const SIMILARITY: [f64; 11] = [
    0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// What recording needs to know of the configuration.
#[derive(Debug, Default)]
struct Context {
    /// Prices of external deployments, by deployment id.
    prices: HashMap<String, Price>,
    /// Providers that are local GPU backends.
    local: HashSet<String>,
}

static CONTEXT: OnceLock<Context> = OnceLock::new();

/// Sets the deployments' prices and the local providers (once per
/// process; the first gateway built wins).
pub fn set_context(prices: HashMap<String, Price>, local: HashSet<String>) {
    let _ = CONTEXT.set(Context { prices, local });
}

/// Installs the process-wide recorder once (later calls return the same
/// handle). `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("switchyard_gateway_overhead_seconds".into()),
                    &OVERHEAD_SECONDS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switchyard_cache_similarity".into()),
                        &SIMILARITY,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switchyard_cache_lookup_seconds".into()),
                        &LOOKUP_SECONDS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
                })
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// What a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric: name, kind, unit and description (docs/operations.md
/// lists the same, which a test checks).
pub const METRICS: &[(&str, Kind, Unit, &str)] = &[
    (
        "switchyard_requests_total",
        Kind::Counter,
        Unit::Count,
        "Requests answered, by endpoint, model group, provider, HTTP status, outcome and cache result.",
    ),
    (
        "switchyard_request_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time from receiving a request to its last byte, seconds.",
    ),
    (
        "switchyard_gateway_overhead_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time spent in the gateway itself (total less upstream time), seconds.",
    ),
    (
        "switchyard_tokens_total",
        Kind::Counter,
        Unit::Count,
        "Tokens reported by upstreams (or the cache), by model group, provider and direction (input/output).",
    ),
    (
        "switchyard_spend_usd",
        Kind::Gauge,
        Unit::Count,
        "USD spent on external deployments with a known price (catalog or config), since the gateway started; monotonic (a gauge because the metrics facade counts in integers).",
    ),
    (
        "switchyard_time_to_first_token_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time from receiving a streamed request to its first chunk, by deployment, seconds.",
    ),
    (
        "switchyard_inter_chunk_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time between two chunks of a streamed answer, by deployment, seconds.",
    ),
    (
        "switchyard_cache_similarity",
        Kind::Histogram,
        Unit::Count,
        "Cosine similarity of semantic-cache hits (verified), 0 to 1.",
    ),
    (
        "switchyard_cache_lookup_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time of each phase of a semantic-cache lookup (embed, search, verify), seconds.",
    ),
    (
        "switchyard_cache_lookups_total",
        Kind::Counter,
        Unit::Count,
        "Cache lookups by result: hit_exact, hit_semantic, miss, bypass, fail_open.",
    ),
    (
        "switchyard_cache_entries",
        Kind::Gauge,
        Unit::Count,
        "Entries in the cache, by tier (memory: the exact tier; semantic: the vector store).",
    ),
    (
        "switchyard_cache_memory_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Bytes held by the in-memory exact tier.",
    ),
    (
        "switchyard_cache_evictions_total",
        Kind::Counter,
        Unit::Count,
        "Entries evicted from the in-memory exact tier (LRU, size bound).",
    ),
    (
        "switchyard_cache_audits_total",
        Kind::Counter,
        Unit::Count,
        "Audited semantic candidates by model group and outcome (agreed, disagreed): cached answers compared with fresh ones.",
    ),
    (
        "switchyard_cache_similarity_threshold",
        Kind::Gauge,
        Unit::Count,
        "Similarity a semantic candidate needs now, by audited model group (raised by audits above the configured one).",
    ),
    (
        "switchyard_placements_total",
        Kind::Counter,
        Unit::Count,
        "Placement decisions by target (local:<backend>/<gpu>, external:<provider>, deferred, rejected) and reason.",
    ),
    (
        "switchyard_backend_in_flight",
        Kind::Gauge,
        Unit::Count,
        "Requests in flight on a local backend.",
    ),
    (
        "switchyard_backend_awaiting_first_token",
        Kind::Gauge,
        Unit::Count,
        "Requests on a local backend that have not produced a first token (queued or prefilling).",
    ),
    (
        "switchyard_backend_foreign_requests",
        Kind::Gauge,
        Unit::Count,
        "Requests the backend's engine reports beyond those this gateway sent (another gateway's, a direct client's); placement counts them.",
    ),
    (
        "switchyard_backend_permits",
        Kind::Gauge,
        Unit::Count,
        "Admission permits of a local backend (its effective batch width).",
    ),
    (
        "switchyard_backend_health",
        Kind::Gauge,
        Unit::Count,
        "1 for the local backend's current health state (healthy, degraded, drained), 0 for the others.",
    ),
    (
        "switchyard_backend_slowness",
        Kind::Gauge,
        Unit::Count,
        "Observed over profiled service time of a local backend (1: as profiled).",
    ),
    (
        "switchyard_backend_telemetry_age_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Age of a local backend's latest GPU sample, seconds.",
    ),
    (
        "switchyard_engine_requests",
        Kind::Gauge,
        Unit::Count,
        "Requests an engine reports on its own /metrics, by state (running, waiting).",
    ),
    (
        "switchyard_engine_kv_cache_usage_ratio",
        Kind::Gauge,
        Unit::Percent,
        "KV-cache usage an engine reports, 0 to 1.",
    ),
    (
        "switchyard_gpu_utilization_ratio",
        Kind::Gauge,
        Unit::Percent,
        "GPU utilisation (share of the last sample period a kernel ran), 0 to 1.",
    ),
    (
        "switchyard_gpu_memory_used_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "GPU memory in use, bytes.",
    ),
    (
        "switchyard_gpu_memory_total_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "GPU memory, bytes.",
    ),
    (
        "switchyard_gpu_power_watts",
        Kind::Gauge,
        Unit::Count,
        "GPU power draw, watts.",
    ),
    (
        "switchyard_gpu_power_limit_watts",
        Kind::Gauge,
        Unit::Count,
        "GPU enforced power limit, watts.",
    ),
    (
        "switchyard_gpu_temperature_celsius",
        Kind::Gauge,
        Unit::Count,
        "GPU temperature, degrees Celsius.",
    ),
    (
        "switchyard_gpu_throttled",
        Kind::Gauge,
        Unit::Count,
        "1 while the GPU reports this clock-throttle reason.",
    ),
    (
        "switchyard_gpu_xid_errors_total",
        Kind::Counter,
        Unit::Count,
        "Critical XID errors seen on the GPU since its telemetry source started.",
    ),
    (
        "switchyard_gpu_ecc_uncorrected_errors_total",
        Kind::Counter,
        Unit::Count,
        "Uncorrectable ECC errors of the GPU since the driver loaded.",
    ),
    (
        "switchyard_breaker_state",
        Kind::Gauge,
        Unit::Count,
        "1 for the deployment's circuit-breaker state (closed, open, half_open), 0 for the others.",
    ),
    (
        "switchyard_breaker_consecutive_failures",
        Kind::Gauge,
        Unit::Count,
        "Consecutive failures counted by the deployment's circuit breaker.",
    ),
    (
        "switchyard_batches",
        Kind::Gauge,
        Unit::Count,
        "Batches by state.",
    ),
    (
        "switchyard_batch_items",
        Kind::Gauge,
        Unit::Count,
        "Batch items by state (pending, succeeded, failed, cancelled, expired).",
    ),
    (
        "switchyard_batch_items_placed_total",
        Kind::Counter,
        Unit::Count,
        "Finished batch items by where they ran (local, external, cache).",
    ),
    (
        "switchyard_cache_saved_usd",
        Kind::Gauge,
        Unit::Count,
        "Estimated spend the cache avoided since start: each hit's stored usage at the price of the group's first priced external deployment, US dollars (monotonic).",
    ),
    (
        "switchyard_access_refusals_total",
        Kind::Counter,
        Unit::Count,
        "Requests refused by a rate limit or budget, by scope and limit.",
    ),
    (
        "switchyard_dlp_findings_total",
        Kind::Counter,
        Unit::Count,
        "Requests in which a DLP detector matched, by detector and action.",
    ),
    (
        "switchyard_batch_queue_depth",
        Kind::Gauge,
        Unit::Count,
        "Items of running batches not yet finished.",
    ),
    (
        "switchyard_batch_items_in_flight",
        Kind::Gauge,
        Unit::Count,
        "Batch items being attempted now.",
    ),
    (
        "switchyard_batch_items_in_provider_batches",
        Kind::Gauge,
        Unit::Count,
        "Batch items collected for, or waiting in, providers' batch APIs.",
    ),
    (
        "switchyard_batch_min_deadline_slack_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Least deadline slack among running batches at their local rate (negative: behind), seconds.",
    ),
    (
        "switchyard_build_info",
        Kind::Gauge,
        Unit::Count,
        "Always 1; the version is a label.",
    ),
    (
        "switchyard_uptime_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Seconds since the gateway started.",
    ),
];

fn describe() {
    for &(name, kind, unit, help) in METRICS {
        match kind {
            Kind::Counter => describe_counter!(name, unit, help),
            Kind::Gauge => describe_gauge!(name, unit, help),
            Kind::Histogram => describe_histogram!(name, unit, help),
        }
    }
}

/// Records one finished request (from its log line's fields); returns
/// what it cost when its deployment is external with a known price.
#[allow(clippy::too_many_arguments, reason = "one call site: the request log")]
pub fn request(
    endpoint: &'static str,
    group: &str,
    deployment: Option<&str>,
    status: u16,
    outcome: &'static str,
    cache: &'static str,
    duration: Duration,
    overhead: Option<Duration>,
    // (prompt, of which cached, completion)
    tokens: Option<(u64, u64, u64)>,
) -> (Option<f64>, Option<Answered>) {
    let provider = deployment.map_or("-", |d| d.split_once('/').map_or(d, |(p, _)| p));
    let ctx = CONTEXT.get();
    let answered = if status >= 400 {
        Some(Answered::Error)
    } else if cache.starts_with("hit") {
        Some(Answered::Cache)
    } else if provider == "local" || ctx.is_some_and(|c| c.local.contains(provider)) {
        Some(Answered::Local)
    } else if deployment.is_some() {
        Some(Answered::External)
    } else {
        None
    };
    // What a priced external deployment charged for it.
    let cost = match (answered, tokens, deployment, ctx) {
        (Some(Answered::External), Some((i, cached, o)), Some(d), Some(c)) => {
            c.prices.get(d).map(|p| p.cost(i, cached, o, false))
        }
        _ => None,
    };
    if HANDLE.get().and_then(Option::as_ref).is_none() {
        return (cost, answered);
    }
    let key = RequestKey {
        endpoint,
        group,
        deployment,
        status,
        outcome,
        cache,
    };
    let h = request_handles(&key, provider);
    h.requests.increment(1);
    h.duration.record(duration.as_secs_f64());
    if let Some(o) = overhead {
        h.overhead.record(o.as_secs_f64());
    }
    if let Some(a) = answered {
        crate::dashboard::record(a, duration, cost);
    }
    if let Some(usd) = cost {
        h.spend.increment(usd);
    }
    if let Some((input, _, output)) = tokens {
        h.tokens_in.increment(input);
        h.tokens_out.increment(output);
    }
    (cost, answered)
}

/// The labels of one request's series, borrowed.
#[derive(Debug, Clone, Copy, Hash)]
struct RequestKey<'a> {
    endpoint: &'static str,
    group: &'a str,
    deployment: Option<&'a str>,
    status: u16,
    outcome: &'static str,
    cache: &'static str,
}

/// The same, owned (kept beside its handles).
#[derive(Debug, PartialEq, Eq)]
struct OwnedKey {
    endpoint: &'static str,
    group: Box<str>,
    deployment: Option<Box<str>>,
    status: u16,
    outcome: &'static str,
    cache: &'static str,
}

impl OwnedKey {
    fn matches(&self, k: &RequestKey<'_>) -> bool {
        self.endpoint == k.endpoint
            && &*self.group == k.group
            && self.deployment.as_deref() == k.deployment
            && self.status == k.status
            && self.outcome == k.outcome
            && self.cache == k.cache
    }
}

/// Every series one request touches, registered once per label set: a
/// request then costs a hash, a read lock and a few atomic updates rather
/// than the facade's label building and registry lookups (measured in
/// benches/metrics_cost).
struct RequestHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    overhead: metrics::Histogram,
    tokens_in: metrics::Counter,
    tokens_out: metrics::Counter,
    spend: metrics::Gauge,
}

type HandleMap = HashMap<u64, Vec<(OwnedKey, std::sync::Arc<RequestHandles>)>>;

static REQUEST_HANDLES: std::sync::LazyLock<std::sync::RwLock<HandleMap>> =
    std::sync::LazyLock::new(Default::default);

fn request_handles(k: &RequestKey<'_>, provider: &str) -> std::sync::Arc<RequestHandles> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    k.hash(&mut hasher);
    let hash = hasher.finish();
    let find = |m: &HandleMap| {
        m.get(&hash)?
            .iter()
            .find(|(o, _)| o.matches(k))
            .map(|(_, h)| h.clone())
    };
    if let Some(h) = find(
        &REQUEST_HANDLES
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ) {
        return h;
    }
    let mut map = REQUEST_HANDLES
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = find(&map) {
        return h;
    }
    let provider = provider.to_owned();
    let group = k.group.to_owned();
    let h = std::sync::Arc::new(RequestHandles {
        requests: counter!("switchyard_requests_total",
            "endpoint" => k.endpoint, "model_group" => group.clone(), "provider" => provider.clone(),
            "status" => k.status.to_string(), "outcome" => k.outcome, "cache" => k.cache),
        duration: histogram!("switchyard_request_duration_seconds",
            "endpoint" => k.endpoint, "model_group" => group.clone()),
        overhead: histogram!("switchyard_gateway_overhead_seconds", "endpoint" => k.endpoint),
        tokens_in: counter!("switchyard_tokens_total", "model_group" => group.clone(),
            "provider" => provider.clone(), "direction" => "input"),
        tokens_out: counter!("switchyard_tokens_total", "model_group" => group.clone(),
            "provider" => provider.clone(), "direction" => "output"),
        spend: gauge!("switchyard_spend_usd", "model_group" => group, "provider" => provider),
    });
    map.entry(hash).or_default().push((
        OwnedKey {
            endpoint: k.endpoint,
            group: k.group.into(),
            deployment: k.deployment.map(Into::into),
            status: k.status,
            outcome: k.outcome,
            cache: k.cache,
        },
        h.clone(),
    ));
    h
}

/// A histogram labelled by deployment, registered once per deployment.
fn by_deployment(cache: &ByDeployment, name: &'static str, deployment: &str) -> metrics::Histogram {
    if let Some(h) = cache
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(deployment)
    {
        return h.clone();
    }
    let h = histogram!(name, "deployment" => deployment.to_owned());
    cache
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(deployment.into(), h.clone());
    h
}

type ByDeployment = std::sync::LazyLock<std::sync::RwLock<HashMap<Box<str>, metrics::Histogram>>>;
static TTFT: ByDeployment = std::sync::LazyLock::new(Default::default);
static INTER_CHUNK: ByDeployment = std::sync::LazyLock::new(Default::default);

/// Runs the exporter's upkeep (folding histogram samples into their
/// buckets) every 5 s, so memory stays bounded between scrapes.
pub fn spawn_upkeep() {
    let Some(handle) = HANDLE.get().and_then(Option::as_ref) else {
        return;
    };
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if STARTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let handle = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// Time to the first chunk of a streamed answer.
pub fn ttft(deployment: &str, t: Duration) {
    if HANDLE.get().is_some() {
        by_deployment(&TTFT, "switchyard_time_to_first_token_seconds", deployment)
            .record(t.as_secs_f64());
    }
}

/// Time between two chunks of a streamed answer.
pub fn inter_chunk(deployment: &str, t: Duration) {
    if HANDLE.get().is_some() {
        by_deployment(&INTER_CHUNK, "switchyard_inter_chunk_seconds", deployment)
            .record(t.as_secs_f64());
    }
}

/// What a cache hit saved: the stored answer's usage at the price of the
/// first deployment of `deployments` (in the group's order) that has one.
/// `None` when none is priced (a local-only group) or the body has no
/// usage.
pub fn cache_saved<'a>(
    group: &str,
    mut deployments: impl Iterator<Item = &'a str>,
    body: &[u8],
) -> Option<f64> {
    #[derive(serde::Deserialize)]
    struct U {
        usage: Option<crate::providers::Usage>,
    }
    let ctx = CONTEXT.get()?;
    let price = deployments.find_map(|d| ctx.prices.get(d))?;
    let u = serde_json::from_slice::<U>(body).ok()?.usage?;
    let cached = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
    let usd = price.cost(u.prompt_tokens, cached, u.completion_tokens, false);
    if HANDLE.get().is_some() {
        gauge!("switchyard_cache_saved_usd", "model_group" => group.to_owned()).increment(usd);
    }
    crate::dashboard::saved(usd);
    Some(usd)
}

/// A request refused by a limit: `scope` is `key` or `tenant`; `limit`
/// one of `requests`, `tokens`, `concurrency`, `budget_daily`,
/// `budget_monthly`.
pub fn access_refusal(scope: &'static str, limit: &'static str) {
    if HANDLE.get().is_some() {
        counter!("switchyard_access_refusals_total", "scope" => scope, "limit" => limit)
            .increment(1);
    }
}

/// A DLP detector matched (`action`: `redact`, `block`, `log`).
pub fn dlp_finding(detector: &str, action: &'static str) {
    if HANDLE.get().is_some() {
        counter!("switchyard_dlp_findings_total", "detector" => detector.to_owned(), "action" => action)
            .increment(1);
    }
}

/// A semantic-cache hit's similarity.
pub fn similarity(s: f32) {
    if HANDLE.get().is_some() {
        histogram!("switchyard_cache_similarity").record(f64::from(s));
    }
}

/// How long one phase of a semantic lookup took (`embed`: the prompt's
/// vector; `search`: the vector store, payloads included; `verify`: the
/// checks on the candidates).
pub fn lookup_phase(phase: &'static str, took: std::time::Duration) {
    if HANDLE.get().is_some() {
        histogram!("switchyard_cache_lookup_seconds", "phase" => phase).record(took.as_secs_f64());
    }
}

fn one_hot(
    name: &'static str,
    labels: &[(&'static str, String)],
    key: &'static str,
    states: &[&'static str],
    current: &str,
) {
    for s in states {
        let mut l: Vec<(&'static str, String)> = labels.to_vec();
        l.push((key, (*s).to_owned()));
        let labels: Vec<metrics::Label> = l
            .into_iter()
            .map(|(k, v)| metrics::Label::new(k, v))
            .collect();
        gauge!(name, labels).set(if *s == current { 1.0 } else { 0.0 });
    }
}

/// Sets the scrape-time series from `app`, then renders everything in
/// Prometheus' text format.
pub async fn render(app: &App) -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    gauge!("switchyard_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    gauge!("switchyard_uptime_seconds").set(now.saturating_sub(app.started_at) as f64);
    fleet(app);
    breakers(app);
    if let Some(cache) = &app.cache {
        let s = cache.stats().await;
        for (result, v) in [
            ("hit_exact", s.hits_exact),
            ("hit_semantic", s.hits_semantic),
            ("miss", s.misses),
            ("bypass", s.bypasses),
            ("fail_open", s.fail_open),
        ] {
            counter!("switchyard_cache_lookups_total", "result" => result).absolute(v);
        }
        gauge!("switchyard_cache_entries", "tier" => "memory").set(s.memory.entries as f64);
        gauge!("switchyard_cache_memory_bytes").set(s.memory.bytes as f64);
        counter!("switchyard_cache_evictions_total", "tier" => "memory")
            .absolute(s.memory.evictions);
        if let Some(store) = s.store {
            gauge!("switchyard_cache_entries", "tier" => "semantic").set(store.entries as f64);
        }
        for (group, a) in s.audits {
            for (outcome, v) in [("agreed", a.agreed), ("disagreed", a.disagreed)] {
                counter!("switchyard_cache_audits_total", "model_group" => group.clone(), "outcome" => outcome)
                    .absolute(v);
            }
            gauge!("switchyard_cache_similarity_threshold", "model_group" => group)
                .set(f64::from(a.similarity));
        }
    }
    if let Some(b) = &app.batches {
        batches(b).await;
    }
    Some(handle.render())
}

fn fleet(app: &App) {
    let Some(fleet) = &app.fleet else {
        return;
    };
    let snap = fleet.snapshot();
    for d in &snap.decisions {
        counter!("switchyard_placements_total", "target" => d.target.clone(), "reason" => d.reason)
            .absolute(d.count);
    }
    let mut seen = std::collections::HashSet::new();
    for b in &snap.backends {
        let name = b.name.clone();
        gauge!("switchyard_backend_in_flight", "backend" => name.clone()).set(b.in_flight as f64);
        gauge!("switchyard_backend_awaiting_first_token", "backend" => name.clone())
            .set(b.awaiting_first_token as f64);
        gauge!("switchyard_backend_foreign_requests", "backend" => name.clone()).set(f64::from(
            b.foreign_requests.running + b.foreign_requests.waiting,
        ));
        gauge!("switchyard_backend_permits", "backend" => name.clone()).set(f64::from(b.permits));
        gauge!("switchyard_backend_slowness", "backend" => name.clone()).set(b.slowness);
        let health = match b.health {
            switchyard_scheduler::placement::Health::Healthy => "healthy",
            switchyard_scheduler::placement::Health::Degraded => "degraded",
            switchyard_scheduler::placement::Health::Drained => "drained",
        };
        one_hot(
            "switchyard_backend_health",
            &[("backend", name.clone())],
            "state",
            &["healthy", "degraded", "drained"],
            health,
        );
        if let Some(age) = b.telemetry_age_s {
            gauge!("switchyard_backend_telemetry_age_seconds", "backend" => name.clone()).set(age);
        }
        if let Some(e) = &b.engine {
            gauge!("switchyard_engine_requests", "backend" => name.clone(), "state" => "running")
                .set(e.running);
            gauge!("switchyard_engine_requests", "backend" => name.clone(), "state" => "waiting")
                .set(e.waiting);
            if let Some(kv) = e.kv_usage {
                gauge!("switchyard_engine_kv_cache_usage_ratio", "backend" => name.clone()).set(kv);
            }
        }
        // A GPU shared by several backends is reported once.
        for g in b.gpus.iter().filter(|g| seen.insert(g.uuid.clone())) {
            let l = |extra: Option<(&'static str, &'static str)>| {
                let mut v = vec![
                    metrics::Label::new("uuid", g.uuid.clone()),
                    metrics::Label::new("index", g.index.to_string()),
                    metrics::Label::new("name", g.name.clone()),
                    metrics::Label::new("simulated", if g.simulated { "true" } else { "false" }),
                ];
                if let Some((k, val)) = extra {
                    v.push(metrics::Label::new(k, val));
                }
                v
            };
            gauge!("switchyard_gpu_utilization_ratio", l(None)).set(g.utilization_pct / 100.0);
            gauge!("switchyard_gpu_memory_used_bytes", l(None)).set(g.memory_used_bytes as f64);
            gauge!("switchyard_gpu_memory_total_bytes", l(None)).set(g.memory_total_bytes as f64);
            gauge!("switchyard_gpu_power_watts", l(None)).set(g.power_w);
            gauge!("switchyard_gpu_power_limit_watts", l(None)).set(g.power_limit_w);
            gauge!("switchyard_gpu_temperature_celsius", l(None)).set(g.temperature_c);
            for (reason, _) in switchyard_scheduler::telemetry::THROTTLE_REASONS {
                let on = g.throttle.iter().any(|t| t == reason);
                gauge!("switchyard_gpu_throttled", l(Some(("reason", reason)))).set(if on {
                    1.0
                } else {
                    0.0
                });
            }
            counter!("switchyard_gpu_xid_errors_total", l(None)).absolute(g.xid_errors);
            counter!("switchyard_gpu_ecc_uncorrected_errors_total", l(None))
                .absolute(g.ecc_uncorrected);
        }
    }
}

fn breakers(app: &App) {
    let now = tokio::time::Instant::now();
    for d in app.groups.iter().flat_map(|g| g.deployments.iter()) {
        let s = d.breaker.snapshot(now);
        one_hot(
            "switchyard_breaker_state",
            &[("deployment", d.id.clone())],
            "state",
            &["closed", "open", "half_open"],
            s.state,
        );
        gauge!("switchyard_breaker_consecutive_failures", "deployment" => d.id.clone())
            .set(f64::from(s.consecutive_failures));
    }
}

async fn batches(b: &std::sync::Arc<crate::batch::Batches>) {
    let store = b.store.clone();
    let counts =
        crate::batch::blocking(move || Ok((store.batches_by_state()?, store.item_totals()?))).await;
    match counts {
        Ok((by_state, items)) => {
            for state in [
                "validating",
                "in_progress",
                "completed",
                "cancelled",
                "expired",
            ] {
                let n = by_state
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n);
                gauge!("switchyard_batches", "state" => state).set(n as f64);
            }
            for (state, n) in [
                ("pending", items.pending()),
                ("succeeded", items.succeeded),
                ("failed", items.failed),
                ("cancelled", items.cancelled),
                ("expired", items.expired),
            ] {
                gauge!("switchyard_batch_items", "state" => state).set(n as f64);
            }
            for (place, n) in [
                ("local", items.placed_local),
                ("external", items.placed_external),
                ("cache", items.from_cache),
            ] {
                counter!("switchyard_batch_items_placed_total", "where" => place)
                    .absolute(n.max(0) as u64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: batch store unreadable"),
    }
    let runner = b.runner.borrow().clone();
    gauge!("switchyard_batch_queue_depth").set(runner.queue_depth as f64);
    gauge!("switchyard_batch_items_in_flight").set(runner.in_flight as f64);
    gauge!("switchyard_batch_items_in_provider_batches").set(
        runner
            .batches
            .iter()
            .map(|x| x.in_provider_batches)
            .sum::<i64>() as f64,
    );
    let slack = runner
        .batches
        .iter()
        .filter_map(|x| x.deadline_slack_s)
        .min_by(f64::total_cmp);
    // No running batch (or none measured yet): nothing is late.
    gauge!("switchyard_batch_min_deadline_slack_seconds").set(slack.unwrap_or(f64::INFINITY));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/operations.md lists exactly the metrics the code describes,
    /// each with its type.
    #[test]
    fn operations_doc_lists_every_metric() {
        let doc = include_str!("../../docs/operations.md");
        let listed: Vec<(&str, &str)> = doc
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("| `switchyard_")?;
                let (name, rest) = rest.split_once("` | ")?;
                let kind = rest.split(' ').next()?;
                Some((&l[3..3 + "switchyard_".len() + name.len()], kind))
            })
            .collect();
        let described: Vec<(&str, &str)> = METRICS
            .iter()
            .map(|(n, k, _, _)| {
                let kind = match k {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram => "histogram",
                };
                (*n, kind)
            })
            .collect();
        assert_eq!(listed, described);
        for (name, kind, _, help) in METRICS {
            assert!(!help.is_empty(), "{name}");
            assert_eq!(
                *kind == Kind::Counter,
                name.ends_with("_total"),
                "{name}: counters, and only they, end in _total"
            );
        }
    }
}
