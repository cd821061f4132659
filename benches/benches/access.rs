//! Issue #8's per-request costs, with criterion:
//!
//! - `access/*`: authentication (SHA-256 of the key, one map lookup), the
//!   model check, budgets and rate limits of a key and its tenant
//!   (sliding windows), and settling (tokens, spend, the ledger row sent
//!   to its writer thread): everything a request pays. Target: ≤ 50 µs
//!   p99.
//! - `dlp/*`: DLP over a 4,000-token prompt (16 KB of prose), clean and
//!   with secrets and personal data in it, with the gateway's `RegexSet`
//!   first pass, side by side with the obvious alternative, a loop of the
//!   same detectors' regexes. Target: ≤ 200 µs p99.
//!
//! Criterion reports means; after it, each case is timed call by call
//! (200,000 calls, hdrhistogram) for p50 / p99 / p99.9.
//!
//! ```text
//! cargo bench -p switchyard-benches --bench access
//! ```

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use hdrhistogram::Histogram;
use regex::bytes::Regex;
use secrecy::SecretString;
use switchyard_gateway::access::dlp::{Dlp, builtin_patterns};
use switchyard_gateway::access::ledger::UsageRecord;
use switchyard_gateway::access::store::KeyPatch;
use switchyard_gateway::access::{Access, Principal};
use switchyard_gateway::config::{Config, DlpAction, DlpConfig, LimitsConfig};

const MASTER: &str = "sk-master-bench";

/// An access layer on a fresh database with one tenant (limits, budgets)
/// and one key of it (limits, budgets, a model allow-list); the key's
/// secret.
fn access(dir: &std::path::Path) -> (Arc<Access>, String) {
    let text = format!(
        "[auth]\ndb = \"{}\"\n\n[tenants.acme]\nmodels = []\n[tenants.acme.limits]\nrpm = 1000000000\ntpm = 1000000000000\nmax_concurrent = 100000\nbudget_daily_usd = 1e12\nbudget_monthly_usd = 1e12\n",
        dir.join("access.sqlite3").display()
    );
    let config = Config::parse(&text, Vec::new()).unwrap();
    let access = Arc::new(Access::open(&config, SecretString::from(MASTER)).unwrap());
    let patch = KeyPatch {
        tenant: Some("acme".into()),
        models: Some(vec!["m".into(), "n".into()]),
        limits: Some(LimitsConfig {
            rpm: Some(1_000_000_000),
            tpm: Some(1_000_000_000_000),
            max_concurrent: Some(100_000),
            budget_daily_usd: Some(1e12),
            budget_monthly_usd: Some(1e12),
        }),
        ..KeyPatch::default()
    };
    let (_, secret) = access.store.create(patch, "bench").unwrap();
    (access, secret)
}

/// One request's whole access path.
fn request(access: &Arc<Access>, secret: &str) {
    let p: Principal = access.authenticate(Some(secret)).unwrap();
    assert!(access.allows(&p, "m"));
    let admission = access.admit(&p, 300, true).unwrap();
    admission.settle(UsageRecord {
        tenant: p.tenant.to_string(),
        key_id: p.key_id().map(str::to_owned),
        endpoint: "chat.completions",
        prompt_tokens: 40,
        completion_tokens: 200,
        cost_usd: 0.0001,
        cache: "miss",
        status: 200,
        outcome: "ok",
        ..UsageRecord::default()
    });
}

/// About 4,000 tokens of prose (16 KB), optionally with a few things DLP
/// must find.
fn prompt(with_findings: bool) -> String {
    let sentence = "The quarterly report shows steady growth in the northern region, while \
                    costs in logistics rose slightly because of fuel prices and new routes. ";
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 16_000 {
        text.push_str(sentence);
        i += 1;
        if with_findings && i % 40 == 0 {
            text.push_str(match (i / 40) % 4 {
                0 => "Contact jane.doe@example.com or +1 415-555-0132. ",
                1 => "The key is sk-proj-abcdefghijklmnopqrstuvwxyz012345 for now. ",
                2 => "Card 4111 1111 1111 1111 was charged. ",
                _ => "Wire to GB82 WEST 1234 5698 7654 32 today. ",
            });
        }
    }
    text
}

fn dlp() -> Dlp {
    let every = builtin_patterns()
        .map(|(n, _)| (n.to_owned(), DlpAction::Redact))
        .collect();
    Dlp::build(&DlpConfig {
        actions: every,
        ..DlpConfig::default()
    })
    .unwrap()
    .unwrap()
}

/// The alternative: each detector's regex run over the text in turn.
fn regex_loop(regexes: &[Regex], text: &str) -> usize {
    regexes
        .iter()
        .map(|r| r.find_iter(text.as_bytes()).count())
        .sum()
}

fn percentiles(name: &str, mut f: impl FnMut()) {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for _ in 0..1_000 {
        f();
    }
    let n = 200_000;
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let took = started.elapsed();
    println!(
        "{name:<40} p50 {:>8.2} µs  p99 {:>8.2} µs  p99.9 {:>8.2} µs  ({n} calls in {:.1} s)",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        took.as_secs_f64()
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (access, secret) = access(dir.path());
    let dlp = dlp();
    let policy = dlp.policy(&[]).unwrap();
    let regexes: Vec<Regex> = builtin_patterns()
        .map(|(_, p)| Regex::new(&p).unwrap())
        .collect();
    let clean = prompt(false);
    let dirty = prompt(true);

    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("access");
        g.bench_function("virtual_key_request", |b| {
            b.iter(|| request(&access, black_box(&secret)))
        });
        g.bench_function("master_key_authenticate", |b| {
            b.iter(|| access.authenticate(Some(black_box(MASTER))).unwrap())
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("dlp_4000_tokens");
        g.throughput(Throughput::Bytes(clean.len() as u64));
        for (name, text) in [("clean", &clean), ("with_findings", &dirty)] {
            g.bench_function(format!("regexset/{name}"), |b| {
                b.iter(|| {
                    let mut t = text.clone();
                    let mut out = Default::default();
                    dlp.scan(&mut t, &policy, &mut out);
                    black_box(t)
                })
            });
            // The clone is the regexset case's (it scans a String in
            // place), so both pay it.
            g.bench_function(format!("regex_loop/{name}"), |b| {
                b.iter(|| {
                    let t = text.clone();
                    black_box(regex_loop(&regexes, &t))
                })
            });
        }
        g.finish();
    }
    c.final_summary();

    println!("\nper call, {} bytes of prompt:", clean.len());
    percentiles("access: virtual key, full path", || {
        request(&access, &secret)
    });
    for (name, text) in [("clean", &clean), ("with findings", &dirty)] {
        percentiles(&format!("dlp regexset, {name}"), || {
            let mut t = text.clone();
            let mut out = Default::default();
            dlp.scan(&mut t, &policy, &mut out);
            black_box(t);
        });
        percentiles(&format!("dlp regex loop, {name}"), || {
            let t = text.clone();
            black_box(regex_loop(&regexes, &t));
        });
    }
    access.ledger.flush();
}
