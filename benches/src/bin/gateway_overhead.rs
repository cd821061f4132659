//! Gateway overhead: the same non-streaming chat request sent to a fast
//! fake upstream directly and through Switchyard (and through LiteLLM's
//! proxy when it is installed), in the same run, on this machine.
//!
//! ```text
//! cargo build --release -p switchyard-gateway -p switchyard-benches
//! target/release/gateway_overhead --litellm .venv-bench/bin/litellm
//! ```
//!
//! Reports, per offered rate: p50/p90/p99 latency direct and through the
//! gateway, the difference (added latency), and the gateway's own
//! `x-switchyard-overhead-ms`; then maximum throughput (closed loop) and
//! single-connection latency for each target; and the gateway's idle RSS.

#![allow(clippy::print_stdout, reason = "a benchmark prints its report")]

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use serde_json::json;
use switchyard_benches::load::{Report, Target, run};
use switchyard_benches::procs::{Proc, free_addr, start_command, start_switchyard};

#[derive(Debug, Parser)]
struct Args {
    /// The switchyard binary (build it with --release).
    #[arg(long, default_value = "target/release/switchyard")]
    bin: String,
    /// Seconds per measurement (per target and rate).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Offered rates (requests per second) for the open-loop runs.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<f64>,
    /// Open-loop measurements alternate direct and gateway in this many
    /// rounds of `duration / rounds` seconds each.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Connections for the open-loop and closed-loop runs.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// LiteLLM's `litellm` command; skipped (and said so) when absent.
    #[arg(long)]
    litellm: Option<String>,
    /// Worker processes for LiteLLM.
    #[arg(long, default_value_t = 2)]
    litellm_workers: u32,
    /// Pin the load generator to CPU 0 and the servers (fake upstream,
    /// gateway, LiteLLM) to CPU 1. Waking a process on the other vCPU of
    /// these VMs costs far more than a same-CPU hand-off, so unpinned runs
    /// mostly measure the hypervisor; pinned, each path pays the same single
    /// cross-CPU hop (client to server) and the gateway's hops to the
    /// upstream stay on one CPU, as on a gateway host next to its upstream.
    #[arg(long)]
    pin: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results/gateway_overhead.json")]
    out: String,
}

const MODEL: &str = "bench";

fn body() -> Bytes {
    Bytes::from(
        json!({"model": MODEL, "max_tokens": 16,
               "messages": [{"role": "user", "content": "Say hello to the benchmark"}]})
        .to_string(),
    )
}

fn target(p: &Proc) -> Target {
    Target {
        addr: p.addr,
        path: "/v1/chat/completions".into(),
        body: body(),
        bearer: Some("sk-bench".into()),
    }
}

fn row(name: &str, r: &Report) -> serde_json::Value {
    json!({"target": name, "ok": r.ok, "errors": r.errors, "throughput_rps": r.throughput(),
           "p50_ms": r.pct_ms(0.5), "p90_ms": r.pct_ms(0.9), "p99_ms": r.pct_ms(0.99),
           "p999_ms": r.pct_ms(0.999), "late_sends": r.late,
           "overhead_p50_ms": r.overhead_pct_ms(0.5), "overhead_p99_ms": r.overhead_pct_ms(0.99)})
}

fn start_litellm(
    cmd: &str,
    upstream: &Proc,
    workers: u32,
    dir: &std::path::Path,
    cpus: Option<&str>,
) -> anyhow::Result<Proc> {
    let cfg = dir.join("litellm.yaml");
    std::fs::write(
        &cfg,
        format!(
            "model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/fake-model\n      api_base: http://{}/v1\n      api_key: sk-bench\n",
            upstream.addr
        ),
    )?;
    let addr = free_addr()?;
    let port = addr.port().to_string();
    let workers = workers.to_string();
    let cfg = cfg.to_string_lossy();
    let mut argv = vec![
        cmd,
        "--config",
        &cfg,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--num_workers",
        &workers,
    ];
    let program = match cpus {
        Some(c) => {
            argv.splice(0..0, ["-c", c]);
            "taskset"
        }
        None => argv.remove(0),
    };
    start_command(
        program,
        &argv,
        addr,
        &[("LITELLM_LOG", "ERROR"), ("LITELLM_MASTER_KEY", "sk-bench")],
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let d = Duration::from_secs(args.duration);
    let dir = tempfile::tempdir()?;
    let (client_cpus, server_cpus) = if args.pin {
        (Some("0"), Some("1"))
    } else {
        (None, None)
    };
    if let Some(c) = client_cpus {
        switchyard_benches::procs::pin_self(c)?;
    }
    let fake = start_switchyard(
        &args.bin,
        &[
            "fake-upstream",
            "--listen",
            "127.0.0.1:0",
            "--no-record",
            "--threads",
            "1",
        ],
        &[],
        server_cpus,
    )?;
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nmaster_key = {{ env = \"BENCH_MASTER_KEY\" }}\n\n[providers.fake]\ntype = \"openai_compat\"\nbase_url = \"http://{}/v1\"\napi_key = {{ env = \"BENCH_KEY\" }}\n\n[[model_groups]]\nname = \"{MODEL}\"\n[[model_groups.deployments]]\nprovider = \"fake\"\nmodel = \"fake-model\"\n",
            fake.addr
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
        &[("BENCH_KEY", "sk-bench"), ("BENCH_MASTER_KEY", "sk-bench")],
        server_cpus,
    )?;
    println!(
        "cpu pinning: {}",
        if args.pin {
            "load generator on CPU 0; fake upstream, gateway and LiteLLM on CPU 1"
        } else {
            "none"
        }
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = gw.rss_bytes();
    println!(
        "gateway idle RSS: {:.1} MB",
        idle_rss.unwrap_or(0) as f64 / 1e6
    );

    let mut results = json!({"duration_s": args.duration, "connections": args.connections,
                             "idle_rss_bytes": idle_rss, "open_loop": [], "closed_loop": []});
    // Warm up both paths (connection pools, allocator).
    run(
        target(&fake),
        args.connections,
        None,
        Duration::from_secs(2),
    )
    .await;
    run(target(&gw), args.connections, None, Duration::from_secs(2)).await;

    println!(
        "\n| offered rps | target | achieved rps | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms | gateway overhead p50 / p99 ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for &rate in &args.rates {
        // Alternate short rounds so that the VM's noise bursts land on
        // both targets alike; merge the rounds per target.
        let round = d / args.rounds.max(1);
        let mut direct = run(target(&fake), args.connections, Some(rate), round).await;
        let mut through = run(target(&gw), args.connections, Some(rate), round).await;
        for _ in 1..args.rounds {
            direct.merge(run(target(&fake), args.connections, Some(rate), round).await);
            through.merge(run(target(&gw), args.connections, Some(rate), round).await);
        }
        for (name, r) in [("direct", &direct), ("switchyard", &through)] {
            let added = |q| r.pct_ms(q) - direct.pct_ms(q);
            println!(
                "| {rate} | {name} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
                r.throughput(),
                r.pct_ms(0.5),
                r.pct_ms(0.9),
                r.pct_ms(0.99),
                if name == "direct" {
                    "".into()
                } else {
                    format!("{:.3}", added(0.5))
                },
                if name == "direct" {
                    "".into()
                } else {
                    format!("{:.3}", added(0.99))
                },
                match (r.overhead_pct_ms(0.5), r.overhead_pct_ms(0.99)) {
                    (Some(a), Some(b)) => format!("{a:.3} / {b:.3}"),
                    _ => String::new(),
                },
            );
            let mut v = row(name, r);
            v["offered_rps"] = json!(rate);
            if let Some(a) = results["open_loop"].as_array_mut() {
                a.push(v);
            }
        }
    }
    let busy_rss = gw.rss_bytes();

    let litellm = match &args.litellm {
        Some(cmd) => match start_litellm(cmd, &fake, args.litellm_workers, dir.path(), server_cpus)
        {
            Ok(p) => {
                run(target(&p), 8, None, Duration::from_secs(3)).await;
                Some(p)
            }
            Err(e) => {
                println!("\nLiteLLM not measured: {e}");
                None
            }
        },
        None => {
            println!("\nLiteLLM not measured: pass --litellm PATH (see docs/benchmarks.md)");
            None
        }
    };
    println!(
        "\n| target | max rps (closed loop, {} conns) | errors | single-connection p50 ms | p99 ms |",
        args.connections
    );
    println!("|---|---:|---:|---:|---:|");
    let mut max = Vec::new();
    let mut targets: Vec<(&str, &Proc)> = vec![("direct", &fake), ("switchyard", &gw)];
    if let Some(l) = &litellm {
        targets.push(("litellm", l));
    }
    for (name, p) in targets {
        let closed = run(target(p), args.connections, None, d).await;
        let single = run(target(p), 1, None, Duration::from_secs(3)).await;
        println!(
            "| {name} | {:.0} | {} | {:.3} | {:.3} |",
            closed.throughput(),
            closed.errors,
            single.pct_ms(0.5),
            single.pct_ms(0.99)
        );
        let mut v = row(name, &closed);
        v["single_connection_p50_ms"] = json!(single.pct_ms(0.5));
        max.push((name, closed.throughput()));
        if let Some(a) = results["closed_loop"].as_array_mut() {
            a.push(v);
        }
    }
    let rps = |n: &str| max.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    if let (Some(s), Some(l)) = (rps("switchyard"), rps("litellm")) {
        println!("\nthroughput ratio switchyard / litellm: {:.1}x", s / l);
        results["ratio_switchyard_over_litellm"] = json!(s / l);
    }
    println!(
        "gateway RSS after load: {:.1} MB",
        busy_rss.unwrap_or(0) as f64 / 1e6
    );
    results["busy_rss_bytes"] = json!(busy_rss);
    switchyard_benches::write_results(&args.out, &results)?;
    println!("results written to {}", args.out);
    Ok(())
}
