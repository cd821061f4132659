//! A simulated inference engine, in the way vLLM and SGLang run: continuous
//! batching in steps, chunked prefill under a per-step token budget, a
//! KV-cache capacity that bounds what runs at once, and a prefix cache of
//! KV blocks keyed by block hash.
//!
//! Clock-agnostic: [`Engine::step`] is given the time a step starts and
//! returns how long it takes and what happened in it, stamped with its end.
//! Trace replay advances a virtual clock by that duration; `switchyard sim`
//! sleeps it. Each step:
//!
//! 1. admits waiting requests in arrival order while fewer than
//!    `max_running` run and the KV cache can hold the request's prompt and
//!    output (reserved whole at admission: no preemption). A request's
//!    leading prompt blocks already in the prefix cache are not prefilled
//!    again;
//! 2. gives every running request past its prefill one decode token, and
//!    the rest of the `max_step_tokens` budget to prefills, oldest first;
//! 3. lasts [`GpuProfile::step_seconds`] of its prefill tokens and of the
//!    KV cache it reads (every scheduled request's context).
//!
//! A request's first token comes at the end of the step that completes its
//! prefill; its prompt blocks are then in the prefix cache. As in vLLM, a
//! block in use by a running request is shared, not copied: it stays
//! cached while any request holds it, a request reserves KV only for what
//! it does not share, and blocks no request holds stay cached, least
//! recently used first out, in whatever capacity running requests leave.
//!
//! With a host-memory tier (`host_kv_tokens`, as LMCache or SGLang's
//! HiCache add to vLLM and SGLang), a block evicted from the GPU is kept in
//! host memory, least recently used first out. A request whose leading
//! blocks continue there loads them back instead of prefilling them: they
//! count as cached tokens, take GPU KV space like computed ones, and add
//! their copy time ([`GpuProfile::host_load_tokens_per_s`]) to the step
//! that admits the request (not overlapped with compute: conservative).

use std::collections::VecDeque;

use lru::LruCache;
use serde::Serialize;

use crate::profile::GpuProfile;

/// Tokens per prefix-cache block: Mooncake's trace hashes 512-token blocks.
pub const BLOCK_TOKENS: u32 = 512;

/// Prompt tokens served from the prefix cache when `blocks` leading blocks
/// of a `prompt`-token prompt are cached: at least one prompt token is
/// always computed, as engines do.
pub fn cached_prompt_tokens(blocks: usize, prompt: u32) -> u32 {
    (blocks as u64 * u64::from(BLOCK_TOKENS)).min(u64::from(prompt.saturating_sub(1))) as u32
}

/// An engine's settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub profile: GpuProfile,
    /// Most requests running at once (vLLM's `max_num_seqs`, 256).
    pub max_running: usize,
    /// Most tokens one step computes (vLLM's `max_num_batched_tokens`).
    pub max_step_tokens: u64,
    /// Reuse cached prompt blocks.
    pub prefix_cache: bool,
    /// Tokens of KV the host-memory tier holds (0: none).
    pub host_kv_tokens: u64,
}

impl EngineConfig {
    /// vLLM's defaults on `profile`: 256 sequences, 8,192 tokens a step,
    /// prefix caching on.
    pub fn new(profile: GpuProfile) -> Self {
        Self {
            profile,
            max_running: 256,
            max_step_tokens: 8192,
            prefix_cache: true,
            host_kv_tokens: 0,
        }
    }
}

/// One request as an engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u64,
    pub prompt_tokens: u32,
    /// Tokens it will generate (at least one).
    pub output_tokens: u32,
    /// Hashes of the prompt's [`BLOCK_TOKENS`]-token blocks, in order; equal
    /// leading hashes mean a shareable prefix. Empty: nothing shareable.
    pub blocks: Vec<u64>,
}

/// Why an engine refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("prompt and output ({0} tokens) exceed the KV cache ({1} tokens)")]
    TooLong(u64, u64),
    #[error("the prompt is empty")]
    Empty,
}

#[derive(Debug)]
struct Sequence {
    request: Request,
    /// Prompt tokens computed or found in the prefix cache.
    prefilled: u32,
    /// Prompt tokens found in the prefix cache at admission.
    cached: u32,
    generated: u32,
    /// KV tokens reserved at admission.
    reserved: u64,
    /// Blocks it holds a reference on.
    pinned: Vec<u64>,
}

/// What happened in one step, at its end.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Step {
    pub duration: f64,
    /// Requests whose first token came, with their prompt tokens served
    /// from the prefix cache.
    pub first_tokens: Vec<(u64, u32)>,
    /// Requests that got a later token.
    pub tokens: Vec<u64>,
    /// Requests that generated their last token (also in `first_tokens` or
    /// `tokens`).
    pub finished: Vec<u64>,
    pub prefill_tokens: u64,
    pub decode_tokens: u64,
    /// Prompt tokens copied back from the host-memory tier.
    pub host_loaded_tokens: u64,
}

/// Counters and gauges, as vLLM's `/metrics` reports them.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct EngineMetrics {
    pub running: usize,
    pub waiting: usize,
    /// Share of the KV cache reserved by running requests, 0 to 1.
    pub kv_usage: f64,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    /// Prompt tokens looked up in / found in the prefix cache.
    pub prefix_queries_total: u64,
    pub prefix_hits_total: u64,
    /// Of those hits, tokens loaded from the host-memory tier.
    pub host_hits_total: u64,
    pub requests_finished_total: u64,
    /// Seconds spent in steps.
    pub busy_seconds_total: f64,
}

/// A simulated engine on one GPU.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    kv_reserved: u64,
    /// Cached blocks held by running requests, with their holders' count.
    held: std::collections::HashMap<u64, u32>,
    /// Cached blocks no request holds, least recently used first out.
    prefix: LruCache<u64, ()>,
    /// Blocks evicted to host memory, least recently used first out.
    host: LruCache<u64, ()>,
    /// Tokens to load from host memory in the next step.
    host_loading: u64,
    metrics: EngineMetrics,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            waiting: VecDeque::new(),
            running: Vec::new(),
            kv_reserved: 0,
            held: std::collections::HashMap::new(),
            prefix: LruCache::unbounded(),
            host: LruCache::unbounded(),
            host_loading: 0,
            metrics: EngineMetrics::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Queues `request`, or refuses one that could never run.
    pub fn submit(&mut self, request: Request) -> Result<(), Refused> {
        if request.prompt_tokens == 0 {
            return Err(Refused::Empty);
        }
        let need = u64::from(request.prompt_tokens) + u64::from(request.output_tokens.max(1));
        let capacity = self.config.profile.kv_capacity_tokens;
        if need > capacity {
            return Err(Refused::TooLong(need, capacity));
        }
        self.waiting.push_back(Sequence {
            request,
            prefilled: 0,
            cached: 0,
            generated: 0,
            reserved: need,
            pinned: Vec::new(),
        });
        Ok(())
    }

    /// Nothing waiting or running.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    pub fn metrics(&self) -> EngineMetrics {
        EngineMetrics {
            running: self.running.len(),
            waiting: self.waiting.len(),
            kv_usage: self.kv_reserved as f64 / self.config.profile.kv_capacity_tokens as f64,
            ..self.metrics.clone()
        }
    }

    /// Leading `blocks` in the prefix cache now (without touching them).
    pub fn cached_blocks(&self, blocks: &[u64]) -> usize {
        if !self.config.prefix_cache {
            return 0;
        }
        blocks
            .iter()
            .take_while(|b| self.held.contains_key(b) || self.prefix.contains(b))
            .count()
    }

    /// Of `blocks` after the first `from`, how many lead in the host tier.
    pub fn host_blocks(&self, blocks: &[u64], from: usize) -> usize {
        if !self.config.prefix_cache {
            return 0;
        }
        blocks
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| self.host.contains(b))
            .count()
    }

    /// Runs one step; `None` when there is nothing to do. The caller owns
    /// the clock: the step's events happen `duration` after it starts.
    pub fn step(&mut self) -> Option<Step> {
        self.admit();
        if self.running.is_empty() {
            return None;
        }
        let mut step = Step::default();
        let mut budget = self.config.max_step_tokens;
        let mut kv_read = 0u64;
        // Decodes first, one token each.
        for s in &self.running {
            if s.prefilled == s.request.prompt_tokens {
                budget = budget.saturating_sub(1);
                step.decode_tokens += 1;
                kv_read += u64::from(s.prefilled + s.generated);
            }
        }
        // Prefill chunks, oldest first, in what is left.
        let mut completed_prefill = Vec::new();
        for (i, s) in self.running.iter_mut().enumerate() {
            if budget == 0 {
                break;
            }
            let left = s.request.prompt_tokens - s.prefilled;
            if left == 0 {
                continue;
            }
            let chunk = u64::from(left).min(budget) as u32;
            s.prefilled += chunk;
            budget -= u64::from(chunk);
            step.prefill_tokens += u64::from(chunk);
            kv_read += u64::from(s.prefilled);
            if s.prefilled == s.request.prompt_tokens {
                completed_prefill.push(i);
            }
        }
        step.host_loaded_tokens = std::mem::take(&mut self.host_loading);
        step.duration = self
            .config
            .profile
            .step_seconds(step.prefill_tokens, kv_read)
            + step.host_loaded_tokens as f64 / self.config.profile.host_load_tokens_per_s;
        // Tokens come at the end of the step.
        for s in &mut self.running {
            if s.prefilled < s.request.prompt_tokens {
                continue;
            }
            s.generated += 1;
            if s.generated == 1 {
                step.first_tokens.push((s.request.id, s.cached));
            } else {
                step.tokens.push(s.request.id);
            }
            if s.generated >= s.request.output_tokens.max(1) {
                step.finished.push(s.request.id);
            }
        }
        if self.config.prefix_cache {
            for &i in &completed_prefill {
                let s = &mut self.running[i];
                for &b in &s.request.blocks[s.pinned.len()..] {
                    self.prefix.pop(&b);
                    self.host.pop(&b);
                    *self.held.entry(b).or_insert(0) += 1;
                    s.pinned.push(b);
                }
            }
        }
        let (finished, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|s| s.generated >= s.request.output_tokens.max(1));
        self.running = running;
        for s in &finished {
            self.kv_reserved -= s.reserved;
            for b in &s.pinned {
                if let Some(n) = self.held.get_mut(b) {
                    *n -= 1;
                    if *n == 0 {
                        self.held.remove(b);
                        self.prefix.put(*b, ());
                    }
                }
            }
        }
        self.trim_prefix_cache();
        let m = &mut self.metrics;
        m.generation_tokens_total += (step.first_tokens.len() + step.tokens.len()) as u64;
        m.requests_finished_total += finished.len() as u64;
        m.busy_seconds_total += step.duration;
        Some(step)
    }

    /// Moves waiting requests to running while the batch and the KV cache
    /// have room, in arrival order.
    fn admit(&mut self) {
        let capacity = self.config.profile.kv_capacity_tokens;
        while self.running.len() < self.config.max_running {
            let Some(front) = self.waiting.front() else {
                break;
            };
            // Shared blocks are not stored twice; blocks loaded from host
            // memory take GPU space like computed ones.
            let prompt = front.request.prompt_tokens;
            let blocks = self.cached_blocks(&front.request.blocks);
            let on_gpu = cached_prompt_tokens(blocks, prompt);
            let loaded = self.host_blocks(&front.request.blocks, blocks);
            let cached = cached_prompt_tokens(blocks + loaded, prompt);
            let reserve = front.reserved - u64::from(on_gpu);
            if self.kv_reserved + reserve > capacity {
                break;
            }
            let Some(mut s) = self.waiting.pop_front() else {
                break;
            };
            for &b in &s.request.blocks[..blocks + loaded] {
                self.prefix.pop(&b);
                self.host.pop(&b);
                *self.held.entry(b).or_insert(0) += 1;
                s.pinned.push(b);
            }
            let from_host = u64::from(cached - on_gpu);
            self.host_loading += from_host;
            s.prefilled = cached;
            s.cached = cached;
            s.reserved = reserve;
            self.kv_reserved += s.reserved;
            self.metrics.prompt_tokens_total += u64::from(prompt);
            self.metrics.prefix_queries_total += u64::from(prompt);
            self.metrics.prefix_hits_total += u64::from(cached);
            self.metrics.host_hits_total += from_host;
            self.running.push(s);
        }
    }

    /// Evicts unheld blocks, least recently used first, beyond what running
    /// requests leave.
    fn trim_prefix_cache(&mut self) {
        let free = self
            .config
            .profile
            .kv_capacity_tokens
            .saturating_sub(self.kv_reserved);
        let most = (free / u64::from(BLOCK_TOKENS)) as usize;
        let host_most = (self.config.host_kv_tokens / u64::from(BLOCK_TOKENS)) as usize;
        while self.prefix.len() > most {
            if let Some((b, ())) = self.prefix.pop_lru()
                && host_most > 0
            {
                self.host.put(b, ());
            }
        }
        while self.host.len() > host_most {
            self.host.pop_lru();
        }
    }
}

#[cfg(test)]
mod tests;
