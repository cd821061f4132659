//! Rate limits: requests per minute, tokens per minute and requests in
//! flight, per scope (a key, a tenant), behind [`CounterStore`] so that a
//! shared store (Redis) can take the in-process one's place when several
//! gateways share limits.
//!
//! Windows slide: a request is admitted when fewer than `rpm` requests
//! were admitted in the 60 seconds before it, so no 60-second span ever
//! holds more than `rpm` admissions (fixed windows allow twice that
//! across a boundary). Tokens are reserved at admission from an estimate
//! and corrected when the answer's usage is known.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;

/// The window of `rpm` and `tpm`.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One scope's limits to check for a request.
#[derive(Debug, Clone)]
pub struct Check {
    /// `key:<id>` or `tenant:<name>`.
    pub scope: String,
    pub limits: LimitsConfig,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Requests,
    Tokens,
    Concurrency,
}

/// A refusal: the scope, the limit, and when a retry can succeed (`None`:
/// never, the request alone is over the limit).
#[derive(Debug, Clone)]
pub struct Denied {
    pub scope: String,
    pub limit: Limit,
    pub value: u64,
    pub retry_after: Option<Duration>,
}

/// What the client is told in `x-ratelimit-*` headers: the most
/// constrained scope's figures after this request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Remaining {
    /// (limit, remaining, time until the oldest admission leaves the window).
    pub requests: Option<(u64, u64, Duration)>,
    pub tokens: Option<(u64, u64, Duration)>,
}

/// An admitted request's hold on its scopes, handed back through
/// [`CounterStore::finish`].
#[derive(Debug)]
pub struct Grant {
    pub(crate) id: u64,
    /// The estimate it was admitted with.
    pub(crate) tokens: u64,
    pub(crate) scopes: Vec<String>,
    pub remaining: Remaining,
}

/// Counters shared by every request of a gateway (or, for a shared
/// implementation, of several gateways).
pub trait CounterStore: Send + Sync + std::fmt::Debug {
    /// Admit one request of `tokens` estimated tokens against every check,
    /// all or nothing.
    fn acquire(&self, checks: &[Check], tokens: u64, now: Instant) -> Result<Grant, Denied>;
    /// The request ended: release its concurrency slot and replace its
    /// token estimate by what it really used.
    fn finish(&self, grant: &Grant, actual_tokens: u64);
}

#[derive(Debug, Default)]
struct Window {
    /// Admission times within the window, oldest first.
    requests: VecDeque<Instant>,
    /// (admission time, grant id, tokens), oldest first.
    tokens: VecDeque<(Instant, u64, u64)>,
    token_sum: u64,
    in_flight: u64,
}

impl Window {
    fn expire(&mut self, now: Instant) {
        while self
            .requests
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.requests.pop_front();
        }
        while let Some(&(t, _, n)) = self.tokens.front() {
            if now.duration_since(t) < WINDOW {
                break;
            }
            self.token_sum -= n;
            self.tokens.pop_front();
        }
    }

    fn until_free(oldest: Option<Instant>, now: Instant) -> Duration {
        oldest.map_or(Duration::ZERO, |t| {
            (t + WINDOW).saturating_duration_since(now)
        })
    }

    /// Why this scope refuses `tokens` more, if it does.
    fn refuse(
        &self,
        limits: &LimitsConfig,
        tokens: u64,
        now: Instant,
    ) -> Option<(Limit, u64, Option<Duration>)> {
        if let Some(max) = limits.max_concurrent
            && self.in_flight >= u64::from(max)
        {
            return Some((
                Limit::Concurrency,
                u64::from(max),
                Some(Duration::from_secs(1)),
            ));
        }
        if let Some(rpm) = limits.rpm
            && self.requests.len() as u64 >= u64::from(rpm)
        {
            // The slot frees when the admission `rpm` back leaves the window.
            let i = self.requests.len() - rpm as usize;
            let at = self.requests.get(i).copied();
            return Some((
                Limit::Requests,
                u64::from(rpm),
                Some(Self::until_free(at, now)),
            ));
        }
        if let Some(tpm) = limits.tpm
            && self.token_sum + tokens > tpm
        {
            if tokens > tpm {
                return Some((Limit::Tokens, tpm, None));
            }
            // Wait until enough of the window's tokens have left it.
            let mut left = self.token_sum + tokens - tpm;
            let mut at = None;
            for &(t, _, n) in &self.tokens {
                at = Some(t);
                if n >= left {
                    break;
                }
                left -= n;
            }
            return Some((Limit::Tokens, tpm, Some(Self::until_free(at, now))));
        }
        None
    }
}

/// The in-process [`CounterStore`]: one map of sliding windows under one
/// lock (held for a few hundred nanoseconds per request).
#[derive(Debug, Default)]
pub struct MemoryCounters {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    windows: HashMap<String, Window>,
    next_id: u64,
}

impl CounterStore for MemoryCounters {
    fn acquire(&self, checks: &[Check], tokens: u64, now: Instant) -> Result<Grant, Denied> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for c in checks {
            let w = inner.windows.entry(c.scope.clone()).or_default();
            w.expire(now);
            if let Some((limit, value, retry_after)) = w.refuse(&c.limits, tokens, now) {
                return Err(Denied {
                    scope: c.scope.clone(),
                    limit,
                    value,
                    retry_after,
                });
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let mut remaining = Remaining::default();
        for c in checks {
            let w = inner.windows.entry(c.scope.clone()).or_default();
            w.requests.push_back(now);
            w.tokens.push_back((now, id, tokens));
            w.token_sum += tokens;
            w.in_flight += 1;
            if let Some(rpm) = c.limits.rpm {
                let left = u64::from(rpm).saturating_sub(w.requests.len() as u64);
                let reset = Window::until_free(w.requests.front().copied(), now);
                tighter(&mut remaining.requests, (u64::from(rpm), left, reset));
            }
            if let Some(tpm) = c.limits.tpm {
                let left = tpm.saturating_sub(w.token_sum);
                let reset = Window::until_free(w.tokens.front().map(|t| t.0), now);
                tighter(&mut remaining.tokens, (tpm, left, reset));
            }
        }
        Ok(Grant {
            id,
            tokens,
            scopes: checks.iter().map(|c| c.scope.clone()).collect(),
            remaining,
        })
    }

    fn finish(&self, grant: &Grant, actual_tokens: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for scope in &grant.scopes {
            let Some(w) = inner.windows.get_mut(scope) else {
                continue;
            };
            w.in_flight = w.in_flight.saturating_sub(1);
            // Still in the window: correct the estimate in place.
            if let Ok(i) = w.tokens.binary_search_by_key(&grant.id, |t| t.1) {
                let entry = &mut w.tokens[i];
                w.token_sum = w.token_sum - entry.2 + actual_tokens;
                entry.2 = actual_tokens;
            }
            if w.in_flight == 0 && w.requests.is_empty() && w.tokens.is_empty() {
                inner.windows.remove(scope);
            }
        }
    }
}

fn tighter(slot: &mut Option<(u64, u64, Duration)>, new: (u64, u64, Duration)) {
    if slot.is_none_or(|old| new.1 < old.1) {
        *slot = Some(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(scope: &str, limits: LimitsConfig) -> Check {
        Check {
            scope: scope.into(),
            limits,
        }
    }

    #[test]
    fn requests_slide_rather_than_reset() {
        let store = MemoryCounters::default();
        let limits = LimitsConfig {
            rpm: Some(3),
            ..Default::default()
        };
        let c = [check("key:a", limits)];
        let t0 = Instant::now();
        for i in 0..3 {
            let g = store
                .acquire(&c, 1, t0 + Duration::from_secs(i * 10))
                .unwrap();
            assert_eq!(g.remaining.requests.unwrap().1, 2 - i);
            store.finish(&g, 1);
        }
        let d = store
            .acquire(&c, 1, t0 + Duration::from_secs(59))
            .unwrap_err();
        assert_eq!(d.limit, Limit::Requests);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        // The first admission has left the window one minute after it.
        store.acquire(&c, 1, t0 + Duration::from_secs(60)).unwrap();
        store
            .acquire(&c, 1, t0 + Duration::from_secs(65))
            .unwrap_err();
    }

    #[test]
    fn tokens_are_reserved_then_corrected() {
        let store = MemoryCounters::default();
        let limits = LimitsConfig {
            tpm: Some(1_000),
            ..Default::default()
        };
        let c = [check("tenant:t", limits)];
        let now = Instant::now();
        let g = store.acquire(&c, 900, now).unwrap();
        assert_eq!(
            store.acquire(&c, 200, now).unwrap_err().limit,
            Limit::Tokens
        );
        // It used far less than estimated: the rest is free again.
        store.finish(&g, 100);
        let g2 = store.acquire(&c, 800, now).unwrap();
        assert_eq!(g2.remaining.tokens.unwrap().1, 100);
        // Alone over the limit: no retry can succeed.
        let d = store.acquire(&c, 5_000, now).unwrap_err();
        assert_eq!(d.retry_after, None);
    }

    #[test]
    fn concurrency_is_held_until_finish_and_checks_are_all_or_nothing() {
        let store = MemoryCounters::default();
        let key = check(
            "key:a",
            LimitsConfig {
                max_concurrent: Some(1),
                ..Default::default()
            },
        );
        let tenant = check(
            "tenant:t",
            LimitsConfig {
                rpm: Some(10),
                ..Default::default()
            },
        );
        let now = Instant::now();
        let g = store
            .acquire(&[tenant.clone(), key.clone()], 0, now)
            .unwrap();
        let d = store
            .acquire(&[tenant.clone(), key.clone()], 0, now)
            .unwrap_err();
        assert_eq!((d.scope.as_str(), d.limit), ("key:a", Limit::Concurrency));
        // The refused request took nothing from the tenant's window.
        let g2 = store
            .acquire(std::slice::from_ref(&tenant), 0, now)
            .unwrap();
        assert_eq!(g2.remaining.requests.unwrap().1, 8);
        store.finish(&g, 0);
        store.acquire(&[tenant, key], 0, now).unwrap();
    }

    #[test]
    fn exact_under_contention() {
        let store = std::sync::Arc::new(MemoryCounters::default());
        let c = vec![check(
            "key:a",
            LimitsConfig {
                rpm: Some(37),
                ..Default::default()
            },
        )];
        let now = Instant::now();
        let admitted: usize = (0..8)
            .map(|_| {
                let (store, c) = (store.clone(), c.clone());
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| store.acquire(&c, 1, now).is_ok())
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(admitted, 37);
    }
}
