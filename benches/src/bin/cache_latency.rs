//! The response cache through the HTTP API, on the real binary with the
//! real embedding model and an embedded store already holding `--fill`
//! entries (default 100,000) in the benchmark's own scope (the worst case:
//! the scope filter excludes none of them).
//!
//! ```text
//! cargo build --release -p switchyard-gateway -p switchyard-benches
//! target/release/cache_latency --fill 100000
//! ```
//!
//! One connection, one request at a time, timed at the client from send to
//! the last byte of the response, non-streaming:
//! - **exact hit**: a request seen before;
//! - **semantic hit**: a paraphrase of a stored request (embedding, search,
//!   verification); every answer's `x-switchyard-cache` is checked;
//! - **miss** against **uncached**: new prompts with the cache on, against
//!   the same prompts with `x-switchyard-cache: no-store` (the request path
//!   without the cache), alternating rounds in the same run. A miss embeds,
//!   searches, verifies and then stores the answer in the background.
//! - **upstream direct**: the fake upstream without the gateway, for scale.

#![allow(clippy::print_stdout, reason = "a benchmark prints its report")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use serde_json::{Map, Value, json};
use switchyard_benches::load::{Sender, connect};
use switchyard_benches::procs::{Proc, start_switchyard};
use switchyard_embedder::{CandleEmbedder, DeviceSpec, Embedder, ModelDir, Precision};
use switchyard_gateway::api::types::ChatCompletionRequest;
use switchyard_gateway::cache::key::chat_key;
use switchyard_gateway::cache::{DEFAULT_TENANT, EdgeStore, Entry, VectorStore};
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "target/release/switchyard")]
    bin: String,
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    model: std::path::PathBuf,
    /// Entries put in the store before the gateway starts.
    #[arg(long, default_value_t = 100_000)]
    fill: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// Rounds the miss/uncached comparison alternates in.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    #[arg(long, default_value = "bench-results/cache_latency.json")]
    out: String,
    /// The embedding model's `precision` (`bf16`, the gateway's default on
    /// the CPU: BF16 weights, F32 arithmetic; or `f32`).
    #[arg(long, default_value = "bf16")]
    precision: String,
}

const MODEL: &str = "bench";
const MASTER: &str = "sk-bench-master";

const TASKS: &[&str] = &[
    "reverse a list",
    "read a file line by line",
    "sort a dictionary by value",
    "parse a JSON string",
    "make an HTTP request",
    "format a date",
    "remove duplicates from an array",
    "convert a string to an integer",
    "write a unit test",
    "connect to a database",
    "handle errors",
    "spawn a thread",
    "read environment variables",
    "split a string on whitespace",
    "generate a random number",
    "measure elapsed time",
    "serialize an object",
    "compress a file",
    "merge two maps",
    "check if a file exists",
];
const LANGS: &[&str] = &[
    "Python",
    "Rust",
    "Go",
    "Java",
    "JavaScript",
    "TypeScript",
    "C++",
    "Ruby",
    "Kotlin",
    "Swift",
];

fn chat(text: &str) -> Value {
    json!({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}]})
}

/// The store scope the gateway will compute for `chat(text)`.
fn scope() -> anyhow::Result<String> {
    let body = chat("x");
    let request: ChatCompletionRequest = serde_json::from_value(body.clone())?;
    let map = body.as_object().cloned().unwrap_or_default();
    Ok(chat_key(DEFAULT_TENANT, MODEL, &map, &request, 1.0)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .scope)
}

/// Fills the store at `dir` with `n` entries near real embeddings of
/// generated prompts, then builds its index, as a long-running gateway's
/// store would be.
async fn fill(dir: &std::path::Path, model: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let embedder = CandleEmbedder::load(&ModelDir::open(model)?, DeviceSpec::Cpu, Precision::F32)?;
    let texts: Vec<String> = TASKS
        .iter()
        .flat_map(|t| LANGS.iter().map(move |l| format!("How do I {t} in {l}?")))
        .chain((0..800).map(|i| format!("Write a short note about subject {i}")))
        .collect();
    let mut bases = Vec::new();
    for chunk in texts.chunks(32) {
        bases.extend(embedder.embed(chunk)?.vectors);
    }
    let dim = bases.first().map_or(384, Vec::len);
    let store = EdgeStore::open(dir, dim)?;
    let v = VectorStore::Edge(store.clone());
    let scope = scope()?;
    let noise = Normal::new(0.0f32, 0.5 / (dim as f32).sqrt())?;
    let mut rng = StdRng::seed_from_u64(1);
    let t = Instant::now();
    for start in (0..n).step_by(1_000) {
        let entries = (start..(start + 1_000).min(n))
            .map(|i| {
                let base = &bases[i % bases.len()];
                let mut vector: Vec<f32> =
                    base.iter().map(|a| a + noise.sample(&mut rng)).collect();
                let norm = vector.iter().map(|a| a * a).sum::<f32>().sqrt();
                vector.iter_mut().for_each(|a| *a /= norm);
                let mut data = Map::new();
                data.insert("prompt".into(), json!(format!("filler entry {i}")));
                data.insert("response".into(), json!("{}"));
                data.insert("exact".into(), json!(format!("filler-{i}")));
                Entry {
                    id: Uuid::from_u128(u128::MAX - i as u128),
                    scope: scope.clone(),
                    tenant: DEFAULT_TENANT.into(),
                    group: MODEL.into(),
                    vector,
                    expires_at: 4e9,
                    created_at: 1.0,
                    data,
                }
            })
            .collect();
        v.upsert(entries).await?;
    }
    let inserted = t.elapsed();
    let t = Instant::now();
    store.optimize()?;
    println!(
        "store filled: {n} entries in {:.1} s, indexed in {:.1} s",
        inserted.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Client {
    sender: Sender,
    addr: std::net::SocketAddr,
}

impl Client {
    async fn connect(p: &Proc) -> anyhow::Result<Self> {
        Ok(Self {
            sender: connect(p.addr).await?,
            addr: p.addr,
        })
    }

    /// Sends one chat request; returns its latency and `x-switchyard-cache`.
    async fn chat(&mut self, text: &str, no_store: bool) -> anyhow::Result<(Duration, String)> {
        let body = Bytes::from(chat(text).to_string());
        let mut req = hyper::Request::post("/v1/chat/completions")
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {MASTER}"));
        if no_store {
            req = req.header("x-switchyard-cache", "no-store");
        }
        let t = Instant::now();
        let resp = self.sender.send_request(req.body(Full::new(body))?).await?;
        let status = resp.status();
        let cache = resp
            .headers()
            .get("x-switchyard-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        resp.into_body().collect().await?;
        let elapsed = t.elapsed();
        anyhow::ensure!(status.is_success(), "HTTP {status}");
        Ok((elapsed, cache))
    }

    /// The gateway's `switchyard_cache_lookup_seconds` sums and counts by
    /// phase, from `/metrics`.
    async fn phases(&mut self) -> anyhow::Result<Phases> {
        let req = hyper::Request::get("/metrics")
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {MASTER}"))
            .body(Full::new(Bytes::new()))?;
        let resp = self.sender.send_request(req).await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "/metrics: HTTP {}",
            resp.status()
        );
        let text = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec())?;
        let mut phases = Phases::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("switchyard_cache_lookup_seconds_") else {
                continue;
            };
            let (series, value) = rest.rsplit_once(' ').unwrap_or((rest, ""));
            let value: f64 = value.parse().unwrap_or(0.0);
            for (i, phase) in PHASES.iter().enumerate() {
                if series == format!("sum{{phase=\"{phase}\"}}") {
                    phases.sum[i] = value;
                } else if series == format!("count{{phase=\"{phase}\"}}") {
                    phases.count[i] = value;
                }
            }
        }
        Ok(phases)
    }
}

const PHASES: [&str; 3] = ["embed", "search", "verify"];

/// Seconds spent and lookups counted, by phase of [`PHASES`].
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    sum: [f64; 3],
    count: [f64; 3],
}

impl Phases {
    /// Mean milliseconds per lookup of each phase between `before` and
    /// `self`.
    fn mean_ms_since(&self, before: &Self) -> [f64; 3] {
        std::array::from_fn(|i| {
            let n = self.count[i] - before.count[i];
            if n > 0.0 {
                (self.sum[i] - before.sum[i]) / n * 1e3
            } else {
                f64::NAN
            }
        })
    }
}

struct Measure {
    latency: Histogram<u64>,
    /// Answers with another cache status than expected: how many, and the
    /// slowest (ms), by status.
    unexpected: std::collections::BTreeMap<String, (u64, f64)>,
}

impl Measure {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            unexpected: Default::default(),
        })
    }
    fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1e3
    }
    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e3
    }
    fn json(&self) -> Value {
        json!({"n": self.latency.len(), "p50_ms": self.ms(0.5), "p90_ms": self.ms(0.9),
               "p99_ms": self.ms(0.99), "max_ms": self.max_ms(),
               "unexpected_cache_status": self.unexpected})
    }
    /// `0`, or e.g. `2 (miss: 2, slowest 25.1 ms)`.
    fn unexpected(&self) -> String {
        let n: u64 = self.unexpected.values().map(|(n, _)| n).sum();
        if n == 0 {
            return "0".into();
        }
        let by: Vec<String> = self
            .unexpected
            .iter()
            .map(|(status, (k, ms))| format!("{status}: {k}, slowest {ms:.1} ms"))
            .collect();
        format!("{n} ({})", by.join("; "))
    }
}

/// Sends `texts(i)` for i = 0, 1, … for `d`; each answer must carry
/// `expect` as its cache status.
async fn measure(
    c: &mut Client,
    m: &mut Measure,
    d: Duration,
    expect: &str,
    no_store: bool,
    mut texts: impl FnMut() -> String,
) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let (t, cache) = c.chat(&texts(), no_store).await?;
        m.latency.record((t.as_micros() as u64).max(1))?;
        if cache != expect {
            let seen = m.unexpected.entry(cache).or_default();
            seen.0 += 1;
            seen.1 = seen.1.max(t.as_secs_f64() * 1e3);
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let cache_dir = tmp.path().join("cache");
    let model = std::fs::canonicalize(&args.model)?;
    fill(&cache_dir, &model, args.fill).await?;

    let fake = start_switchyard(
        &args.bin,
        &["fake-upstream", "--listen", "127.0.0.1:0", "--no-record"],
        &[],
        None,
    )?;
    let config = tmp.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nmaster_key = {{ env = \"BENCH_MASTER_KEY\" }}\n\n\
             [cache]\nenabled = true\nembedding_model = \"minilm\"\ndir = {dir:?}\n\n\
             [[embedding_models]]\nname = \"minilm\"\npath = {model:?}\nprecision = {precision:?}\n\n\
             [providers.fake]\ntype = \"openai_compat\"\nbase_url = \"http://{addr}/v1\"\n\
             api_key = {{ env = \"BENCH_KEY\" }}\n\n\
             [[model_groups]]\nname = \"{MODEL}\"\n[[model_groups.deployments]]\n\
             provider = \"fake\"\nmodel = \"fake-model\"\n",
            dir = cache_dir.display().to_string(),
            model = model.display().to_string(),
            precision = args.precision,
            addr = fake.addr
        ),
    )?;
    let gw = start_switchyard(
        &args.bin,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            &config.to_string_lossy(),
        ],
        &[("BENCH_KEY", "sk-bench"), ("BENCH_MASTER_KEY", MASTER)],
        None,
    )?;
    let mut c = Client::connect(&gw).await?;
    let d = Duration::from_secs(args.duration);

    // Seed: every task/language prompt once (misses), then let the
    // background writes land.
    let seeds: Vec<String> = TASKS
        .iter()
        .flat_map(|t| LANGS.iter().map(move |l| format!("How do I {t} in {l}?")))
        .collect();
    // Every seed should miss and be stored; one that does not (a rare
    // run has shown one seed answered semantically ever after) is named.
    for s in &seeds {
        let (t, cache) = c.chat(s, false).await?;
        if cache != "miss" {
            println!(
                "seed {s:?} answered {cache:?} in {:.1} ms (expected \"miss\")",
                t.as_secs_f64() * 1e3
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paraphrase = |s: &str| format!("{} please", s.trim_end_matches('?').to_lowercase());
    // Warm-up.
    let mut warm = Measure::new()?;
    let mut k = 0usize;
    measure(
        &mut c,
        &mut warm,
        Duration::from_secs(2),
        "hit-semantic",
        false,
        || {
            k += 1;
            paraphrase(&seeds[k % seeds.len()])
        },
    )
    .await?;
    if !warm.unexpected.is_empty() {
        println!("warm-up: unexpected cache statuses {}", warm.unexpected());
    }

    let mut exact = Measure::new()?;
    let mut k = 0usize;
    measure(&mut c, &mut exact, d, "hit-exact", false, || {
        k += 1;
        seeds[k % seeds.len()].clone()
    })
    .await?;
    let mut semantic = Measure::new()?;
    let mut k = 0usize;
    let before = c.phases().await?;
    measure(&mut c, &mut semantic, d, "hit-semantic", false, || {
        k += 1;
        paraphrase(&seeds[k % seeds.len()])
    })
    .await?;
    let phase_ms = c.phases().await?.mean_ms_since(&before);

    // Misses against uncached, alternating; every prompt is new (a number
    // makes it so: the verifier refuses a changed number).
    let mut miss = Measure::new()?;
    let mut uncached = Measure::new()?;
    let round = d / args.rounds.max(1);
    let mut n = 0usize;
    let mut fresh = move || {
        n += 1;
        format!("How many hours are in {n} weeks and {} days?", n % 7)
    };
    // Only the misses look up (`no-store` bypasses the cache).
    let before = c.phases().await?;
    for _ in 0..args.rounds {
        measure(&mut c, &mut uncached, round, "bypass", true, &mut fresh).await?;
        measure(&mut c, &mut miss, round, "miss", false, &mut fresh).await?;
    }
    let miss_phase_ms = c.phases().await?.mean_ms_since(&before);

    // The upstream alone.
    let mut direct = Measure::new()?;
    {
        let mut dc = Client::connect(&fake).await?;
        measure(
            &mut dc,
            &mut direct,
            Duration::from_secs(3),
            "",
            false,
            || "hello".to_owned(),
        )
        .await?;
    }
    let rss = gw.rss_bytes().unwrap_or(0) as f64 / 1e6;

    println!("\n| path | requests | p50 ms | p90 ms | p99 ms | max ms | unexpected cache status |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, m) in [
        ("hit-exact", &exact),
        ("hit-semantic", &semantic),
        ("miss", &miss),
        ("uncached (no-store)", &uncached),
        ("upstream direct", &direct),
    ] {
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.1} | {} |",
            m.latency.len(),
            m.ms(0.5),
            m.ms(0.9),
            m.ms(0.99),
            m.max_ms(),
            m.unexpected()
        );
    }
    let added = miss.ms(0.5) - uncached.ms(0.5);
    println!("\na miss adds {added:.3} ms at p50 to an uncached request; gateway RSS {rss:.0} MB");
    let [embed, search, verify] = phase_ms;
    println!(
        "semantic hits, mean per lookup (the gateway's switchyard_cache_lookup_seconds): \
         embed {embed:.3} ms, search {search:.3} ms, verify {verify:.3} ms"
    );
    let [m_embed, m_search, m_verify] = miss_phase_ms;
    println!(
        "misses, mean per lookup: embed {m_embed:.3} ms, search {m_search:.3} ms, verify {m_verify:.3} ms"
    );
    let results = json!({"fill": args.fill, "hit_exact": exact.json(), "hit_semantic": semantic.json(),
        "hit_semantic_phases_mean_ms": {"embed": embed, "search": search, "verify": verify},
        "miss_phases_mean_ms": {"embed": m_embed, "search": m_search, "verify": m_verify},
        "miss": miss.json(), "uncached": uncached.json(), "direct": direct.json(),
        "miss_added_p50_ms": added, "gateway_rss_mb": rss});
    switchyard_benches::write_results(&args.out, &results)?;
    println!("results written to {}", args.out);
    Ok(())
}
