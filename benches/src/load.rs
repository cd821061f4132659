//! HTTP/1.1 keep-alive load generation.
//!
//! Open loop: requests are scheduled at a fixed rate, spread over a pool of
//! connections, each connection carrying one request at a time. Latency is
//! measured from the actual send: tokio's timer has 1 ms granularity, so
//! measuring from the scheduled time would add up to 1 ms of the load
//! generator's own timer lag to every sample. Coordinated omission is still
//! accounted for: a send that starts more than one interval late (its
//! connection was still busy, i.e. the server stalled) is counted in `late`
//! and charged from its scheduled time. Closed loop: each connection sends
//! back to back, for maximum throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: std::net::SocketAddr,
    pub path: String,
    pub body: Bytes,
    pub bearer: Option<String>,
}

/// Results of one run.
#[derive(Debug)]
pub struct Report {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Open loop: sends that started over one interval late.
    pub late: u64,
    pub elapsed: Duration,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// `x-switchyard-overhead-ms` values, in microseconds, when present.
    pub overhead: Histogram<u64>,
}

impl Report {
    /// Fold another run of the same target into this one.
    pub fn merge(&mut self, other: Report) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.errors += other.errors;
        self.late += other.late;
        self.elapsed += other.elapsed;
        let _ = self.latency.add(&other.latency);
        let _ = self.overhead.add(&other.overhead);
    }

    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    pub fn pct_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e3
    }
    pub fn overhead_pct_ms(&self, q: f64) -> Option<f64> {
        (!self.overhead.is_empty()).then(|| self.overhead.value_at_quantile(q) as f64 / 1e3)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// One HTTP/1.1 connection's request handle.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens a keep-alive HTTP/1.1 connection (no Nagle delay).
pub async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Send one request; returns the overhead header in µs if present.
async fn one(sender: &mut Sender, t: &Target) -> anyhow::Result<Option<u64>> {
    let mut req = Request::post(t.path.as_str())
        .header("host", t.addr.to_string())
        .header("content-type", "application/json");
    if let Some(b) = &t.bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let resp = sender
        .send_request(req.body(Full::new(t.body.clone()))?)
        .await?;
    let status = resp.status();
    let overhead = resp
        .headers()
        .get("x-switchyard-overhead-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| (ms * 1e3) as u64);
    resp.into_body().collect().await?;
    anyhow::ensure!(status.is_success(), "HTTP {status}");
    Ok(overhead)
}

#[derive(Default)]
struct Partial {
    sent: u64,
    ok: u64,
    errors: u64,
    late: u64,
    latency: Option<Histogram<u64>>,
    overhead: Option<Histogram<u64>>,
}

async fn worker(
    t: Arc<Target>,
    start: Instant,
    end: Instant,
    schedule: Option<(Duration, Duration)>,
) -> Partial {
    let mut p = Partial {
        latency: Some(histogram()),
        overhead: Some(histogram()),
        ..Partial::default()
    };
    let mut sender = match connect(t.addr).await {
        Ok(s) => s,
        Err(_) => return p,
    };
    let mut k: u32 = 0;
    loop {
        let scheduled = match schedule {
            Some((offset, interval)) => {
                let at = start + offset + interval * k;
                k += 1;
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let now = Instant::now();
                if now > at + interval {
                    p.late += 1;
                    at
                } else {
                    now
                }
            }
            None => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
        };
        p.sent += 1;
        if sender.ready().await.is_err() {
            match connect(t.addr).await {
                Ok(s) => sender = s,
                Err(_) => {
                    p.errors += 1;
                    continue;
                }
            }
        }
        match one(&mut sender, &t).await {
            Ok(overhead) => {
                p.ok += 1;
                let us = scheduled.elapsed().as_micros() as u64;
                if let Some(h) = p.latency.as_mut() {
                    let _ = h.record(us.max(1));
                }
                if let (Some(o), Some(h)) = (overhead, p.overhead.as_mut()) {
                    let _ = h.record(o.max(1));
                }
            }
            Err(_) => p.errors += 1,
        }
    }
    p
}

/// Run for `duration` on `connections` connections; at `rate` requests per
/// second (open loop) or as fast as possible (closed loop) when `None`.
pub async fn run(t: Target, connections: usize, rate: Option<f64>, duration: Duration) -> Report {
    let t = Arc::new(t);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + duration;
    let handles: Vec<_> = (0..connections)
        .map(|i| {
            let schedule = rate.map(|r| {
                let interval = Duration::from_secs_f64(connections as f64 / r);
                (interval.mul_f64(i as f64 / connections as f64), interval)
            });
            tokio::spawn(worker(t.clone(), start, end, schedule))
        })
        .collect();
    let mut report = Report {
        sent: 0,
        ok: 0,
        errors: 0,
        late: 0,
        elapsed: duration,
        latency: histogram(),
        overhead: histogram(),
    };
    for h in handles {
        if let Ok(p) = h.await {
            report.sent += p.sent;
            report.ok += p.ok;
            report.errors += p.errors;
            report.late += p.late;
            if let Some(l) = p.latency {
                let _ = report.latency.add(l);
            }
            if let Some(o) = p.overhead {
                let _ = report.overhead.add(o);
            }
        }
    }
    report.elapsed = start.elapsed().max(duration);
    report
}
