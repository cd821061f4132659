//! Trace replay: a request trace against simulated engines in virtual
//! time, placed by the real placement core or by a baseline, so policies
//! can be compared on the same arrivals in seconds.
//!
//! Reads the Azure LLM inference trace (CSV: `TIMESTAMP, ContextTokens,
//! GeneratedTokens`) and Mooncake's (JSONL: `timestamp` in ms,
//! `input_length`, `output_length`, `hash_ids`). Time advances from event
//! to event: the next arrival or the end of some engine's step. External
//! deployments answer after their configured TTFT and cost their catalog
//! price.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Price};
use crate::engine::{Engine, EngineConfig, Request, Step};
use crate::ledger::BackendLedger;
use crate::placement::{self, External, Job, Mode, Policy, Priority, Target};
use crate::profile::GpuProfile;

/// One request of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRequest {
    /// Seconds from the trace's first request.
    pub at: f64,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub blocks: Vec<u64>,
}

/// Reads a trace: `.csv` as Azure's, `.jsonl` as Mooncake's. Sorted by
/// arrival; times start at zero.
pub fn read_trace(path: &Path) -> Result<Vec<TraceRequest>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut trace = match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => parse_azure(&text),
        Some("jsonl") => parse_mooncake(&text),
        _ => Err("expected a .csv (Azure) or .jsonl (Mooncake) trace".to_owned()),
    }
    .map_err(|e| format!("{}: {e}", path.display()))?;
    trace.sort_by(|a, b| a.at.total_cmp(&b.at));
    if let Some(start) = trace.first().map(|r| r.at) {
        for r in &mut trace {
            r.at -= start;
        }
    }
    Ok(trace)
}

/// Azure's CSV: `2023-11-16 18:15:46.6805900,374,44`.
pub fn parse_azure(text: &str) -> Result<Vec<TraceRequest>, String> {
    #[derive(Deserialize)]
    struct Row {
        #[serde(rename = "TIMESTAMP")]
        timestamp: String,
        #[serde(rename = "ContextTokens")]
        context: u32,
        #[serde(rename = "GeneratedTokens")]
        generated: u32,
    }
    let mut out = Vec::new();
    for (i, row) in csv::Reader::from_reader(text.as_bytes())
        .deserialize::<Row>()
        .enumerate()
    {
        let line = i + 2;
        let row = row.map_err(|e| format!("line {line}: {e}"))?;
        let at: jiff::civil::DateTime = row
            .timestamp
            .replacen(' ', "T", 1)
            .parse()
            .map_err(|e| format!("line {line}: timestamp {:?}: {e}", row.timestamp))?;
        let seconds = at
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|e| format!("line {line}: {e}"))?
            .timestamp()
            .as_nanosecond() as f64
            / 1e9;
        out.push(TraceRequest {
            at: seconds,
            prompt_tokens: row.context.max(1),
            output_tokens: row.generated.max(1),
            blocks: Vec::new(),
        });
    }
    Ok(out)
}

/// Mooncake's JSONL: `{"timestamp": 0, "input_length": 6758,
/// "output_length": 500, "hash_ids": [0, 1, …]}`.
pub fn parse_mooncake(text: &str) -> Result<Vec<TraceRequest>, String> {
    #[derive(Deserialize)]
    struct Row {
        timestamp: f64,
        input_length: u32,
        output_length: u32,
        #[serde(default)]
        hash_ids: Vec<u64>,
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let row: Row = serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1))?;
            Ok(TraceRequest {
                at: row.timestamp / 1000.0,
                prompt_tokens: row.input_length.max(1),
                output_tokens: row.output_length.max(1),
                blocks: row.hash_ids,
            })
        })
        .collect()
}

/// A fleet to replay against (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// The model every trace request asks for.
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default)]
    pub gpus: Vec<GpuGroup>,
    #[serde(default)]
    pub externals: Vec<ExternalDeployment>,
    #[serde(default)]
    pub policy: PolicyConfig,
}

fn default_model() -> String {
    "llama-3.1-8b".into()
}

/// `count` simulated GPUs of one profile, one engine each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuGroup {
    pub profile: String,
    #[serde(default = "one")]
    pub count: usize,
    /// USD per GPU-hour (what it costs to own or rent).
    pub gpu_hour_usd: f64,
    /// Most requests in flight per engine (its permits); 256 by default.
    #[serde(default = "default_permits")]
    pub permits: u32,
    #[serde(default = "yes")]
    pub prefix_cache: bool,
    /// GB of host memory per engine for evicted KV blocks (0: none).
    #[serde(default)]
    pub host_kv_gb: f64,
}

fn one() -> usize {
    1
}
fn default_permits() -> u32 {
    256
}
fn yes() -> bool {
    true
}

/// An external deployment: a provider's model priced from the catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalDeployment {
    pub name: String,
    /// Provider as the catalog files it (`openai`, `together_ai`…).
    pub provider: String,
    /// The provider's model name, looked up in the catalog.
    pub model: String,
    /// Typical time to first token, seconds.
    pub ttft_s: f64,
    /// USD per million input / output tokens, instead of the catalog's.
    pub input_per_million: Option<f64>,
    pub output_per_million: Option<f64>,
}

/// The `switchyard` policy's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default = "default_mode")]
    pub mode: Mode,
    #[serde(default = "default_slo")]
    pub ttft_slo_s: f64,
    #[serde(default = "default_queue_wait")]
    pub max_queue_wait_s: f64,
    /// Placement aims under the SLO by this factor (0.8: plans for 80% of
    /// the SLO, leaving room for estimate error).
    #[serde(default = "default_headroom")]
    pub headroom: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: default_mode(),
            ttft_slo_s: default_slo(),
            max_queue_wait_s: default_queue_wait(),
            headroom: default_headroom(),
        }
    }
}

fn default_mode() -> Mode {
    Mode::PreferLocal
}
fn default_slo() -> f64 {
    2.0
}
fn default_queue_wait() -> f64 {
    60.0
}
fn default_headroom() -> f64 {
    0.8
}

/// How requests are placed in a replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// The placement core with the fleet's policy.
    Switchyard,
    /// Local only, backends in turn.
    RoundRobin,
    /// Local only, the backend with the fewest requests in flight.
    LeastLoaded,
    /// Everything to the cheapest external deployment.
    AlwaysExternal,
    /// Least-loaded local, unless more than `k` requests there await their
    /// first token: then the cheapest external.
    QueueThreshold(usize),
}

impl Strategy {
    pub fn name(&self) -> String {
        match self {
            Self::Switchyard => "switchyard".into(),
            Self::RoundRobin => "round-robin".into(),
            Self::LeastLoaded => "least-loaded".into(),
            Self::AlwaysExternal => "always-external".into(),
            Self::QueueThreshold(k) => format!("queue>{k}"),
        }
    }

    /// `switchyard`, `round-robin`, `least-loaded`, `always-external` or
    /// `queue:K`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "switchyard" => Ok(Self::Switchyard),
            "round-robin" => Ok(Self::RoundRobin),
            "least-loaded" => Ok(Self::LeastLoaded),
            "always-external" => Ok(Self::AlwaysExternal),
            _ => s
                .strip_prefix("queue:")
                .and_then(|k| k.parse().ok())
                .map(Self::QueueThreshold)
                .ok_or_else(|| {
                    format!(
                        "unknown policy `{s}` (switchyard, round-robin, least-loaded, \
                         always-external, queue:K)"
                    )
                }),
        }
    }
}

/// What a replay measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub policy: String,
    pub requests: usize,
    pub rejected: usize,
    pub local: usize,
    pub external: usize,
    pub ttft_p50_s: f64,
    pub ttft_p90_s: f64,
    pub ttft_p99_s: f64,
    /// Requests with a first token within the SLO, over all requests
    /// (rejections count as misses).
    pub slo_attainment: f64,
    pub external_spend_usd: f64,
    /// What the local GPUs cost for the replayed span.
    pub gpu_cost_usd: f64,
    /// Mean share of time the GPUs spent in steps.
    pub gpu_utilisation: f64,
    /// Prompt tokens served from prefix caches, over all local prompt tokens.
    pub prefix_hit_rate: f64,
    /// Output tokens per second of virtual time, all targets.
    pub output_tokens_per_s: f64,
    /// Virtual seconds from the first arrival to the last token.
    pub span_s: f64,
}

/// Replays `trace` (arrival times divided by `rate_scale`) on `fleet`.
pub fn replay(
    trace: &[TraceRequest],
    fleet: &Fleet,
    catalog: &Catalog,
    strategy: Strategy,
    rate_scale: f64,
) -> Result<Report, String> {
    let mut sim = Simulation::new(fleet, catalog)?;
    sim.run(trace, strategy, rate_scale);
    Ok(sim.report(&strategy.name(), trace.len()))
}

/// Output tokens expected of a request before any has finished.
const PRIOR_OUTPUT_TOKENS: u32 = 256;

struct Local {
    engine: Engine,
    ledger: BackendLedger,
    /// The step in progress and when it ends.
    step: Option<(f64, Step)>,
}

struct Ext {
    name: String,
    models: Vec<String>,
    price: Price,
    ttft_s: f64,
}

struct Simulation<'f> {
    fleet: &'f Fleet,
    locals: Vec<Local>,
    externals: Vec<Ext>,
    /// Arrival time and output tokens of each request, by id.
    arrivals: Vec<f64>,
    outputs: Vec<u32>,
    /// Output tokens of the requests seen to finish, and how many: what a
    /// live gateway learns. Placement expects their mean from a new
    /// request, not the trace's exact count (which it could not know).
    finished_output: (u64, u64),
    ttfts: Vec<f64>,
    rejected: usize,
    local: usize,
    external: usize,
    external_spend: f64,
    output_tokens: u64,
    end: f64,
    next_backend: usize,
}

impl<'f> Simulation<'f> {
    fn new(fleet: &'f Fleet, catalog: &Catalog) -> Result<Self, String> {
        let mut locals = Vec::new();
        for g in &fleet.gpus {
            let profile = GpuProfile::named(&g.profile).ok_or_else(|| {
                format!(
                    "unknown GPU profile `{}` (known: {})",
                    g.profile,
                    GpuProfile::NAMES.join(", ")
                )
            })?;
            for i in 0..g.count {
                let mut config = EngineConfig::new(profile.clone());
                config.prefix_cache = g.prefix_cache;
                config.max_running = g.permits as usize;
                let host = crate::profile::kv_tokens_in_gb(g.host_kv_gb)
                    .map_err(|e| format!("host_kv_gb: {e}"))?;
                config.host_kv_tokens = host;
                locals.push(Local {
                    engine: Engine::new(config),
                    ledger: BackendLedger::new(
                        format!("sim-{}-{i}", profile.name),
                        vec![fleet.model.clone()],
                        profile.clone(),
                        g.permits,
                        g.gpu_hour_usd,
                    )
                    .with_host_kv_tokens(host),
                    step: None,
                });
            }
        }
        let mut externals = Vec::new();
        for e in &fleet.externals {
            let catalogued = catalog.price(&e.provider, &e.model);
            let price = match (e.input_per_million, e.output_per_million, catalogued) {
                (Some(input), Some(output), _) => Price {
                    input,
                    output,
                    cached_input: input,
                    batch_input: input,
                    batch_output: output,
                },
                (None, None, Some(p)) => p,
                _ => {
                    return Err(format!(
                        "external `{}`: `{}/{}` is not in the price catalog; set both \
                         input_per_million and output_per_million",
                        e.name, e.provider, e.model
                    ));
                }
            };
            externals.push(Ext {
                name: e.name.clone(),
                models: vec![fleet.model.clone()],
                price,
                ttft_s: e.ttft_s,
            });
        }
        Ok(Self {
            fleet,
            locals,
            externals,
            arrivals: Vec::new(),
            outputs: Vec::new(),
            finished_output: (0, 0),
            ttfts: Vec::new(),
            rejected: 0,
            local: 0,
            external: 0,
            external_spend: 0.0,
            output_tokens: 0,
            end: 0.0,
            next_backend: 0,
        })
    }

    fn run(&mut self, trace: &[TraceRequest], strategy: Strategy, rate_scale: f64) {
        let scale = if rate_scale > 0.0 { rate_scale } else { 1.0 };
        let mut next = 0;
        loop {
            let step_end = self
                .locals
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.step.as_ref().map(|(t, _)| (i, *t)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let arrival = trace.get(next).map(|r| r.at / scale);
            match (step_end, arrival) {
                (Some((i, t)), a) if a.is_none_or(|a| t <= a) => self.end_step(i, t),
                (_, Some(at)) => {
                    self.arrive(next as u64, &trace[next], at, strategy);
                    next += 1;
                }
                _ => break,
            }
        }
    }

    /// Applies the events of backend `i`'s step ending at `t`, then starts
    /// its next step.
    fn end_step(&mut self, i: usize, t: f64) {
        let Some((_, step)) = self.locals[i].step.take() else {
            return;
        };
        let local = &mut self.locals[i];
        for &(id, _) in &step.first_tokens {
            self.ttfts.push(t - self.arrivals[id as usize]);
            local.ledger.first_token(id, t);
        }
        for &id in &step.tokens {
            local.ledger.token(id);
        }
        for &id in &step.finished {
            local.ledger.finished(id);
            self.finished_output.0 += u64::from(self.outputs[id as usize]);
            self.finished_output.1 += 1;
        }
        self.output_tokens += (step.first_tokens.len() + step.tokens.len()) as u64;
        self.end = self.end.max(t);
        local.step = local.engine.step().map(|s| (t + s.duration, s));
    }

    fn arrive(&mut self, id: u64, r: &TraceRequest, at: f64, strategy: Strategy) {
        debug_assert_eq!(self.arrivals.len() as u64, id);
        self.arrivals.push(at);
        self.outputs.push(r.output_tokens);
        self.end = self.end.max(at);
        let fleet = self.fleet;
        let expected_output = match self.finished_output {
            (_, 0) => PRIOR_OUTPUT_TOKENS,
            (sum, n) => (sum / n).max(1) as u32,
        };
        let job = Job {
            model: &fleet.model,
            prompt_tokens: r.prompt_tokens,
            output_tokens: expected_output,
            blocks: &r.blocks,
            priority: Priority::Interactive,
        };
        let target = self.choose(&job, strategy, at);
        match target {
            Target::Local { backend } => {
                let local = &mut self.locals[backend];
                let request = Request {
                    id,
                    prompt_tokens: r.prompt_tokens,
                    output_tokens: r.output_tokens,
                    blocks: r.blocks.clone(),
                };
                if local.engine.submit(request).is_err() {
                    self.rejected += 1;
                    return;
                }
                local.ledger.sent(id, &job, at);
                self.local += 1;
                if local.step.is_none() {
                    local.step = local.engine.step().map(|s| (at + s.duration, s));
                }
            }
            Target::External { deployment } => {
                self.finished_output.0 += u64::from(r.output_tokens);
                self.finished_output.1 += 1;
                let e = &self.externals[deployment];
                self.ttfts.push(e.ttft_s);
                self.external_spend += e.price.cost(
                    u64::from(r.prompt_tokens),
                    0,
                    u64::from(r.output_tokens),
                    false,
                );
                self.output_tokens += u64::from(r.output_tokens);
                self.external += 1;
            }
            Target::Defer | Target::Reject => self.rejected += 1,
        }
    }

    fn choose(&mut self, job: &Job<'_>, strategy: Strategy, now: f64) -> Target {
        let cheapest_external = || {
            self.externals
                .iter()
                .enumerate()
                .min_by(|a, b| {
                    let cost = |e: &Ext| e.price.cost(1000, 0, 200, false);
                    cost(a.1).total_cmp(&cost(b.1))
                })
                .map(|(deployment, _)| Target::External { deployment })
        };
        let least_loaded = || {
            self.locals
                .iter()
                .enumerate()
                .min_by_key(|(_, l)| l.ledger.in_flight())
                .map(|(i, _)| i)
        };
        match strategy {
            Strategy::Switchyard => {
                let p = &self.fleet.policy;
                let policy = Policy {
                    mode: p.mode,
                    ttft_slo_s: p.ttft_slo_s * p.headroom,
                    max_queue_wait_s: p.max_queue_wait_s,
                    allowed_external: &[],
                    budget_left_usd: None,
                    batch_idle_share: 0.25,
                    batch_overflow: false,
                    batch_price: false,
                };
                let views: Vec<placement::Backend<'_>> =
                    self.locals.iter().map(|l| l.ledger.view(job)).collect();
                let externals: Vec<External<'_>> = self
                    .externals
                    .iter()
                    .map(|e| External {
                        name: &e.name,
                        models: &e.models,
                        price: e.price,
                        ttft_s: e.ttft_s,
                    })
                    .collect();
                placement::place(job, &views, &externals, &policy, now).target
            }
            Strategy::RoundRobin => {
                if self.locals.is_empty() {
                    return Target::Reject;
                }
                let backend = self.next_backend % self.locals.len();
                self.next_backend += 1;
                Target::Local { backend }
            }
            Strategy::LeastLoaded => least_loaded()
                .map(|backend| Target::Local { backend })
                .unwrap_or(Target::Reject),
            Strategy::AlwaysExternal => cheapest_external().unwrap_or(Target::Reject),
            Strategy::QueueThreshold(k) => match least_loaded() {
                Some(b) if self.locals[b].ledger.awaiting_first_token() <= k => {
                    Target::Local { backend: b }
                }
                _ => cheapest_external()
                    .or_else(|| least_loaded().map(|backend| Target::Local { backend }))
                    .unwrap_or(Target::Reject),
            },
        }
    }

    fn report(&self, policy: &str, requests: usize) -> Report {
        let mut ttfts = self.ttfts.clone();
        ttfts.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if ttfts.is_empty() {
                0.0
            } else {
                ttfts[((ttfts.len() - 1) as f64 * p).round() as usize]
            }
        };
        let slo = self.fleet.policy.ttft_slo_s;
        let within = ttfts.iter().filter(|&&t| t <= slo).count();
        let span = self.end.max(f64::MIN_POSITIVE);
        let (busy, prompt, hits) = self.locals.iter().fold((0.0, 0, 0), |acc, l| {
            let m = l.engine.metrics();
            (
                acc.0 + m.busy_seconds_total,
                acc.1 + m.prompt_tokens_total,
                acc.2 + m.prefix_hits_total,
            )
        });
        let gpu_cost: f64 = self
            .fleet
            .gpus
            .iter()
            .map(|g| g.count as f64 * g.gpu_hour_usd * span / 3600.0)
            .sum();
        Report {
            policy: policy.to_owned(),
            requests,
            rejected: self.rejected,
            local: self.local,
            external: self.external,
            ttft_p50_s: pct(0.5),
            ttft_p90_s: pct(0.9),
            ttft_p99_s: pct(0.99),
            slo_attainment: if requests == 0 {
                1.0
            } else {
                within as f64 / requests as f64
            },
            external_spend_usd: self.external_spend,
            gpu_cost_usd: gpu_cost,
            gpu_utilisation: if self.locals.is_empty() {
                0.0
            } else {
                busy / (self.locals.len() as f64 * span)
            },
            prefix_hit_rate: if prompt == 0 {
                0.0
            } else {
                hits as f64 / prompt as f64
            },
            output_tokens_per_s: self.output_tokens as f64 / span,
            span_s: span,
        }
    }
}

/// The reports as a Markdown table.
pub fn table(reports: &[Report]) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "| policy | SLO attainment | TTFT p50 | p90 | p99 | local | external | rejected | external spend | GPU util | prefix hits | output tok/s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let _ = writeln!(
            out,
            "| {} | {:.2}% | {:.2} s | {:.2} s | {:.2} s | {} | {} | {} | ${:.2} | {:.0}% | {:.0}% | {:.0} |",
            r.policy,
            100.0 * r.slo_attainment,
            r.ttft_p50_s,
            r.ttft_p90_s,
            r.ttft_p99_s,
            r.local,
            r.external,
            r.rejected,
            r.external_spend_usd,
            100.0 * r.gpu_utilisation,
            100.0 * r.prefix_hit_rate,
            r.output_tokens_per_s,
        );
    }
    out
}

#[cfg(test)]
mod tests;
