//! What issue #8's request path costs end to end, in one run on this
//! machine: three release gateways in front of the same fast FAKE
//! upstream, measured side by side in interleaved rounds
//! (`switchyard_benches::compare`):
//!
//! 1. open, DLP off: issue #2's gateway;
//! 2. open, DLP on with its defaults (every prompt scanned);
//! 3. the master key set, every request with a virtual key whose key and
//!    tenant both have request, token, concurrency and budget limits (set
//!    high enough never to refuse), DLP on, the usage ledger written.
//!
//! Target: authentication, limits and budgets keep issue #2's overhead
//! target; their own cost is in `cargo bench --bench access`.
//!
//! ```text
//! cargo build --release -p switchyard-gateway -p switchyard-benches
//! target/release/access_overhead
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its report")]

use clap::Parser;
use serde_json::json;
use switchyard_benches::compare::{PlanArgs, Variant, compare, table};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "target/release/switchyard")]
    bin: String,
    #[command(flatten)]
    load: PlanArgs,
    #[arg(long, default_value = "bench-results/access_overhead.json")]
    out: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let limits = json!({"rpm": 1_000_000_000u64, "tpm": 1_000_000_000_000u64, "max_concurrent": 100_000,
                        "budget_daily_usd": 1e9, "budget_monthly_usd": 1e9});
    let variant = |name: &str, config: String| Variant {
        name: name.into(),
        config,
        log: "info".into(),
        bearer: "sk-bench".into(),
        env: Vec::new(),
        key: None,
    };
    let keyed = format!(
        "[auth]\nmaster_key = {{ env = \"SWITCHYARD_MASTER_KEY\" }}\ndb = \"{}\"\n\n[tenants.bench.limits]\nrpm = 1000000000\ntpm = 1000000000000\nmax_concurrent = 100000\nbudget_daily_usd = 1e9\nbudget_monthly_usd = 1e9\n",
        dir.path().join("access.sqlite3").display()
    );
    let variants = [
        variant(
            "open, DLP off (#2's setup)",
            "[dlp]\nenabled = false\n".into(),
        ),
        variant("open, DLP on", String::new()),
        Variant {
            env: vec![("SWITCHYARD_MASTER_KEY".into(), "sk-bench-master".into())],
            key: Some(json!({"tenant": "bench", "limits": limits})),
            ..variant(
                "virtual key + tenant limits + budgets + ledger + DLP",
                keyed,
            )
        },
    ];
    let plan = args.load.plan();
    let results = compare(&args.bin, dir.path(), &variants, plan).await?;
    println!(
        "\n## Access path: {} rounds, variants interleaved\n",
        plan.rounds
    );
    let rows = table(&results, plan);
    let dlp = results[1].closed.throughput() / results[0].closed.throughput();
    let all = results[2].closed.throughput() / results[0].closed.throughput();
    println!("\nthroughput, DLP on / off: {dlp:.3}; everything / #2's setup: {all:.3}");
    switchyard_benches::write_results(
        &args.out,
        &json!({"variants": rows, "dlp_over_none": dlp, "all_over_none": all}),
    )?;
    Ok(())
}
