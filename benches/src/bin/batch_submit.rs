//! Batch submission into durable storage, through the real gateway binary:
//! a 100,000-item batch streamed over gRPC (`CreateBatch`, chunks of 1,000
//! items, acknowledged only once committed to SQLite), and side by side in
//! the same run the same items the OpenAI way (`POST /v1/files` with the
//! JSONL file, then `POST /v1/batches`). Reports items/s for each, their
//! ratio, and the gateway's resident memory before and after (VmRSS and the
//! peak, VmHWM, from /proc).
//!
//! The gateway's runner starts on the batch at once; `[batch] concurrency
//! = 1` against an in-process fake upstream keeps that work small.
//!
//! ```sh
//! cargo build --release -p switchyard-gateway -p switchyard-benches
//! target/release/batch_submit --items 100000
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its report")]

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use switchyard_benches::procs::{Proc, free_addr, start_switchyard};
use switchyard_benches::write_results;
use switchyard_fakes::{FakeConfig, FakeUpstream};
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::batch_service_client::BatchServiceClient;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    /// Items per gRPC message.
    #[arg(long, default_value_t = 1_000)]
    chunk: usize,
    /// The gateway binary.
    #[arg(long, default_value = "target/release/switchyard")]
    bin: String,
    #[arg(long, default_value = "bench-results/batch_submit.json")]
    out: String,
}

fn body(i: usize) -> Vec<u8> {
    json!({"model": "m", "max_tokens": 64, "messages": [
        {"role": "system", "content": "You are a careful assistant that answers briefly."},
        {"role": "user", "content": format!("Summarise document number {i} in two sentences.")},
    ]})
    .to_string()
    .into_bytes()
}

/// (VmRSS, VmHWM) of `pid`, MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The gateway over `upstream`, its gRPC listener on a free port; returns
/// it with its gRPC URL.
fn start(bin: &str, dir: &std::path::Path, upstream: &str) -> anyhow::Result<(Proc, String)> {
    let grpc = free_addr()?;
    let config = format!(
        "[batch]\nenabled = true\ndir = \"{}\"\ngrpc_listen = \"{grpc}\"\nconcurrency = 1\nmax_items = 10000000\nmax_file_bytes = 4000000000\n\n\
         [providers.fake]\ntype = \"openai_compat\"\nbase_url = \"{upstream}/v1\"\napi_key = {{ env = \"BENCH_KEY\" }}\n\n\
         [[model_groups]]\nname = \"m\"\n[[model_groups.deployments]]\nprovider = \"fake\"\nmodel = \"up\"\n",
        dir.join("batch").display()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config)?;
    let path = path.to_string_lossy().into_owned();
    let proc = start_switchyard(
        bin,
        &["serve", "--listen", "127.0.0.1:0", "--config", &path],
        &[
            ("BENCH_KEY", "sk-bench"),
            ("RUST_LOG", "warn,switchyard_gateway::server=info"),
        ],
        None,
    )
    .with_context(|| format!("cannot start {bin} (build it with cargo build --release)"))?;
    Ok((proc, format!("http://{grpc}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake = FakeUpstream::start(
        "127.0.0.1:0".parse()?,
        FakeConfig {
            record_requests: false,
            ..FakeConfig::default()
        },
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let (gw, grpc_url) = start(&args.bin, dir.path(), &fake.url())?;
    let http_url = format!("http://{}", gw.addr);
    let pid = gw.child.id();
    let before = memory(pid);

    // gRPC: items generated as they are sent, never all in memory.
    let mut client = BatchServiceClient::connect(grpc_url)
        .await?
        .max_encoding_message_size(64 * 1024 * 1024);
    let (n, chunk) = (args.items, args.chunk.max(1));
    let spec = pb::CreateBatchRequest {
        part: Some(pb::create_batch_request::Part::Spec(pb::BatchSpec {
            endpoint: pb::Endpoint::ChatCompletions as i32,
            due: Some(pb::batch_spec::Due::CompletionWindowSeconds(86_400)),
            ..Default::default()
        })),
    };
    let chunks = (0..n.div_ceil(chunk)).map(move |c| pb::CreateBatchRequest {
        part: Some(pb::create_batch_request::Part::Items(pb::ItemChunk {
            items: (c * chunk..((c + 1) * chunk).min(n))
                .map(|i| pb::BatchItem {
                    custom_id: format!("req-{i}"),
                    endpoint: 0,
                    body: body(i),
                })
                .collect(),
        })),
    });
    let messages = tokio_stream::iter(std::iter::once(spec).chain(chunks));
    let t = Instant::now();
    let batch = client.create_batch(messages).await?.into_inner();
    let grpc_s = t.elapsed().as_secs_f64();
    let total = batch.counts.map_or(0, |c| c.total);
    if total != n as u64 {
        bail!("gRPC batch holds {total} items, not {n}");
    }
    let after_grpc = memory(pid);

    // HTTP, the OpenAI way: the JSONL file, then the batch.
    let file = dir.path().join("input.jsonl");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for i in 0..n {
            let line = json!({"custom_id": format!("req-{i}"), "method": "POST",
                "url": "/v1/chat/completions",
                "body": serde_json::from_slice::<Value>(&body(i))?});
            writeln!(w, "{line}")?;
        }
    }
    let curl = |args: &[&str]| -> anyhow::Result<Value> {
        let out = Command::new("curl").arg("-sS").args(args).output()?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let t = Instant::now();
    let uploaded = curl(&[
        "-F",
        "purpose=batch",
        "-F",
        &format!("file=@{}", file.display()),
        &format!("{http_url}/v1/files"),
    ])?;
    let upload_s = t.elapsed().as_secs_f64();
    let created = curl(&[
        "-H",
        "content-type: application/json",
        "-d",
        &json!({"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                "completion_window": "24h"})
        .to_string(),
        &format!("{http_url}/v1/batches"),
    ])?;
    let http_s = t.elapsed().as_secs_f64();
    if created["request_counts"]["total"].as_u64() != Some(n as u64) {
        bail!("HTTP batch: {created}");
    }
    let after_http = memory(pid);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let report = json!({
        "items": n,
        "chunk": chunk,
        "grpc": {"seconds": grpc_s, "items_per_s": n as f64 / grpc_s},
        "http_files_batches": {"seconds": http_s, "upload_seconds": upload_s,
                               "items_per_s": n as f64 / http_s},
        "grpc_over_http": (n as f64 / grpc_s) / (n as f64 / http_s),
        "gateway_rss_mib": {"before": before.0, "after_grpc": after_grpc.0,
                            "after_http": after_http.0, "peak": after_http.1,
                            "peak_after_grpc": after_grpc.1},
    });
    println!(
        "{n} items: gRPC {:.0} items/s ({grpc_s:.2} s); /v1/files + /v1/batches {:.0} items/s ({http_s:.2} s, upload {upload_s:.2} s); ratio {:.2}x",
        n as f64 / grpc_s,
        n as f64 / http_s,
        http_s / grpc_s
    );
    println!(
        "gateway RSS: {:.0} MiB before, {:.0} MiB after gRPC (peak {:.0}), {:.0} MiB after HTTP (peak {:.0})",
        before.0, after_grpc.0, after_grpc.1, after_http.0, after_http.1
    );
    write_results(&args.out, &report)
}
