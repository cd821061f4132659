//! What metrics cost (issue #7's targets), in one run on this machine:
//!
//! 1. **Recording.** Two release gateways in front of the same fast fake
//!    upstream, identical but for `[metrics] enabled`, measured in
//!    alternating rounds: maximum throughput (closed loop) and latency at a
//!    fixed rate (open loop), with the gateway's own overhead header.
//!    Target: recording adds ≤ 5%.
//! 2. **Scraping.** A gateway with 64 local backends on 64 SIMULATED GPUs
//!    (in this process, `switchyard_fakes::sim`), under streamed load:
//!    `GET /metrics` timed back to back, next to `GET /api/v1/fleet` (the
//!    same state as JSON) in the same run. Target: ≤ 20 ms.
//!
//! ```text
//! cargo build --release -p switchyard-gateway -p switchyard-benches
//! target/release/metrics_cost
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its report")]

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use switchyard_benches::compare::{MODEL, PlanArgs, Variant, compare, gateway, table};
use switchyard_fakes::sim::{SimConfig, SimEngine};
use switchyard_scheduler::profile::GpuProfile;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "target/release/switchyard")]
    bin: String,
    /// The recording comparison.
    #[command(flatten)]
    load: PlanArgs,
    /// Simulated GPUs (one backend each) for the scrape measurement.
    #[arg(long, default_value_t = 64)]
    gpus: usize,
    /// Scrapes to time.
    #[arg(long, default_value_t = 200)]
    scrapes: usize,
    /// Streamed requests per second meanwhile.
    #[arg(long, default_value_t = 200.0)]
    load_rps: f64,
    #[arg(long, default_value = "bench-results/metrics_cost.json")]
    out: String,
}

async fn recording(args: &Args, dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    // Metrics and the request log line (what ships by default); the
    // request log line alone (issue #2's overhead benchmark); neither.
    let variant = |name: &str, metrics: bool, log: &str| Variant {
        name: name.into(),
        config: format!("[metrics]\nenabled = {metrics}\n"),
        log: log.into(),
        bearer: "sk-bench".into(),
        env: Vec::new(),
        key: None,
    };
    let variants = [
        variant("metrics + request log", true, "info"),
        variant("request log only (#2's setup)", false, "info"),
        variant("neither", false, "warn,switchyard_gateway::server=info"),
    ];
    let plan = args.load.plan();
    let results = compare(&args.bin, dir, &variants, plan).await?;
    println!(
        "\n## Recording: {} rounds, variants interleaved\n",
        plan.rounds
    );
    let rows = table(&results, plan);
    let metrics_ratio = results[0].closed.throughput() / results[1].closed.throughput();
    let both_ratio = results[0].closed.throughput() / results[2].closed.throughput();
    println!(
        "\nthroughput with metrics / #2's setup: {metrics_ratio:.3}; with metrics and log / neither: {both_ratio:.3}"
    );
    Ok(
        json!({"variants": rows, "metrics_over_log_only": metrics_ratio, "both_over_neither": both_ratio}),
    )
}

async fn time_get(
    client: &reqwest::Client,
    url: &str,
    n: usize,
) -> anyhow::Result<(Histogram<u64>, usize)> {
    let mut h = Histogram::<u64>::new(3)?;
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let body = client
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        h.record(t.elapsed().as_micros() as u64)?;
        bytes = body.len();
    }
    Ok((h, bytes))
}

async fn scraping(args: &Args, dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let mut sims = Vec::new();
    for i in 0..args.gpus {
        sims.push(
            SimEngine::start(
                "127.0.0.1:0".parse()?,
                SimConfig {
                    name: format!("sim-h100-{i}"),
                    profile: GpuProfile::named("h100").context("h100 profile")?,
                    models: vec![MODEL.into()],
                    speed: 1.0,
                    default_output_tokens: 16,
                    gpu_index: i as u32,
                    host_kv_tokens: 0,
                },
            )
            .await?,
        );
    }
    let mut config = String::from("[scheduler]\ntelemetry_interval_ms = 500\n");
    for (i, s) in sims.iter().enumerate() {
        config.push_str(&format!(
            "\n[providers.sim-{i}]\ntype = \"openai_compat\"\nbase_url = \"{}/v1\"\nlocal = {{ gpu = \"h100\", gpu_hour_usd = 2.49, permits = 16, telemetry = \"sim\" }}\n",
            s.url()
        ));
    }
    config.push_str(&format!("\n[[model_groups]]\nname = \"{MODEL}\"\n"));
    for i in 0..sims.len() {
        config.push_str(&format!(
            "[[model_groups.deployments]]\nprovider = \"sim-{i}\"\nmodel = \"{MODEL}\"\n"
        ));
    }
    let gw = gateway(
        &args.bin,
        dir,
        ("fleet", &config),
        "warn,switchyard_gateway::server=info",
        &[],
    )?;
    let url = format!("http://{}", gw.addr);
    // Streamed load in the background for the whole measurement.
    let load_url = url.clone();
    let rate = args.load_rps;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut n = 0u64;
        let gap = Duration::from_secs_f64(1.0 / rate);
        let mut tasks = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let (c, u) = (client.clone(), load_url.clone());
            tasks.push(tokio::spawn(async move {
                let r = c
                    .post(format!("{u}/v1/chat/completions"))
                    .json(&json!({"model": MODEL, "stream": true, "max_tokens": 16,
                                  "messages": [{"role": "user", "content": format!("scrape load {n}")}]}))
                    .send()
                    .await;
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                }
            }));
            tokio::time::sleep(gap).await;
        }
        for t in tasks {
            let _ = t.await;
        }
        n
    });
    // Let telemetry and ledgers fill.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let client = reqwest::Client::new();
    time_get(&client, &format!("{url}/metrics"), 5).await?;
    let (metrics, metrics_bytes) =
        time_get(&client, &format!("{url}/metrics"), args.scrapes).await?;
    let (fleet, fleet_bytes) =
        time_get(&client, &format!("{url}/api/v1/fleet"), args.scrapes).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await?;
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    println!(
        "\n## Scraping: {} SIMULATED GPUs / backends, {} streamed req/s ({sent} sent)\n",
        args.gpus, args.load_rps
    );
    println!("| endpoint | p50 ms | p99 ms | max ms | bytes |");
    println!("|---|---:|---:|---:|---:|");
    for (name, h, b) in [
        ("/metrics", &metrics, metrics_bytes),
        ("/api/v1/fleet", &fleet, fleet_bytes),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {b} |",
            ms(h, 0.5),
            ms(h, 0.99),
            ms(h, 1.0)
        );
    }
    println!("\n/metrics series: {series}");
    Ok(json!({
        "gpus": args.gpus, "load_rps": args.load_rps, "series": series,
        "metrics_p50_ms": ms(&metrics, 0.5), "metrics_p99_ms": ms(&metrics, 0.99),
        "metrics_max_ms": ms(&metrics, 1.0), "metrics_bytes": metrics_bytes,
        "fleet_p50_ms": ms(&fleet, 0.5), "fleet_p99_ms": ms(&fleet, 0.99), "fleet_bytes": fleet_bytes,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let recording = recording(&args, dir.path()).await?;
    let scraping = scraping(&args, dir.path()).await?;
    switchyard_benches::write_results(
        &args.out,
        &json!({"recording": recording, "scraping": scraping}),
    )?;
    println!("results written to {}", args.out);
    Ok(())
}
