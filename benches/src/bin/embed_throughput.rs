//! Embedding speed: Switchyard's Candle embedder next to sentence-transformers
//! (PyTorch, CPU) on the same machine, same texts, same run.
//!
//! ```text
//! ./models/fetch.sh
//! python3 -m venv .venv-ref && .venv-ref/bin/pip install sentence-transformers
//! cargo build --release -p switchyard-benches
//! target/release/embed_throughput --python .venv-ref/bin/python
//! ```
//!
//! Texts per second at batch 1, 8, 32 and 128 for short (≤ 16 tokens) and
//! medium (~64 tokens) texts, single-text latency p50/p99, and the RSS the
//! loaded model adds.

#![allow(clippy::print_stdout, reason = "a benchmark prints its report")]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use switchyard_embedder::{
    Batcher, BatcherConfig, CandleEmbedder, DeviceSpec, Embedder, ModelDir, Precision,
};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    model: String,
    /// Python with sentence-transformers; omitted: Switchyard only (said so).
    #[arg(long)]
    python: Option<String>,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    #[arg(long, default_value_t = 300)]
    latency_samples: usize,
    #[arg(long, default_value = "bench-results/embed_throughput.json")]
    out: String,
    /// `cpu` or `cuda:N` (a build with `--features switchyard-embedder/cuda`);
    /// sentence-transformers runs on the same device.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// `f32`, `bf16` (BF16 weights; on the CPU with F32 arithmetic, the
    /// gateway's CPU default), or `f16` on a GPU (sentence-transformers
    /// stays F32).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Idle time before each single-prompt sample (ms): a gateway's embeds
    /// come between requests, after the embedding threads went to sleep.
    #[arg(long, default_value_t = 0.0)]
    gap_ms: f64,
}

const BATCHES: [usize; 4] = [1, 8, 32, 128];

/// Single-text p50 latencies (ms): the embedder called directly, and the
/// same texts through a [`Batcher`] from a task on a two-worker Tokio
/// runtime, as the gateway's cache lookup embeds.
struct Handoff {
    direct: f64,
    batcher: f64,
}

/// Alternates direct and batched calls (the same prompts, the shape of
/// `cache_latency`'s paraphrases) so both see the same machine.
fn handoff(model: Arc<CandleEmbedder>, samples: usize, gap_ms: f64) -> anyhow::Result<Handoff> {
    let gap = std::time::Duration::from_secs_f64(gap_ms.max(0.0) / 1e3);
    let prompts: Vec<String> = [
        "reverse a list",
        "read a file",
        "sort a dictionary by value",
    ]
    .iter()
    .flat_map(|t| {
        ["python", "rust", "go"]
            .iter()
            .map(move |l| format!("how do i {t} in {l} please"))
    })
    .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let batcher = Batcher::start(model.clone(), BatcherConfig::default())?;
    let (mut direct, mut batched) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let text = prompts[i % prompts.len()].clone();
        std::thread::sleep(gap);
        let t = Instant::now();
        model.embed(std::slice::from_ref(&text))?;
        direct.push(t.elapsed().as_secs_f64() * 1e3);
        let b = batcher.clone();
        std::thread::sleep(gap);
        let ms = runtime.block_on(async move {
            tokio::spawn(async move {
                let t = Instant::now();
                b.embed(vec![text])
                    .await
                    .map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .await
        })??;
        batched.push(ms);
    }
    let p50 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(Handoff {
        direct: p50(direct),
        batcher: p50(batched),
    })
}

fn short_texts() -> Vec<String> {
    [
        "How do I reset my password?",
        "What is the capital of France?",
        "convert 10 km to miles",
        "I love this movie.",
        "Where is the nearest train station?",
        "Order status for #4411",
        "best pizza near me",
        "Translate good morning to Spanish",
        "Is it going to rain today?",
        "Cancel my subscription please",
        "Explain TCP in one line",
        "Who wrote Hamlet?",
        "How tall is Mount Everest?",
        "Summarize this email",
        "Fix the login bug",
        "GPU vs CPU inference",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn medium_texts() -> Vec<String> {
    let base = "Our platform team runs a fleet of inference servers in two regions and wants to cut the \
external API bill without hurting latency for interactive users, so we are evaluating a gateway";
    (0..16)
        .map(|i| format!("{base} (variant {i}) that routes by cost and caches answers."))
        .collect()
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let texts = json!({"short": short_texts(), "medium": medium_texts()});
    let rss_before = rss_bytes();
    let dir = ModelDir::open(&args.model)?;
    let device: DeviceSpec = args.device.parse().map_err(anyhow::Error::msg)?;
    let precision: Precision = args.precision.parse().map_err(anyhow::Error::msg)?;
    let model = CandleEmbedder::load(&dir, device, precision)?;
    model.embed(&vec!["warm up".to_owned(); 8])?;
    let model_rss = rss_bytes().saturating_sub(rss_before);
    let token_len = |t: &[String]| {
        let seqs = model.tokenize(t).unwrap_or_default();
        seqs.iter().map(Vec::len).max().unwrap_or(0)
    };
    println!(
        "tokens per text (with [CLS]/[SEP]), longest: short {}, medium {}",
        token_len(&short_texts()),
        token_len(&medium_texts())
    );

    let mut ours = serde_json::Map::new();
    for (kind, list) in [("short", short_texts()), ("medium", medium_texts())] {
        for batch in BATCHES {
            let chunk: Vec<String> = list.iter().cycle().take(batch).cloned().collect();
            let (mut n, start) = (0usize, Instant::now());
            while start.elapsed() < Duration::from_secs_f64(args.seconds) {
                model.embed(&chunk)?;
                n += batch;
            }
            ours.insert(
                format!("{kind}/{batch}"),
                json!(n as f64 / start.elapsed().as_secs_f64()),
            );
        }
    }
    let mut lat: Vec<f64> = (0..args.latency_samples)
        .map(|i| {
            let t = Instant::now();
            let _ = model.embed(&[short_texts()[i % 16].clone()]);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (lat[lat.len() / 2], lat[lat.len() * 99 / 100]);
    let handoff = handoff(Arc::new(model), args.latency_samples, args.gap_ms)?;

    let reference: Option<Value> = match &args.python {
        Some(py) => {
            let plan = json!({"model_dir": args.model, "device": args.device, "texts": texts, "batches": BATCHES,
                              "seconds": args.seconds, "latency_samples": args.latency_samples});
            let mut child = Command::new(py)
                .arg("benches/embed_reference.py")
                .env("HF_HUB_OFFLINE", "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            child
                .stdin
                .take()
                .map(|mut s| s.write_all(plan.to_string().as_bytes()))
                .transpose()?;
            let out = child.wait_with_output()?;
            anyhow::ensure!(
                out.status.success(),
                "the sentence-transformers side failed"
            );
            Some(serde_json::from_slice(&out.stdout)?)
        }
        None => {
            println!("sentence-transformers not measured: pass --python PATH");
            None
        }
    };

    println!(
        "\n| texts | batch | Switchyard (Candle) texts/s | sentence-transformers texts/s | ratio |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (key, v) in &ours {
        let (kind, batch) = key.split_once('/').unwrap_or((key, ""));
        let ref_v = reference
            .as_ref()
            .and_then(|r| r["throughput"][key].as_f64());
        let ours_v = v.as_f64().unwrap_or(0.0);
        println!(
            "| {kind} | {batch} | {ours_v:.0} | {} | {} |",
            ref_v.map(|r| format!("{r:.0}")).unwrap_or_default(),
            ref_v
                .map(|r| format!("{:.2}×", ours_v / r))
                .unwrap_or_default()
        );
    }
    let ref_lat = reference.as_ref().map(|r| {
        (
            r["latency_ms"]["p50"].as_f64(),
            r["latency_ms"]["p99"].as_f64(),
        )
    });
    println!(
        "\nsingle short text latency: Switchyard p50 {p50:.2} ms, p99 {p99:.2} ms{}",
        match ref_lat {
            Some((Some(a), Some(b))) =>
                format!("; sentence-transformers p50 {a:.2} ms, p99 {b:.2} ms"),
            _ => String::new(),
        }
    );
    println!(
        "single cache-style prompt (the gateway's semantic lookups), p50: direct {:.2} ms, \
         through the batcher from an async task {:.2} ms (+{:.3} ms)",
        handoff.direct,
        handoff.batcher,
        handoff.batcher - handoff.direct
    );
    println!(
        "RSS added by the loaded model: {:.0} MB",
        model_rss as f64 / 1e6
    );
    let results = json!({"switchyard": {"throughput": ours, "latency_ms": {"p50": p50, "p99": p99},
                         "model_rss_bytes": model_rss,
                         "single_prompt_p50_ms": {"direct": handoff.direct, "batcher": handoff.batcher}},
                         "sentence_transformers": reference});
    switchyard_benches::write_results(&args.out, &results)?;
    Ok(())
}
