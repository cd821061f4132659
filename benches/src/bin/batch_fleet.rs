//! A batch with a deadline on the SIMULATED fleet, through the real
//! release gateway: four simulated H100 engines (in this process,
//! `switchyard_fakes::sim`) serving `llama`, and a fake external provider
//! for overflow.
//!
//! 1. Interactive load alone: Poisson arrivals of streamed chat requests
//!    for `--seconds`; time to first token (first content chunk) of each.
//! 2. The same load again while an `--items` batch runs whose completion
//!    window (`--window`) local capacity alone would miss.
//!
//! Reports interactive TTFT p50/p99 without and with the batch (and their
//! ratio), when the batch finished against its deadline, how many items ran
//! locally and externally, and the fewest external items that could have
//! made the deadline given the local rate measured in the same run.
//!
//! ```sh
//! cargo build --release -p switchyard-gateway -p switchyard-benches
//! target/release/batch_fleet --items 10000 --window 60 --seconds 60
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its report")]

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rand_distr::{Distribution, Exp};
use serde_json::{Value, json};
use switchyard_benches::procs::{Proc, start_switchyard};
use switchyard_benches::write_results;
use switchyard_fakes::sim::{SimConfig, SimEngine};
use switchyard_fakes::{FakeConfig, FakeUpstream};
use switchyard_scheduler::profile::GpuProfile;

#[derive(Parser)]
struct Args {
    /// Batch items.
    #[arg(long, default_value_t = 10_000)]
    items: usize,
    /// The batch's completion window, seconds.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Seconds of interactive load in each phase.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Interactive requests per second.
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
    /// Simulated engines (H100).
    #[arg(long, default_value_t = 4)]
    engines: usize,
    /// Permits per engine.
    #[arg(long, default_value_t = 16)]
    permits: u32,
    /// Output tokens of each batch item.
    #[arg(long, default_value_t = 64)]
    batch_tokens: u32,
    #[arg(long, default_value = "target/release/switchyard")]
    bin: String,
    #[arg(long, default_value = "bench-results/batch_fleet.json")]
    out: String,
}

fn start(
    args: &Args,
    dir: &std::path::Path,
    sims: &[SimEngine],
    ext: &str,
) -> anyhow::Result<Proc> {
    let mut config = format!(
        "[scheduler]\nttft_slo_ms = 2000\ntelemetry_interval_ms = 200\n\n\
         [batch]\nenabled = true\ndir = \"{}\"\nconcurrency = 128\n\n\
         [providers.ext]\ntype = \"openai_compat\"\nbase_url = \"{ext}/v1\"\napi_key = {{ env = \"BENCH_KEY\" }}\n",
        dir.join("batch").display()
    );
    for (i, s) in sims.iter().enumerate() {
        config.push_str(&format!(
            "\n[providers.sim-{i}]\ntype = \"openai_compat\"\nbase_url = \"{}/v1\"\nlocal = {{ gpu = \"h100\", gpu_hour_usd = 2.49, permits = {}, telemetry = \"sim\" }}\n",
            s.url(),
            args.permits
        ));
    }
    config.push_str("\n[[model_groups]]\nname = \"llama\"\n");
    for i in 0..sims.len() {
        config.push_str(&format!(
            "[[model_groups.deployments]]\nprovider = \"sim-{i}\"\nmodel = \"llama\"\n"
        ));
    }
    config.push_str(
        "[[model_groups.deployments]]\nprovider = \"ext\"\nmodel = \"fake-mini\"\nprice = { input_per_million = 0.15, output_per_million = 0.6 }\n",
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config)?;
    let path = path.to_string_lossy().into_owned();
    start_switchyard(
        &args.bin,
        &["serve", "--listen", "127.0.0.1:0", "--config", &path],
        &[
            ("BENCH_KEY", "sk-bench"),
            ("RUST_LOG", "warn,switchyard_gateway::server=info"),
        ],
        None,
    )
    .with_context(|| format!("cannot start {}", args.bin))
}

/// Seconds to the first content chunk of one streamed request.
async fn one(client: &reqwest::Client, url: &str, i: u64) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    let resp = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "llama", "stream": true, "max_tokens": 32, "messages": [
            {"role": "user", "content": format!("Interactive question {i}: {}", "please answer briefly ".repeat(20))}]}))
        .send()
        .await?;
    let placement = resp
        .headers()
        .get("x-switchyard-placement")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    if !resp.status().is_success() {
        bail!("status {}", resp.status());
    }
    let mut body = resp.bytes_stream();
    let mut ttft = None;
    while let Some(chunk) = body.next().await {
        if ttft.is_none() && chunk?.windows(9).any(|w| w == b"\"content\"") {
            ttft = Some(t.elapsed().as_secs_f64());
        }
    }
    Ok((ttft.context("no content chunk")?, placement))
}

struct Phase {
    ttft: Histogram<u64>,
    external: u64,
    errors: u64,
}

/// Poisson interactive load for `seconds`.
async fn interactive(url: &str, rate: f64, seconds: u64, seed: u64) -> anyhow::Result<Phase> {
    use rand::SeedableRng;
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let gap = Exp::new(rate)?;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs_f64(gap.sample(&mut rng))).await;
        let (client, url) = (client.clone(), url.to_owned());
        i += 1;
        tasks.push(tokio::spawn(async move { one(&client, &url, i).await }));
    }
    let mut phase = Phase {
        ttft: Histogram::new(3)?,
        external: 0,
        errors: 0,
    };
    for t in tasks {
        match t.await? {
            Ok((ttft, placement)) => {
                phase.ttft.record((ttft * 1e6) as u64)?;
                phase.external += u64::from(placement.starts_with("external"));
            }
            Err(_) => phase.errors += 1,
        }
    }
    Ok(phase)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut sims = Vec::new();
    for i in 0..args.engines {
        sims.push(
            SimEngine::start(
                "127.0.0.1:0".parse()?,
                SimConfig {
                    name: format!("sim-h100-{i}"),
                    profile: GpuProfile::named("h100").context("h100 profile")?,
                    models: vec!["llama".into()],
                    speed: 1.0,
                    default_output_tokens: 64,
                    gpu_index: i as u32,
                    host_kv_tokens: 0,
                },
            )
            .await?,
        );
    }
    let ext = FakeUpstream::start(
        "127.0.0.1:0".parse()?,
        FakeConfig {
            record_requests: false,
            ..FakeConfig::default()
        },
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let gw = start(&args, dir.path(), &sims, &ext.url())?;
    let url = format!("http://{}", gw.addr);
    tokio::time::sleep(Duration::from_secs(1)).await;

    println!(
        "phase 1: interactive only, {} s at {}/s",
        args.seconds, args.rate
    );
    let alone = interactive(&url, args.rate, args.seconds, 1).await?;

    // The batch, uploaded the OpenAI way.
    let client = reqwest::Client::new();
    let mut jsonl = String::new();
    for i in 0..args.items {
        jsonl.push_str(
            &json!({"custom_id": format!("b{i}"), "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "llama", "max_tokens": args.batch_tokens, "messages": [
                {"role": "user", "content": format!("Batch document {i}: summarise it.")}]}})
            .to_string(),
        );
        jsonl.push('\n');
    }
    let input = dir.path().join("batch.jsonl");
    std::fs::write(&input, jsonl)?;
    let out = Command::new("curl")
        .args(["-sS", "-F", "purpose=batch", "-F"])
        .arg(format!("file=@{}", input.display()))
        .arg(format!("{url}/v1/files"))
        .output()?;
    let file: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    let batch: Value = client
        .post(format!("{url}/v1/batches"))
        .json(
            &json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": format!("{}s", args.window)}),
        )
        .send()
        .await?
        .json()
        .await?;
    let id = batch["id"].as_str().context("batch id")?.to_owned();
    let created = batch["created_at"].as_i64().unwrap_or(0);
    println!(
        "phase 2: the same load with a {}-item batch, {} s window",
        args.items, args.window
    );
    let poll = {
        let (client, url, id) = (client.clone(), url.clone(), id.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let b: Value = match client.get(format!("{url}/v1/batches/{id}")).send().await {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => continue,
                };
                if b["status"] != "in_progress" {
                    return b;
                }
            }
        })
    };
    let with = interactive(&url, args.rate, args.seconds, 1).await?;
    let done = poll.await?;
    let sy = &done["switchyard"];
    let (local, external) = (
        sy["placed_local"].as_u64().unwrap_or(0),
        sy["placed_external"].as_u64().unwrap_or(0),
    );
    let finished_s = done["completed_at"].as_i64().map(|t| t - created);
    // The local fleet ran `local` items in the time it had: its rate. The
    // fewest external items that make the deadline at that rate.
    let local_s = finished_s.unwrap_or(args.window as i64).max(1) as f64;
    let local_rate = local as f64 / local_s;
    let least_external = (args.items as f64 - local_rate * args.window as f64).max(0.0);
    let report = json!({
        "items": args.items, "window_s": args.window, "engines": args.engines,
        "permits": args.permits, "rate": args.rate, "seconds": args.seconds,
        "interactive_alone": {"p50_ms": ms(&alone.ttft, 0.5), "p99_ms": ms(&alone.ttft, 0.99),
                              "n": alone.ttft.len(), "external": alone.external, "errors": alone.errors},
        "interactive_with_batch": {"p50_ms": ms(&with.ttft, 0.5), "p99_ms": ms(&with.ttft, 0.99),
                                   "n": with.ttft.len(), "external": with.external, "errors": with.errors},
        "p99_ratio": ms(&with.ttft, 0.99) / ms(&alone.ttft, 0.99),
        "batch": {"status": done["status"], "finished_after_s": finished_s,
                  "placed_local": local, "placed_external": external,
                  "local_rate_per_s": local_rate, "least_external_at_that_rate": least_external,
                  "request_counts": done["request_counts"]},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_results(&args.out, &report)
}
