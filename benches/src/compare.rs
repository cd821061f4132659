//! Side-by-side gateway variants: several release gateways, identical but
//! for what is compared, in front of one fast FAKE upstream, measured in
//! interleaved rounds (drift on this noisy machine lands on all alike):
//! maximum throughput (closed loop) and latency at a fixed rate (open
//! loop), with each gateway's own `x-switchyard-overhead-ms`.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;

use crate::load::{Report, Target, run};
use crate::procs::{Proc, start_switchyard};

/// The model group every variant serves.
pub const MODEL: &str = "bench";

/// One gateway to compare.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    /// Configuration put before the shared provider and model group.
    pub config: String,
    /// `RUST_LOG` of the gateway.
    pub log: String,
    /// The client's key.
    pub bearer: String,
    /// Extra environment (a master key).
    pub env: Vec<(String, String)>,
    /// Create a virtual key with these attributes once the gateway is up
    /// (admin API, with `SWITCHYARD_MASTER_KEY` from `env`) and send it
    /// instead of `bearer`.
    pub key: Option<serde_json::Value>,
}

/// How long and how hard.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub duration: Duration,
    pub rounds: u32,
    pub rate: f64,
    pub connections: usize,
}

/// The command-line arguments of a side-by-side comparison.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Seconds per variant, split in rounds.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Open-loop rate.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
}

impl PlanArgs {
    pub fn plan(&self) -> Plan {
        Plan {
            duration: Duration::from_secs(self.duration),
            rounds: self.rounds,
            rate: self.rate,
            connections: self.connections,
        }
    }
}

/// Closed- and open-loop results of one variant.
#[derive(Debug)]
pub struct Measured {
    pub name: String,
    pub closed: Report,
    pub open: Report,
}

pub fn target(addr: std::net::SocketAddr, bearer: &str) -> Target {
    Target {
        addr,
        path: "/v1/chat/completions".into(),
        body: Bytes::from(
            json!({"model": MODEL, "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Say hello to the benchmark"}]})
            .to_string(),
        ),
        bearer: Some(bearer.into()),
    }
}

/// A gateway from `config` (written to `dir/name.toml`).
pub fn gateway(
    bin: &str,
    dir: &std::path::Path,
    (name, config): (&str, &str),
    log: &str,
    env: &[(String, String)],
) -> anyhow::Result<Proc> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config)?;
    let path = path.to_string_lossy().into_owned();
    let mut vars: Vec<(&str, &str)> = vec![("BENCH_KEY", "sk-bench"), ("RUST_LOG", log)];
    vars.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    start_switchyard(
        bin,
        &["serve", "--listen", "127.0.0.1:0", "--config", &path],
        &vars,
        None,
    )
    .with_context(|| format!("cannot start {bin}"))
}

/// A virtual key for `v` on the gateway at `addr`.
async fn create_key(
    addr: std::net::SocketAddr,
    v: &Variant,
    attrs: &serde_json::Value,
) -> anyhow::Result<String> {
    let master = v
        .env
        .iter()
        .find(|(k, _)| k == "SWITCHYARD_MASTER_KEY")
        .map(|(_, m)| m.as_str())
        .context("a variant with `key` needs SWITCHYARD_MASTER_KEY in `env`")?;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/admin/keys"))
        .bearer_auth(master)
        .json(attrs)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer["key"]
        .as_str()
        .map(str::to_owned)
        .context("no key in the answer")
}

/// Start a fake upstream and every variant, run the interleaved rounds.
pub async fn compare(
    bin: &str,
    dir: &std::path::Path,
    variants: &[Variant],
    plan: Plan,
) -> anyhow::Result<Vec<Measured>> {
    let fake = start_switchyard(
        bin,
        &[
            "fake-upstream",
            "--listen",
            "127.0.0.1:0",
            "--no-record",
            "--threads",
            "1",
        ],
        &[],
        None,
    )?;
    let base = format!(
        "[providers.fake]\ntype = \"openai_compat\"\nbase_url = \"http://{}/v1\"\napi_key = {{ env = \"BENCH_KEY\" }}\n\n[[model_groups]]\nname = \"{MODEL}\"\n[[model_groups.deployments]]\nprovider = \"fake\"\nmodel = \"fake-model\"\nprice = {{ input_per_million = 0.15, output_per_million = 0.6 }}\n",
        fake.addr
    );
    let mut procs = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        procs.push(gateway(
            bin,
            dir,
            (&format!("v{i}"), &format!("{}\n{base}", v.config)),
            &v.log,
            &v.env,
        )?);
    }
    let mut bearers = Vec::new();
    for (p, v) in procs.iter().zip(variants) {
        bearers.push(match &v.key {
            Some(attrs) => create_key(p.addr, v, attrs).await?,
            None => v.bearer.clone(),
        });
    }
    for (p, b) in procs.iter().zip(&bearers) {
        run(
            target(p.addr, b),
            plan.connections,
            None,
            Duration::from_secs(2),
        )
        .await;
    }
    let round = plan.duration / plan.rounds.max(1);
    let mut closed: Vec<Option<Report>> = variants.iter().map(|_| None).collect();
    let mut open: Vec<Option<Report>> = variants.iter().map(|_| None).collect();
    let fold = |acc: &mut Option<Report>, r: Report| match acc {
        Some(a) => a.merge(r),
        None => *acc = Some(r),
    };
    for i in 0..plan.rounds as usize {
        // Rotate which goes first.
        for k in 0..procs.len() {
            let v = (i + k) % procs.len();
            let t = || target(procs[v].addr, &bearers[v]);
            fold(
                &mut closed[v],
                run(t(), plan.connections, None, round).await,
            );
            fold(
                &mut open[v],
                run(t(), plan.connections, Some(plan.rate), round).await,
            );
        }
    }
    variants
        .iter()
        .zip(closed.into_iter().zip(open))
        .map(|(v, (c, o))| {
            Ok(Measured {
                name: v.name.clone(),
                closed: c.context("no run")?,
                open: o.context("no run")?,
            })
        })
        .collect()
}

/// Print the Markdown table of a comparison; its rows as JSON.
#[allow(clippy::print_stdout, reason = "a benchmark prints its report")]
pub fn table(results: &[Measured], plan: Plan) -> Vec<serde_json::Value> {
    println!(
        "| gateway | max req/s (closed, {} conns) | p50 ms at {} req/s | p99 ms | errors | own overhead p50 / p99 µs |",
        plan.connections, plan.rate
    );
    println!("|---|---:|---:|---:|---:|---:|");
    results
        .iter()
        .map(|m| {
            let (c, o) = (&m.closed, &m.open);
            println!(
                "| {} | {:.0} | {:.3} | {:.3} | {} | {:.1} / {:.1} |",
                m.name,
                c.throughput(),
                o.pct_ms(0.5),
                o.pct_ms(0.99),
                c.errors + o.errors,
                o.overhead_pct_ms(0.5).unwrap_or(f64::NAN) * 1e3,
                o.overhead_pct_ms(0.99).unwrap_or(f64::NAN) * 1e3,
            );
            json!({"variant": m.name, "closed_rps": c.throughput(),
                "open_p50_ms": o.pct_ms(0.5), "open_p99_ms": o.pct_ms(0.99),
                "errors": c.errors + o.errors,
                "overhead_p50_ms": o.overhead_pct_ms(0.5), "overhead_p99_ms": o.overhead_pct_ms(0.99)})
        })
        .collect()
}
