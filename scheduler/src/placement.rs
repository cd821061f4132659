//! The placement core: one pure function of (job, fleet snapshot, policy,
//! now), so the live gateway and trace replay run the same decisions.
//!
//! For each local backend that serves the job's model and is not drained,
//! [`estimate_ttft`] predicts the job's time to first token from what is
//! ahead of it there: the rest of the engine step in progress, prompt
//! tokens sent and not yet prefilled, the decode work of what is running
//! (which shares every step), the prefix of this
//! prompt that backend already holds, and the backend's service rates
//! (profile figures scaled by a factor learned from observed first tokens).
//! A backend at its permit count (its batch width) takes nothing more.
//!
//! Then, by policy:
//!
//! - `prefer_local`: the local backend that meets the TTFT SLO at the least
//!   marginal cost; if none, the cheapest allowed external deployment; if
//!   none, the local backend with the earliest first token when that wait is
//!   within `max_queue_wait`, else a rejection.
//! - `cheapest`: as `prefer_local`, but an external deployment cheaper than
//!   the best local one is taken even when local could meet the SLO.
//! - `local_only`: never external.
//!
//! Batch jobs go only to a backend idle by the policy's threshold and are
//! deferred otherwise (the batch queue holds them), unless the policy says
//! the batch's deadline needs them elsewhere (`batch_overflow`): then the
//! cheapest allowed external deployment takes them (at its synchronous
//! price, which is what the gateway pays: it sends them through the
//! provider's ordinary API, not the provider's own batch API). A degraded backend
//! (throttling, correctable errors) is taken only when no healthy one meets
//! the SLO, and its estimate counts [`DEGRADED_PENALTY`] times; a drained
//! one (stale telemetry, XID errors) gets nothing.

use serde::Serialize;

use crate::catalog::Price;
use crate::engine::cached_prompt_tokens;

/// Interactive requests go before batch work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Interactive,
    Batch,
}

/// A request to place.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub model: &'a str,
    pub prompt_tokens: u32,
    /// Expected output tokens (`max_tokens`, or the route's typical length).
    pub output_tokens: u32,
    /// Prompt prefix block hashes (see [`crate::engine::BLOCK_TOKENS`]).
    pub blocks: &'a [u64],
    pub priority: Priority,
}

/// A backend's health, from its GPUs' telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    /// Throttling (thermal or power) or correctable errors: used, but its
    /// estimates count [`DEGRADED_PENALTY`] times.
    Degraded,
    /// Stale telemetry, XID errors, or an open circuit breaker: nothing new.
    Drained,
}

/// Local backends whose GPUs cost up to this factor of the cheapest's per
/// unit of work are ranked by TTFT instead.
pub const COST_TOLERANCE: f64 = 1.25;

/// How much worse a degraded backend's estimate counts.
pub const DEGRADED_PENALTY: f64 = 2.0;

/// What the gateway knows of one local backend when it places a job.
#[derive(Debug, Clone)]
pub struct Backend<'a> {
    pub name: &'a str,
    pub models: &'a [String],
    pub health: Health,
    /// Requests sent and not finished.
    pub in_flight: u32,
    /// Most requests in flight (its effective batch width).
    pub permits: u32,
    /// Prompt tokens sent and not yet answered by a first token (less what
    /// was expected from the prefix cache).
    pub pending_prefill: u64,
    /// Requests in flight past their first token (decoding).
    pub decoding: u32,
    /// Context tokens of everything in flight (what each step reads).
    pub context_tokens: u64,
    /// Prompt tokens per second, learned.
    pub prefill_tokens_per_s: f64,
    /// Seconds of a step with no KV cache read, learned.
    pub step_base_s: f64,
    /// Seconds per token of KV cache read in a step.
    pub per_kv_token_s: f64,
    /// Most tokens one engine step computes.
    pub max_step_tokens: u64,
    /// USD per GPU-hour of the GPUs behind it.
    pub gpu_hour_usd: f64,
    /// Leading blocks of this job's prompt it is believed to hold.
    pub cached_blocks: usize,
    /// Seconds before its KV cache has room for this job (0: room now;
    /// infinite: never).
    pub admission_wait_s: f64,
}

/// An external deployment the policy may overflow to.
#[derive(Debug, Clone)]
pub struct External<'a> {
    pub name: &'a str,
    pub models: &'a [String],
    pub price: Price,
    /// Typical time to first token, seconds (configured, then learned).
    pub ttft_s: f64,
}

/// Where work may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    PreferLocal,
    Cheapest,
    LocalOnly,
}

/// A model group's (and tenant's) placement policy.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub mode: Mode,
    /// Target time to first token, seconds.
    pub ttft_slo_s: f64,
    /// Longest a request may wait for a local backend before it is
    /// rejected instead.
    pub max_queue_wait_s: f64,
    /// External deployments allowed (by name); empty: all.
    pub allowed_external: &'a [String],
    /// USD the tenant may still spend; `None`: no budget.
    pub budget_left_usd: Option<f64>,
    /// A batch job runs locally only while the backend has fewer than this
    /// share of its permits in flight.
    pub batch_idle_share: f64,
    /// A batch job with no idle local backend goes to the cheapest allowed
    /// external deployment instead of waiting (its batch's deadline cannot
    /// be met locally; never in `local_only` mode).
    pub batch_overflow: bool,
    /// That overflow goes through the provider's own batch API: external
    /// deployments are compared at their batch prices.
    pub batch_price: bool,
}

/// Where a job goes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum Target {
    /// The index of the backend in the snapshot.
    Local { backend: usize },
    /// The index of the external deployment in the snapshot.
    External { deployment: usize },
    /// Not now: batch work waiting for idle capacity.
    Defer,
    /// Refused (the gateway answers 503 / 429).
    Reject,
}

/// Why, from a bounded set (used as a metric label and response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A local backend meets the SLO; the cheapest such.
    SloMetLocal,
    /// An external deployment is cheaper than any local one (`cheapest`).
    ExternalCheaper,
    /// No local backend meets the SLO; overflow to the cheapest external.
    Overflow,
    /// No local backend meets the SLO and none external may be used; queued
    /// on the earliest local one.
    QueuedLocal,
    /// The wait would exceed `max_queue_wait`.
    QueueFull,
    /// Nothing serves the model (or everything that does is drained).
    NoBackend,
    /// Batch work on an idle backend.
    BatchIdle,
    /// Batch work while no backend is idle.
    BatchDeferred,
    /// Batch work sent out because its deadline cannot be met locally.
    DeadlineOverflow,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SloMetLocal => "slo_met_local",
            Self::ExternalCheaper => "external_cheaper",
            Self::Overflow => "overflow",
            Self::QueuedLocal => "queued_local",
            Self::QueueFull => "queue_full",
            Self::NoBackend => "no_backend",
            Self::BatchIdle => "batch_idle",
            Self::BatchDeferred => "batch_deferred",
            Self::DeadlineOverflow => "deadline_overflow",
        }
    }
}

/// A placement and what it was based on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decision {
    pub target: Target,
    pub reason: Reason,
    /// Predicted time to first token, seconds (0 when rejected or deferred).
    pub ttft_s: f64,
    /// Predicted USD.
    pub cost_usd: f64,
}

/// Predicted seconds to this job's first token on `b`: any wait for KV
/// room, what is left of the step in progress, then its pending prompt
/// tokens and this job's uncached ones, computed `max_step_tokens` less the
/// decoders per step, each step reading the context of everything in
/// flight.
pub fn estimate_ttft(job: &Job<'_>, b: &Backend<'_>) -> f64 {
    let own = uncached_tokens(job, b);
    let per_step = b
        .max_step_tokens
        .saturating_sub(u64::from(b.decoding))
        .max(1);
    let work = b.pending_prefill + own;
    let steps = work.div_ceil(per_step).max(1);
    let compute = work as f64 / b.prefill_tokens_per_s;
    let reads = b.context_tokens + u64::from(job.prompt_tokens);
    let step_floor = steps as f64 * b.step_base_s;
    b.admission_wait_s
        + step_in_progress(b)
        + compute.max(step_floor)
        + steps as f64 * reads as f64 * b.per_kv_token_s
}

/// Expected seconds left of the step `b` is running when a job arrives.
/// An engine admits new work only between steps; while it only decodes, an
/// arrival at a random moment of a step of length `d` waits `d / 2` on
/// average. (With prompts pending, the step in progress is part of their
/// prefill, which the estimate already counts from now.)
fn step_in_progress(b: &Backend<'_>) -> f64 {
    if b.decoding == 0 || b.pending_prefill > 0 {
        return 0.0;
    }
    0.5 * (b.step_base_s + b.context_tokens as f64 * b.per_kv_token_s)
}

/// Prompt tokens `b` would compute for `job` (all but its cached prefix).
pub(crate) fn uncached_tokens(job: &Job<'_>, b: &Backend<'_>) -> u64 {
    u64::from(job.prompt_tokens - cached_prompt_tokens(b.cached_blocks, job.prompt_tokens))
}

/// Marginal USD of `job` on `b`: its GPU time priced by the hour. Prefill
/// time is the job's own; a decode step is shared by everything decoding,
/// so each token costs a step over the batch it joins.
pub fn local_cost(job: &Job<'_>, b: &Backend<'_>) -> f64 {
    let prefill = uncached_tokens(job, b) as f64 / b.prefill_tokens_per_s;
    let batch = f64::from(b.decoding + 1);
    let step = b.step_base_s + b.context_tokens as f64 * b.per_kv_token_s / batch;
    let decode = f64::from(job.output_tokens) * step / batch;
    (prefill + decode) * b.gpu_hour_usd / 3600.0
}

/// Places `job`. `_now` is part of the signature so callers in virtual time
/// and live pass their clock; the estimate itself needs only the snapshot.
pub fn place(
    job: &Job<'_>,
    backends: &[Backend<'_>],
    externals: &[External<'_>],
    policy: &Policy<'_>,
    _now: f64,
) -> Decision {
    let serving =
        |b: &Backend<'_>| b.health != Health::Drained && b.models.iter().any(|m| m == job.model);
    let penalty = |b: &Backend<'_>| {
        if b.health == Health::Degraded {
            DEGRADED_PENALTY
        } else {
            1.0
        }
    };
    if job.priority == Priority::Batch {
        let idle = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| serving(b) && b.health == Health::Healthy)
            .filter(|(_, b)| {
                f64::from(b.in_flight) < policy.batch_idle_share * f64::from(b.permits)
            })
            .map(|(i, b)| (i, estimate_ttft(job, b), local_cost(job, b)))
            .filter(|(_, ttft, _)| ttft.is_finite())
            .min_by(|x, y| x.1.total_cmp(&y.1));
        let overflow = || {
            if !policy.batch_overflow || policy.mode == Mode::LocalOnly {
                return None;
            }
            affordable_externals(job, externals, policy, policy.batch_price)
                .map(|(i, e, cost)| (i, e.ttft_s, cost))
                .min_by(|x, y| x.2.total_cmp(&y.2))
        };
        return match idle {
            Some((backend, ttft_s, cost_usd)) => Decision {
                target: Target::Local { backend },
                reason: Reason::BatchIdle,
                ttft_s,
                cost_usd,
            },
            None if let Some((deployment, ttft_s, cost_usd)) = overflow() => Decision {
                target: Target::External { deployment },
                reason: Reason::DeadlineOverflow,
                ttft_s,
                cost_usd,
            },
            None => Decision {
                target: Target::Defer,
                reason: Reason::BatchDeferred,
                ttft_s: 0.0,
                cost_usd: 0.0,
            },
        };
    }
    // (index, penalised TTFT, cost) of every local option with a free permit.
    let local: Vec<(usize, f64, f64)> = backends
        .iter()
        .enumerate()
        .filter(|(_, b)| serving(b) && b.in_flight < b.permits)
        .map(|(i, b)| (i, estimate_ttft(job, b) * penalty(b), local_cost(job, b)))
        .filter(|(_, ttft, _)| ttft.is_finite())
        .collect();
    // Healthy before degraded; then, among the backends whose GPUs do work
    // at most COST_TOLERANCE times dearer than the cheapest's, the earliest
    // first token. (A GPU is paid for by the hour, so an idle one's
    // marginal cost is not higher than a busy one's: spreading by TTFT is
    // what keeps every batch full without queueing on one.)
    let unit_cost = |i: usize| backends[i].gpu_hour_usd / backends[i].prefill_tokens_per_s;
    let degraded = |i: usize| backends[i].health == Health::Degraded;
    let meeting: Vec<(usize, f64, f64)> = local
        .iter()
        .copied()
        .filter(|&(_, ttft, _)| ttft <= policy.ttft_slo_s)
        .collect();
    let meets = [false, true].into_iter().find_map(|want_degraded| {
        let group = meeting.iter().filter(|x| degraded(x.0) == want_degraded);
        let cheapest = group
            .clone()
            .map(|x| unit_cost(x.0))
            .min_by(f64::total_cmp)?;
        group
            .filter(|x| unit_cost(x.0) <= cheapest * COST_TOLERANCE)
            .min_by(|x, y| x.1.total_cmp(&y.1).then(x.2.total_cmp(&y.2)))
            .copied()
    });
    let external = if policy.mode == Mode::LocalOnly {
        None
    } else {
        affordable_externals(job, externals, policy, false)
            .map(|(i, e, cost)| (i, e.ttft_s, cost))
            .min_by(|x, y| {
                // Meets the SLO first, then cost.
                (x.1 > policy.ttft_slo_s)
                    .cmp(&(y.1 > policy.ttft_slo_s))
                    .then(x.2.total_cmp(&y.2))
            })
    };
    let local_decision = |(backend, ttft_s, cost_usd): (usize, f64, f64), reason| Decision {
        target: Target::Local { backend },
        reason,
        ttft_s,
        cost_usd,
    };
    let external_decision = |(deployment, ttft_s, cost_usd): (usize, f64, f64), reason| Decision {
        target: Target::External { deployment },
        reason,
        ttft_s,
        cost_usd,
    };
    match (meets, external) {
        (Some(l), Some(e)) if policy.mode == Mode::Cheapest && e.2 < l.2 => {
            external_decision(e, Reason::ExternalCheaper)
        }
        (Some(l), _) => local_decision(l, Reason::SloMetLocal),
        (None, Some(e)) => external_decision(e, Reason::Overflow),
        (None, None) => {
            // Wait on the backend that answers first, if within the bound.
            let earliest = backends
                .iter()
                .enumerate()
                .filter(|(_, b)| serving(b))
                .map(|(i, b)| (i, estimate_ttft(job, b) * penalty(b), local_cost(job, b)))
                .filter(|(_, ttft, _)| ttft.is_finite())
                .min_by(|x, y| x.1.total_cmp(&y.1));
            match earliest {
                Some(l) if l.1 <= policy.max_queue_wait_s => local_decision(l, Reason::QueuedLocal),
                Some(_) => Decision {
                    target: Target::Reject,
                    reason: Reason::QueueFull,
                    ttft_s: 0.0,
                    cost_usd: 0.0,
                },
                None => Decision {
                    target: Target::Reject,
                    reason: Reason::NoBackend,
                    ttft_s: 0.0,
                    cost_usd: 0.0,
                },
            }
        }
    }
}

/// External deployments that serve `job`'s model and the policy allows.
fn allowed_externals<'e, 'a>(
    job: &'e Job<'_>,
    externals: &'e [External<'a>],
    policy: &'e Policy<'_>,
) -> impl Iterator<Item = (usize, &'e External<'a>)> + 'e {
    externals
        .iter()
        .enumerate()
        .filter(|(_, e)| e.models.iter().any(|m| m == job.model))
        .filter(|(_, e)| {
            policy.allowed_external.is_empty()
                || policy.allowed_external.iter().any(|a| a == e.name)
        })
}

/// [`allowed_externals`] whose cost for `job` (`batch`: at batch prices)
/// fits the policy's budget, with that cost. Placement picks among these;
/// the gateway also uses them as its fallbacks after an error.
pub fn affordable_externals<'e, 'a>(
    job: &'e Job<'_>,
    externals: &'e [External<'a>],
    policy: &'e Policy<'_>,
    batch: bool,
) -> impl Iterator<Item = (usize, &'e External<'a>, f64)> + 'e {
    allowed_externals(job, externals, policy)
        .map(move |(i, e)| (i, e, external_cost(job, e, batch)))
        .filter(|&(_, _, cost)| policy.budget_left_usd.is_none_or(|left| cost <= left))
}

/// USD of `job` on external `e`, through its ordinary (synchronous) API
/// or its batch API.
fn external_cost(job: &Job<'_>, e: &External<'_>, batch: bool) -> f64 {
    e.price.cost(
        u64::from(job.prompt_tokens),
        0,
        u64::from(job.output_tokens),
        batch,
    )
}

#[cfg(test)]
mod tests;
