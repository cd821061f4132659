//! What the gateway itself knows of a local backend: the requests it sent
//! there and how far each has got, the prompt prefixes it sent (to guess
//! what the engine's prefix cache holds), and service rates learned from
//! the first tokens it saw. Placement reads its [`BackendLedger::view`];
//! live serving and trace replay keep it the same way.
//!
//! The engine's own request counts (vLLM's `num_requests_running` and
//! `num_requests_waiting`, scraped by the gateway) correct the ledger for
//! traffic that reaches the engine some other way (another gateway, a
//! direct client): requests beyond the ledger's own are counted as
//! *foreign*, each taken to look like this backend's typical request. A
//! foreign request waiting is a whole typical prompt still to prefill; a
//! foreign request running is taken to be decoding (a request spends most
//! of its time there: a 1,000-token prompt prefills in a quarter of a
//! second on an L4, its 200 output tokens take 16 s).

use std::collections::HashMap;

use lru::LruCache;

use crate::engine::BLOCK_TOKENS;
use crate::placement::{Backend, Health, Job, estimate_ttft, uncached_tokens};
use crate::profile::GpuProfile;

/// Weight of a new observation in the learned slowness factor.
const LEARN_RATE: f64 = 0.1;
/// Bounds of the learned factor: a backend is believed at most 4× faster or
/// slower than its profile.
const SLOWNESS_BOUNDS: (f64, f64) = (0.25, 4.0);
/// Weight of a new request in the typical request's size.
const TYPICAL_RATE: f64 = 0.1;

/// A backend's typical request, smoothed over what was sent to it.
#[derive(Debug, Clone, Copy)]
struct Typical {
    /// Prompt tokens computed (less the prefix cache).
    uncached: f64,
    /// Prompt tokens.
    context: f64,
}

/// Requests at the engine that the ledger did not send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Foreign {
    pub running: u32,
    pub waiting: u32,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// Prompt tokens the engine must compute (less the expected prefix).
    uncached: u64,
    context: u64,
    /// KV tokens the engine reserves for it: prompt and expected output.
    reserved: u64,
    expected_output: u32,
    generated: u32,
    first_token: bool,
    /// Predicted seconds to the first token, and when it was sent.
    predicted_ttft: f64,
    sent_at: f64,
}

/// One backend's ledger.
#[derive(Debug)]
pub struct BackendLedger {
    pub name: String,
    pub models: Vec<String>,
    pub health: Health,
    pub permits: u32,
    pub max_step_tokens: u64,
    pub gpu_hour_usd: f64,
    profile: GpuProfile,
    /// Observed TTFT over predicted, smoothed: >1 when slower than the
    /// profile says.
    slowness: f64,
    in_flight: HashMap<u64, InFlight>,
    pending_prefill: u64,
    decoding: u32,
    context_tokens: u64,
    kv_reserved: u64,
    /// Prefix blocks recently sent here, most recent first out last.
    prefixes: LruCache<u64, ()>,
    prefix_capacity: usize,
    /// The engine's latest (running, waiting) counts; `None` when unknown.
    engine_counts: Option<(u32, u32)>,
    typical: Option<Typical>,
}

impl BackendLedger {
    pub fn new(
        name: impl Into<String>,
        models: Vec<String>,
        profile: GpuProfile,
        permits: u32,
        gpu_hour_usd: f64,
    ) -> Self {
        let prefix_capacity = (profile.kv_capacity_tokens / u64::from(BLOCK_TOKENS)) as usize;
        Self {
            name: name.into(),
            models,
            health: Health::Healthy,
            permits,
            max_step_tokens: 8192,
            gpu_hour_usd,
            profile,
            slowness: 1.0,
            in_flight: HashMap::new(),
            pending_prefill: 0,
            decoding: 0,
            context_tokens: 0,
            kv_reserved: 0,
            prefixes: LruCache::unbounded(),
            prefix_capacity,
            engine_counts: None,
            typical: None,
        }
    }

    /// The engine keeps evicted KV blocks in a host-memory tier of `tokens`:
    /// the blocks sent here are remembered that much longer. (A block
    /// loaded back from host memory is counted as free, like one on the
    /// GPU: its copy takes about a tenth of recomputing it.)
    pub fn with_host_kv_tokens(mut self, tokens: u64) -> Self {
        self.prefix_capacity += (tokens / u64::from(BLOCK_TOKENS)) as usize;
        self
    }

    /// Leading `blocks` this backend is believed to hold.
    pub fn cached_blocks(&self, blocks: &[u64]) -> usize {
        blocks
            .iter()
            .take_while(|b| self.prefixes.contains(b))
            .count()
    }

    /// What placement sees, for `job`: the ledger's own requests and the
    /// [`foreign`](Self::foreign) ones, sized like a typical request here
    /// (like `job` until one was sent).
    pub fn view(&self, job: &Job<'_>) -> Backend<'_> {
        let cached_blocks = self.cached_blocks(job.blocks);
        let foreign = self.foreign();
        let typical = self.typical.unwrap_or_else(|| {
            let prompt = u64::from(job.prompt_tokens);
            Typical {
                uncached: prompt.saturating_sub(cached_blocks as u64 * u64::from(BLOCK_TOKENS))
                    as f64,
                context: prompt as f64,
            }
        });
        let foreign_all = foreign.running + foreign.waiting;
        Backend {
            name: &self.name,
            models: &self.models,
            health: self.health,
            in_flight: self.in_flight.len() as u32 + foreign_all,
            permits: self.permits,
            pending_prefill: self.pending_prefill
                + (f64::from(foreign.waiting) * typical.uncached).round() as u64,
            decoding: self.decoding + foreign.running,
            context_tokens: self.context_tokens
                + (f64::from(foreign_all) * typical.context).round() as u64,
            prefill_tokens_per_s: self.profile.prefill_tokens_per_s / self.slowness,
            step_base_s: self.profile.step_base_s * self.slowness,
            per_kv_token_s: self.profile.per_kv_token_s * self.slowness,
            max_step_tokens: self.max_step_tokens,
            gpu_hour_usd: self.gpu_hour_usd,
            cached_blocks,
            admission_wait_s: self.admission_wait(job),
        }
    }

    /// The engine's own counts of requests running and waiting, from its
    /// metrics; `None` when they are unknown (not scraped, unreadable), so
    /// the ledger counts only its own.
    pub fn engine_counts(&mut self, counts: Option<(u32, u32)>) {
        self.engine_counts = counts;
    }

    /// Requests the engine reports beyond those the ledger sent: the excess
    /// of its waiting count over the ledger's requests awaiting a first
    /// token is waiting, the rest of the excess running. Zero when the
    /// engine reports fewer (a request just sent, not yet arrived).
    pub fn foreign(&self) -> Foreign {
        let Some((running, waiting)) = self.engine_counts else {
            return Foreign::default();
        };
        let ours = self.in_flight.len() as u32;
        let all = (running + waiting).saturating_sub(ours);
        let waiting = waiting.saturating_sub(ours - self.decoding).min(all);
        Foreign {
            running: all - waiting,
            waiting,
        }
    }

    /// Seconds until the engine's KV cache has room for `job` (prompt and
    /// expected output): nothing when it fits now; else until enough of
    /// what is in flight finishes, soonest to finish first, at the current
    /// decode step time; infinite when it can never fit.
    fn admission_wait(&self, job: &Job<'_>) -> f64 {
        let capacity = self.profile.kv_capacity_tokens;
        let need = u64::from(job.prompt_tokens) + u64::from(job.output_tokens.max(1));
        if need > capacity {
            return f64::INFINITY;
        }
        if self.kv_reserved + need <= capacity {
            return 0.0;
        }
        let mut finishing: Vec<(u32, u64)> = self
            .in_flight
            .values()
            .map(|f| {
                (
                    f.expected_output.saturating_sub(f.generated).max(1),
                    f.reserved,
                )
            })
            .collect();
        finishing.sort_unstable();
        let step = (self.profile.step_base_s
            + self.context_tokens as f64 * self.profile.per_kv_token_s)
            * self.slowness;
        let mut reserved = self.kv_reserved;
        for (remaining, freed) in finishing {
            reserved -= freed;
            if reserved + need <= capacity {
                return f64::from(remaining) * step;
            }
        }
        f64::INFINITY
    }

    /// Records `job` (request `id`) sent here at `now`.
    pub fn sent(&mut self, id: u64, job: &Job<'_>, now: f64) {
        let view = self.view(job);
        let predicted_ttft = estimate_ttft(job, &view);
        let uncached = uncached_tokens(job, &view);
        let context = u64::from(job.prompt_tokens);
        let reserved = context + u64::from(job.output_tokens.max(1));
        let seen = Typical {
            uncached: uncached as f64,
            context: context as f64,
        };
        self.typical = Some(match self.typical {
            None => seen,
            Some(t) => Typical {
                uncached: t.uncached + TYPICAL_RATE * (seen.uncached - t.uncached),
                context: t.context + TYPICAL_RATE * (seen.context - t.context),
            },
        });
        self.pending_prefill += uncached;
        self.context_tokens += context;
        self.kv_reserved += reserved;
        self.in_flight.insert(
            id,
            InFlight {
                uncached,
                context,
                reserved,
                expected_output: job.output_tokens,
                generated: 0,
                first_token: false,
                predicted_ttft,
                sent_at: now,
            },
        );
        for &b in job.blocks {
            self.prefixes.put(b, ());
        }
        while self.prefixes.len() > self.prefix_capacity {
            self.prefixes.pop_lru();
        }
    }

    /// Request `id`'s first token came at `now`: its prefill is done, and
    /// the gap between predicted and observed TTFT teaches the rates.
    pub fn first_token(&mut self, id: u64, now: f64) {
        let Some(f) = self.begin_decoding(id) else {
            return;
        };
        let observed = now - f.sent_at;
        if f.predicted_ttft > 0.0 && observed > 0.0 {
            let ratio = (observed / f.predicted_ttft).clamp(SLOWNESS_BOUNDS.0, SLOWNESS_BOUNDS.1);
            let learned = self.slowness * ratio;
            self.slowness = ((1.0 - LEARN_RATE) * self.slowness + LEARN_RATE * learned)
                .clamp(SLOWNESS_BOUNDS.0, SLOWNESS_BOUNDS.1);
        }
    }

    /// Request `id` is believed past its prefill without its first token
    /// having been seen (a non-streamed answer arrives whole): counted as
    /// decoding from now, without teaching the rates.
    pub fn first_token_unobserved(&mut self, id: u64) {
        self.begin_decoding(id);
    }

    /// Moves `id` from prefill to decoding, once; its entry as it was.
    fn begin_decoding(&mut self, id: u64) -> Option<InFlight> {
        let f = self.in_flight.get_mut(&id)?;
        if f.first_token {
            return None;
        }
        f.first_token = true;
        f.generated = 1;
        let f = *f;
        self.pending_prefill -= f.uncached;
        self.decoding += 1;
        Some(f)
    }

    /// Request `id` generated a token (its context grew by one).
    pub fn token(&mut self, id: u64) {
        if let Some(f) = self.in_flight.get_mut(&id) {
            f.context += 1;
            f.generated += 1;
            self.context_tokens += 1;
        }
    }

    /// Request `id` ended (finished, failed or cancelled).
    pub fn finished(&mut self, id: u64) {
        let Some(f) = self.in_flight.remove(&id) else {
            return;
        };
        if f.first_token {
            self.decoding -= 1;
        } else {
            self.pending_prefill -= f.uncached;
        }
        self.context_tokens = self.context_tokens.saturating_sub(f.context);
        self.kv_reserved -= f.reserved;
    }

    /// Requests sent and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Requests sent and still waiting for their first token.
    pub fn awaiting_first_token(&self) -> usize {
        self.in_flight.len() - self.decoding as usize
    }

    /// Observed over profile service time (1: as the profile says).
    pub fn slowness(&self) -> f64 {
        self.slowness
    }
}

/// An external deployment's typical time to first token, learned from the
/// streams it answers: the configured figure counts as one observation,
/// then the estimate is the running mean of all so far until that weighs
/// each new one less than [`LEARN_RATE`], and from then on a moving
/// average of that weight, so it follows a provider that slows down or
/// recovers. A mean, not a tail: it is compared with the SLO as the local
/// estimates are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExternalTtft {
    pub configured_s: f64,
    pub estimate_s: f64,
    /// Observations so far.
    pub samples: u64,
}

impl ExternalTtft {
    pub fn new(configured_s: f64) -> Self {
        Self {
            configured_s,
            estimate_s: configured_s,
            samples: 0,
        }
    }

    /// A stream's first chunk came `secs` after the request was sent.
    pub fn observe(&mut self, secs: f64) {
        if !secs.is_finite() || secs < 0.0 {
            return;
        }
        self.samples += 1;
        let weight = (1.0 / (self.samples as f64 + 1.0)).max(LEARN_RATE);
        self.estimate_s += weight * (secs - self.estimate_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Priority;

    fn job(prompt: u32, blocks: &[u64]) -> Job<'_> {
        Job {
            model: "m",
            prompt_tokens: prompt,
            output_tokens: 10,
            blocks,
            priority: Priority::Interactive,
        }
    }

    #[test]
    fn counts_follow_a_request_from_sent_to_finished() {
        let p = GpuProfile::named("h100").unwrap();
        let mut l = BackendLedger::new("b", vec!["m".into()], p, 8, 2.0);
        let blocks = [1, 2, 3];
        l.sent(1, &job(1600, &blocks), 0.0);
        let v = l.view(&job(1600, &blocks));
        assert_eq!((v.in_flight, v.pending_prefill, v.decoding), (1, 1600, 0));
        assert_eq!(v.cached_blocks, 3, "it remembers what it sent");
        l.sent(2, &job(1600, &blocks), 0.0);
        assert_eq!(l.view(&job(1, &[])).pending_prefill, 1600 + 64);
        l.first_token(1, 0.05);
        l.token(1);
        let v = l.view(&job(1, &[]));
        assert_eq!((v.in_flight, v.pending_prefill, v.decoding), (2, 64, 1));
        assert_eq!(v.context_tokens, 3201);
        l.finished(1);
        l.finished(2);
        l.finished(3);
        let v = l.view(&job(1, &[]));
        assert_eq!(
            (v.in_flight, v.pending_prefill, v.decoding, v.context_tokens),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn the_engines_own_counts_add_the_traffic_the_ledger_did_not_send() {
        let p = GpuProfile::named("l4").unwrap();
        let mut l = BackendLedger::new("b", vec!["m".into()], p, 64, 2.0);
        l.sent(1, &job(2000, &[]), 0.0);
        l.first_token(1, 0.6);
        let ours = estimate_ttft(&job(2000, &[]), &l.view(&job(2000, &[])));
        // The engine sees just ours: nothing foreign.
        l.engine_counts(Some((1, 0)));
        assert_eq!(l.foreign(), Foreign::default());
        assert_eq!(
            estimate_ttft(&job(2000, &[]), &l.view(&job(2000, &[]))),
            ours
        );
        // Or fewer (ours not arrived yet): nothing foreign either.
        l.engine_counts(Some((0, 0)));
        assert_eq!(l.foreign(), Foreign::default());
        // Four more running and four waiting that someone else sent: the
        // waiting ones are four typical prompts (2,000 tokens) to prefill
        // first, the running ones decoders.
        l.engine_counts(Some((5, 4)));
        assert_eq!(
            l.foreign(),
            Foreign {
                running: 4,
                waiting: 4
            }
        );
        let v = l.view(&job(2000, &[]));
        assert_eq!((v.in_flight, v.decoding, v.pending_prefill), (9, 5, 8000));
        assert_eq!(v.context_tokens, 2000 + 8 * 2000);
        let crowded = estimate_ttft(&job(2000, &[]), &v);
        // Their 8,000 tokens of prefill come first (less the half step
        // our estimate had for the decode step in progress).
        assert!(
            crowded > ours + 0.9 * 8000.0 / v.prefill_tokens_per_s,
            "{crowded} vs {ours}"
        );
        // Our own request waiting for its first token is one of the
        // engine's waiting ones, not a foreign one.
        l.sent(2, &job(2000, &[]), 1.0);
        l.engine_counts(Some((1, 1)));
        assert_eq!(l.foreign(), Foreign::default());
        // Unknown counts: the ledger alone.
        l.engine_counts(Some((9, 9)));
        l.engine_counts(None);
        assert_eq!(l.foreign(), Foreign::default());
    }

    #[test]
    fn an_external_ttft_moves_from_its_configured_figure_to_what_streams_show() {
        let mut t = ExternalTtft::new(0.2);
        t.observe(1.5);
        assert!((t.estimate_s - 0.85).abs() < 1e-12, "{t:?}");
        t.observe(1.5);
        // The mean of the prior and both: past a 1 s SLO after two.
        assert!((t.estimate_s - 3.2 / 3.0).abs() < 1e-12, "{t:?}");
        // Nonsense is ignored.
        t.observe(f64::NAN);
        t.observe(-1.0);
        assert_eq!(t.samples, 2);
        // A provider that recovers is followed, at the moving average's pace.
        for _ in 0..60 {
            t.observe(0.3);
        }
        assert!((t.estimate_s - 0.3).abs() < 0.01, "{t:?}");
        assert_eq!(t.configured_s, 0.2);
    }

    #[test]
    fn learns_that_a_backend_is_slower_than_its_profile() {
        let p = GpuProfile::named("a100").unwrap();
        let mut l = BackendLedger::new("b", vec!["m".into()], p, 8, 2.0);
        for id in 0..100 {
            let j = job(4000, &[]);
            let predicted = estimate_ttft(&j, &l.view(&j));
            let now = f64::from(id as u32) * 10.0;
            l.sent(id, &j, now);
            // The real engine takes three times what the profile says
            // (against what was predicted with the profile's rates).
            let truth = 3.0
                * estimate_ttft(
                    &j,
                    &BackendLedger::new("t", vec![], GpuProfile::named("a100").unwrap(), 8, 2.0)
                        .view(&j),
                );
            assert!(predicted > 0.0);
            l.first_token(id, now + truth);
            l.finished(id);
        }
        assert!((l.slowness() - 3.0).abs() < 0.1, "{}", l.slowness());
    }
}
