//! The built-in live dashboard: `GET /dashboard` (one HTML page, its
//! script and styles inline, charts drawn as SVG by hand: nothing is
//! fetched from elsewhere) and the JSON it polls every second,
//! `GET /api/v1/dashboard`.
//!
//! The request path feeds [`record`]: per answered request, where it was
//! answered (a local GPU, an external provider, the cache), its latency
//! and, for priced external deployments, its cost. A sampler closes one
//! point per second and keeps the last five minutes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::App;

/// Seconds of history kept.
const HISTORY: usize = 300;

/// Where an answered request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Local,
    External,
    Cache,
    /// An error status (any source).
    Error,
}

impl Answered {
    /// The usage ledger's `placement` (none for errors).
    pub fn placement(self) -> Option<&'static str> {
        match self {
            Self::Local => Some("local"),
            Self::External => Some("external"),
            Self::Cache => Some("cache"),
            Self::Error => None,
        }
    }
}

/// One second of traffic.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Unix seconds at the end of the second.
    pub t: u64,
    pub local: u64,
    pub external: u64,
    pub cache: u64,
    pub errors: u64,
    /// Request latency of that second, milliseconds (`None`: no request).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

struct Live {
    started: AtomicBool,
    local: AtomicU64,
    external: AtomicU64,
    cache: AtomicU64,
    errors: AtomicU64,
    /// Latency of the current second, microseconds.
    latency: Mutex<Option<Histogram<u64>>>,
    /// Spend on priced external deployments since start, nano-USD.
    spend_nano_usd: AtomicU64,
    /// What cache hits would have cost, nano-USD.
    saved_nano_usd: AtomicU64,
    totals: [AtomicU64; 4],
    series: Mutex<VecDeque<Point>>,
}

static LIVE: LazyLock<Live> = LazyLock::new(|| Live {
    started: AtomicBool::new(false),
    local: AtomicU64::new(0),
    external: AtomicU64::new(0),
    cache: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    latency: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 2).ok()),
    spend_nano_usd: AtomicU64::new(0),
    saved_nano_usd: AtomicU64::new(0),
    totals: Default::default(),
    series: Mutex::new(VecDeque::with_capacity(HISTORY)),
});

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts one answered request (called by the metrics hook).
pub fn record(answered: Answered, latency: Duration, cost_usd: Option<f64>) {
    let live = &*LIVE;
    if !live.started.load(Ordering::Relaxed) {
        return;
    }
    let (now, total) = match answered {
        Answered::Local => (&live.local, &live.totals[0]),
        Answered::External => (&live.external, &live.totals[1]),
        Answered::Cache => (&live.cache, &live.totals[2]),
        Answered::Error => (&live.errors, &live.totals[3]),
    };
    now.fetch_add(1, Ordering::Relaxed);
    total.fetch_add(1, Ordering::Relaxed);
    if answered != Answered::Error
        && let Some(h) = lock(&live.latency).as_mut()
    {
        let _ = h.record((latency.as_micros() as u64).clamp(1, 600_000_000));
    }
    if let Some(c) = cost_usd.filter(|c| c.is_finite() && *c > 0.0) {
        live.spend_nano_usd
            .fetch_add((c * 1e9).round() as u64, Ordering::Relaxed);
    }
}

/// A cache hit that saved `usd` (its answer's cost at the group's price).
pub fn saved(usd: f64) {
    if usd.is_finite() && usd > 0.0 {
        LIVE.saved_nano_usd
            .fetch_add((usd * 1e9).round() as u64, Ordering::Relaxed);
    }
}

/// USD spent on priced external deployments since start.
pub fn spend_usd() -> f64 {
    LIVE.spend_nano_usd.load(Ordering::Relaxed) as f64 / 1e9
}

/// Starts the once-a-second sampler (once per process).
pub fn spawn_sampler() {
    if LIVE.started.swap(true, Ordering::Relaxed) {
        return;
    }
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tick.tick().await;
        loop {
            tick.tick().await;
            let live = &*LIVE;
            let (p50, p99) = match lock(&live.latency).as_mut() {
                Some(h) => {
                    let v = (!h.is_empty()).then(|| {
                        (
                            h.value_at_quantile(0.5) as f64 / 1e3,
                            h.value_at_quantile(0.99) as f64 / 1e3,
                        )
                    });
                    h.reset();
                    v.unzip()
                }
                None => (None, None),
            };
            let point = Point {
                t: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                local: live.local.swap(0, Ordering::Relaxed),
                external: live.external.swap(0, Ordering::Relaxed),
                cache: live.cache.swap(0, Ordering::Relaxed),
                errors: live.errors.swap(0, Ordering::Relaxed),
                p50_ms: p50,
                p99_ms: p99,
            };
            let mut s = lock(&live.series);
            if s.len() == HISTORY {
                s.pop_front();
            }
            s.push_back(point);
        }
    });
}

/// `GET /api/v1/dashboard`: everything the page shows.
pub async fn state(app: &App) -> Value {
    let live = &*LIVE;
    let series: Vec<Point> = lock(&live.series).iter().cloned().collect();
    let totals: Vec<u64> = live
        .totals
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .collect();
    let fleet = app.fleet.as_ref().map(|f| f.snapshot());
    let cache = match &app.cache {
        Some(c) => {
            let s = c.stats().await;
            json!({"enabled": true, "hits_exact": s.hits_exact, "hits_semantic": s.hits_semantic,
                   "misses": s.misses, "bypasses": s.bypasses, "fail_open": s.fail_open,
                   "entries": s.memory.entries + s.store.map_or(0, |st| st.entries)})
        }
        None => json!({"enabled": false}),
    };
    let batches = match &app.batches {
        Some(b) => {
            let store = b.store.clone();
            let items = crate::batch::blocking(move || store.item_totals())
                .await
                .ok();
            let runner = b.runner.borrow().clone();
            json!({"enabled": true, "runner": runner,
                   "items": items.map(|c| json!({"pending": c.pending(), "succeeded": c.succeeded,
                        "failed": c.failed, "placed_local": c.placed_local,
                        "placed_external": c.placed_external, "from_cache": c.from_cache}))})
        }
        None => json!({"enabled": false}),
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(app.started_at),
        "series": series,
        "totals": {"local": totals[0], "external": totals[1], "cache": totals[2], "errors": totals[3]},
        "spend_usd": spend_usd(),
        "saved_usd": LIVE.saved_nano_usd.load(Ordering::Relaxed) as f64 / 1e9,
        // Today's, from the access layer; an open gateway has one tenant.
        "tenants": match &app.access {
            Some(access) => access
                .top_tenants(10)
                .into_iter()
                .map(|(tenant, requests, spend)| json!({"tenant": tenant, "requests": requests, "spend_usd": spend}))
                .collect::<Vec<_>>(),
            None => vec![json!({"tenant": crate::access::DEFAULT_TENANT, "spend_usd": spend_usd(),
                                "requests": totals.iter().sum::<u64>()})],
        },
        "fleet": fleet,
        "cache": cache,
        "batches": batches,
    })
}

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");
