//! The semantic cache's embedded vector store (qdrant-edge) at scale:
//! insert rate, index build time, filtered search latency and recall, RSS
//! and disk, for N entries (default 1,000,000) of 384-dimensional vectors.
//!
//! ```text
//! cargo build --release -p switchyard-benches --bin cache_store
//! target/release/cache_store --entries 1000000
//! ```
//!
//! Vectors: `--clusters` random unit centres, each entry a centre plus
//! Gaussian noise (so entries form topics, as prompt embeddings do, rather
//! than being uniformly random, the worst case for any vector index).
//! Scopes: `--big-scope` of the entries share one scope (the worst case for
//! a filtered search: the filter excludes nothing), the rest are spread
//! over 1,000 small scopes. Queries: stored vectors with a little more
//! noise (a paraphrase's neighbourhood), in the big scope and in small
//! ones, searched exactly as the request path does (scope and expiry
//! filters, 4 neighbours). Recall@1 is checked against an exact scan of
//! the same scope, computed in the same run: the alternative a user would
//! otherwise run (brute force), timed too.

#![allow(clippy::print_stdout, reason = "a benchmark prints its report")]

use std::time::Instant;

use clap::Parser;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use serde_json::{Map, json};
use switchyard_gateway::cache::{EdgeStore, Entry, VectorStore};
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    #[arg(long, default_value_t = 384)]
    dim: usize,
    #[arg(long, default_value_t = 5_000)]
    clusters: usize,
    /// Fraction of entries in the one big scope.
    #[arg(long, default_value_t = 0.9)]
    big_scope: f64,
    /// Points per upsert call.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Queries per scope kind.
    #[arg(long, default_value_t = 2_000)]
    queries: usize,
    /// Store directory (default: a temporary one, removed at the end).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    #[arg(long, default_value = "bench-results/cache_store.json")]
    out: String,
}

const SMALL_SCOPES: usize = 1_000;
const NOW: f64 = 1_000_000.0;

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|a| *a /= n);
    v
}

struct Data {
    centres: Vec<Vec<f32>>,
    noise: Normal<f32>,
    dim: usize,
}

impl Data {
    fn new(args: &Args, rng: &mut StdRng) -> Self {
        let g = Normal::new(0.0f32, 1.0).unwrap_or_else(|_| unreachable!());
        let centres = (0..args.clusters)
            .map(|_| unit((0..args.dim).map(|_| g.sample(rng)).collect()))
            .collect();
        // Noise of norm ~0.6 around a unit centre: entries of one topic have
        // cosine ~0.75 with each other, as related prompts do.
        let sigma = 0.6 / (args.dim as f32).sqrt();
        Self {
            centres,
            noise: Normal::new(0.0, sigma).unwrap_or_else(|_| unreachable!()),
            dim: args.dim,
        }
    }

    /// Entry `i`'s vector: deterministic in `i`.
    fn vector(&self, i: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(i as u64);
        let c = &self.centres[i % self.centres.len()];
        unit(
            (0..self.dim)
                .map(|d| c[d] + self.noise.sample(&mut rng))
                .collect(),
        )
    }

    /// A query near entry `i` (a paraphrase's neighbourhood).
    fn near(&self, i: usize, rng: &mut StdRng) -> Vec<f32> {
        let v = self.vector(i);
        unit(v.iter().map(|a| a + 0.3 * self.noise.sample(rng)).collect())
    }
}

fn scope_of(i: usize, big: usize) -> String {
    if i < big {
        "big".into()
    } else {
        format!("small-{}", i % SMALL_SCOPES)
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().join("store"));
    let mut rng = StdRng::seed_from_u64(42);
    let data = Data::new(&args, &mut rng);
    let big = (args.entries as f64 * args.big_scope) as usize;
    let (rss0, _) = rss_mb();
    println!(
        "{} entries × {} dims, {} clusters; {} in one scope, the rest over {SMALL_SCOPES} scopes",
        args.entries, args.dim, args.clusters, big
    );

    let edge = EdgeStore::open(&dir, args.dim)?;
    let store = VectorStore::Edge(edge.clone());
    let t = Instant::now();
    for start in (0..args.entries).step_by(args.batch) {
        let end = (start + args.batch).min(args.entries);
        let entries = (start..end)
            .map(|i| {
                let mut data_map = Map::new();
                data_map.insert("prompt".into(), json!(format!("prompt {i}")));
                data_map.insert("response".into(), json!("{\"id\":\"x\"}"));
                Entry {
                    id: Uuid::from_u128(i as u128 + 1),
                    scope: scope_of(i, big),
                    tenant: "default".into(),
                    group: "bench".into(),
                    vector: data.vector(i),
                    expires_at: NOW + 3600.0,
                    created_at: NOW,
                    data: data_map,
                }
            })
            .collect();
        store.upsert(entries).await?;
        if end % 100_000 == 0 {
            println!(
                "  {end} inserted ({:.0}/s)",
                end as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    let insert_s = t.elapsed().as_secs_f64();
    let insert_rate = args.entries as f64 / insert_s;
    println!("insert: {insert_s:.1} s, {insert_rate:.0} entries/s");
    let t = Instant::now();
    edge.flush();
    let flush_s = t.elapsed().as_secs_f64();
    println!("flush: {flush_s:.1} s");
    let mut report = json!({"entries": args.entries, "dim": args.dim, "clusters": args.clusters,
        "big_scope_entries": big, "insert_s": insert_s, "insert_per_s": insert_rate,
        "flush_s": flush_s, "before_index": {}, "queries": {}});
    // Before the index exists: every search scans its scope (what the store
    // does until the first sweep, and what a store without an index does).
    println!("\nBefore the index is built (segments scanned):");
    report["before_index"] = search(&store, &data, &args, big, args.queries / 20).await?;

    let t = Instant::now();
    let optimized = edge.optimize()?;
    let optimize_s = t.elapsed().as_secs_f64();
    let stats = store.stats().await?;
    println!(
        "\nindex build (optimize, {optimized}): {optimize_s:.1} s; {} indexed of {} in {} segments",
        stats.indexed, stats.entries, stats.segments
    );
    report["optimize_s"] = json!(optimize_s);
    report["indexed"] = json!(stats.indexed);
    report["segments"] = json!(stats.segments);
    println!("\nWith the index (HNSW):");
    report["queries"] = search(&store, &data, &args, big, args.queries).await?;
    let (rss, hwm) = rss_mb();
    let disk = store.stats().await?.disk_bytes.unwrap_or(0) as f64 / 1e6;
    println!(
        "\nRSS: {:.0} MB (peak {hwm:.0} MB; {rss0:.0} MB before the store); disk: {disk:.0} MB ({:.0} bytes per entry)",
        rss,
        disk * 1e6 / args.entries as f64
    );
    report["rss_mb"] = json!(rss);
    report["peak_rss_mb"] = json!(hwm);
    report["disk_mb"] = json!(disk);
    switchyard_benches::write_results(&args.out, &report)?;
    println!("results written to {}", args.out);
    drop(store);
    drop(edge);
    Ok(())
}

/// `n` queries in the big scope and `n` in small ones: latency of the
/// request path's search, and recall@1 against an exact scan of the scope
/// (on the first 50 queries).
async fn search(
    store: &VectorStore,
    data: &Data,
    args: &Args,
    big: usize,
    n: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut out = json!({});
    println!("| scope | queries | search p50 ms | p99 ms | p99.9 ms | recall@1 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (kind, in_big) in [("big", true), ("small", false)] {
        let targets: Vec<usize> = (0..n)
            .map(|q| {
                if in_big {
                    (q * 7_919) % big.max(1)
                } else {
                    big + (q * 7_919) % (args.entries - big).max(1)
                }
            })
            .collect();
        let mut h = histogram()?;
        let mut hits = 0usize;
        let mut checked = 0usize;
        let mut qrng = StdRng::seed_from_u64(7);
        for (i, &target) in targets.iter().enumerate() {
            let query = data.near(target, &mut qrng);
            let scope = scope_of(target, big);
            let t = Instant::now();
            let found = store.nearest(&scope, query.clone(), 4, NOW).await?;
            h.record((t.elapsed().as_micros() as u64).max(1))?;
            if i < 50 {
                checked += 1;
                let members: Box<dyn Iterator<Item = usize>> = if in_big {
                    Box::new(0..big)
                } else {
                    Box::new((big..args.entries).filter(|i| scope_of(*i, big) == scope))
                };
                let best = members
                    .map(|i| {
                        let v = data.vector(i);
                        (i, v.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>())
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| Uuid::from_u128(i as u128 + 1));
                if found.first().map(|f| f.id) == best {
                    hits += 1;
                }
            }
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        let recall = hits as f64 / checked.max(1) as f64;
        let label = if in_big {
            "big (90% of entries)"
        } else {
            "small (~100 entries)"
        };
        println!(
            "| {label} | {n} | {:.3} | {:.3} | {:.3} | {recall:.2} |",
            ms(0.5),
            ms(0.99),
            ms(0.999)
        );
        out[kind] = json!({"n": n, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
            "recall_at_1": recall});
    }
    Ok(out)
}
