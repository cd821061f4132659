//! The per-request cost of GPU-aware placement, as the gateway pays it: the
//! prompt's shape (render and block hashes), a lock and a view of every
//! local backend's ledger, `place`, and the ledger entry for the job sent
//! (released again, so the fleet's load stays as set up). Side by side, in
//! the same run: a least-loaded pick over the same locked ledgers (the
//! simple router a user would otherwise have).
//!
//! ```sh
//! cargo run --release -p switchyard-benches --bin placement -- --backends 64
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its report")]

use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use switchyard_scheduler::catalog::Price;
use switchyard_scheduler::ledger::BackendLedger;
use switchyard_scheduler::placement::{External, Job, Mode, Policy, Priority, place};
use switchyard_scheduler::profile::GpuProfile;
use switchyard_scheduler::prompt;

#[derive(Parser)]
struct Args {
    /// Local backends serving the model.
    #[arg(long, default_value_t = 64)]
    backends: usize,
    /// Requests in flight on each backend (varied ±50%).
    #[arg(long, default_value_t = 24)]
    in_flight: u32,
    /// Prompt tokens of the placed requests (4 bytes each).
    #[arg(long, default_value_t = 2_000)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 200_000)]
    iterations: u32,
    #[arg(long, default_value = "bench-results/placement.json")]
    out: String,
}

fn chat(tokens: usize, i: u64) -> Map<String, Value> {
    let system = "You are a helpful assistant for a large retailer. ".repeat(tokens / 24);
    json!({"model": "llama", "max_tokens": 200, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": format!("question number {i}: where is my order?")},
    ]})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// An interactive request of this shape for 200 output tokens.
fn job(shape: &prompt::Shape) -> Job<'_> {
    Job {
        model: "llama",
        prompt_tokens: shape.tokens,
        output_tokens: 200,
        blocks: &shape.blocks,
        priority: Priority::Interactive,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profiles = ["h100", "a100", "l4"];
    let ledgers: Vec<Mutex<BackendLedger>> = (0..args.backends)
        .map(|i| {
            let p = GpuProfile::named(profiles[i % 3]).unwrap_or_else(|| unreachable!());
            let mut l = BackendLedger::new(format!("b{i}"), vec!["llama".into()], p, 64, 2.0);
            // Load: varied in-flight requests, half past their first token.
            let n = args.in_flight / 2 + (i as u32 * 7919) % args.in_flight.max(1);
            for r in 0..u64::from(n) {
                let body = chat(args.prompt_tokens, r + 1_000 * i as u64);
                let shape = prompt::from_request(&body);
                let job = job(&shape);
                l.sent(r, &job, 0.0);
                if r % 2 == 0 {
                    l.first_token(r, 0.2);
                }
            }
            Mutex::new(l)
        })
        .collect();
    let models = ["llama".to_owned()];
    let externals = [External {
        name: "openai",
        models: &models,
        price: Price {
            input: 0.15,
            output: 0.6,
            cached_input: 0.075,
            batch_input: 0.075,
            batch_output: 0.3,
        },
        ttft_s: 0.8,
    }];
    let policy = Policy {
        mode: Mode::PreferLocal,
        ttft_slo_s: 2.0,
        max_queue_wait_s: 10.0,
        allowed_external: &[],
        budget_left_usd: None,
        batch_idle_share: 0.5,
        batch_overflow: false,
        batch_price: false,
    };
    let bodies: Vec<Map<String, Value>> = (0..64).map(|i| chat(args.prompt_tokens, i)).collect();
    let mut shape_h = Histogram::<u64>::new(3)?;
    let mut place_h = Histogram::<u64>::new(3)?;
    let mut total_h = Histogram::<u64>::new(3)?;
    let mut naive_h = Histogram::<u64>::new(3)?;
    let mut local = 0u64;
    for it in 0..args.iterations {
        let body = &bodies[it as usize % bodies.len()];
        // Switchyard: shape, views, place, record and release.
        let t0 = Instant::now();
        let shape = prompt::from_request(body);
        let t1 = Instant::now();
        let job = job(&shape);
        let chosen = {
            let guards: Vec<_> = ledgers
                .iter()
                .map(|l| l.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
                .collect();
            let views: Vec<_> = guards.iter().map(|g| g.view(&job)).collect();
            place(&job, &views, &externals, &policy, 0.0)
        };
        if let switchyard_scheduler::placement::Target::Local { backend } = chosen.target {
            local += 1;
            let mut l = ledgers[backend]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            l.sent(u64::MAX, &job, 1.0);
            l.finished(u64::MAX);
        }
        let t2 = Instant::now();
        // Least loaded: lock every ledger, fewest in flight.
        let t3 = Instant::now();
        let pick = ledgers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let n = l
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .in_flight();
                (n, i)
            })
            .min();
        std::hint::black_box(pick);
        let t4 = Instant::now();
        let ns = |a: Instant, b: Instant| (b - a).as_nanos().max(1) as u64;
        shape_h.record(ns(t0, t1))?;
        place_h.record(ns(t1, t2))?;
        total_h.record(ns(t0, t2))?;
        naive_h.record(ns(t3, t4))?;
    }
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let row = |h: &Histogram<u64>| json!({"p50_us": us(h, 0.5), "p99_us": us(h, 0.99), "p999_us": us(h, 0.999)});
    let results = json!({
        "backends": args.backends,
        "in_flight_per_backend": args.in_flight,
        "prompt_tokens": args.prompt_tokens,
        "iterations": args.iterations,
        "placed_local_share": local as f64 / f64::from(args.iterations),
        "shape": row(&shape_h),
        "place": row(&place_h),
        "switchyard_total": row(&total_h),
        "least_loaded": row(&naive_h),
        "p99_ratio_total_over_least_loaded": us(&total_h, 0.99) / us(&naive_h, 0.99),
    });
    println!("{}", serde_json::to_string_pretty(&results)?);
    switchyard_benches::write_results(&args.out, &results)
}
