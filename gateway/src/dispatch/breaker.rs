//! A circuit breaker per deployment: opens after `failure_threshold`
//! consecutive failed attempts, lets one probe through after `open_ms`
//! (half-open), closes on the probe's success and reopens on its failure.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is out; it started at `since`. A probe that never reports
    /// (its client went away) is replaced after `open_ms`.
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive_failures: u32,
}

/// Whether an attempt may go to the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Allowed as the half-open probe.
    Probe,
    /// Breaker open; it may let a probe through after this long.
    Rejected {
        retry_in: Duration,
    },
}

/// What the admin API shows.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerSnapshot {
    pub state: &'static str,
    pub consecutive_failures: u32,
    /// Milliseconds until a probe is let through, while open.
    pub reopens_in_ms: Option<u64>,
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

/// A state change worth logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open_for(&self) -> Duration {
        Duration::from_millis(self.config.open_ms)
    }

    pub fn admit(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        match inner.state {
            State::Closed => Admission::Allowed,
            State::Open { until } if now < until => Admission::Rejected {
                retry_in: until - now,
            },
            State::HalfOpen { since } if now < since + self.open_for() => Admission::Rejected {
                retry_in: since + self.open_for() - now,
            },
            State::Open { .. } | State::HalfOpen { .. } => {
                inner.state = State::HalfOpen { since: now };
                Admission::Probe
            }
        }
    }

    pub fn on_success(&self) -> Option<Transition> {
        let mut inner = self.lock();
        inner.consecutive_failures = 0;
        match inner.state {
            State::Closed => None,
            _ => {
                inner.state = State::Closed;
                Some(Transition::Closed)
            }
        }
    }

    pub fn on_failure(&self, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let open = match inner.state {
            State::Closed => inner.consecutive_failures >= self.config.failure_threshold,
            State::HalfOpen { .. } => true,
            State::Open { .. } => false,
        };
        if open {
            inner.state = State::Open {
                until: now + self.open_for(),
            };
            Some(Transition::Opened)
        } else {
            None
        }
    }

    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let inner = self.lock();
        let (state, reopens_in) = match inner.state {
            State::Closed => ("closed", None),
            State::Open { until } => ("open", Some(until.saturating_duration_since(now))),
            State::HalfOpen { .. } => ("half_open", None),
        };
        BreakerSnapshot {
            state,
            consecutive_failures: inner.consecutive_failures,
            reopens_in_ms: reopens_in.map(|d| d.as_millis() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 2,
            open_ms: 1_000,
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_open_period() {
        let b = breaker();
        let t0 = Instant::now();
        assert_eq!(b.admit(t0), Admission::Allowed);
        assert_eq!(b.on_failure(t0), None);
        assert_eq!(b.on_failure(t0), Some(Transition::Opened));
        assert!(matches!(b.admit(t0), Admission::Rejected { .. }));
        let later = t0 + Duration::from_millis(1_001);
        assert_eq!(b.admit(later), Admission::Probe);
        // While the probe is out, others are refused.
        assert!(matches!(b.admit(later), Admission::Rejected { .. }));
        assert_eq!(b.on_success(), Some(Transition::Closed));
        assert_eq!(b.admit(later), Admission::Allowed);
    }

    #[test]
    fn failed_probe_reopens_and_success_resets_count() {
        let b = breaker();
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_success();
        assert_eq!(b.on_failure(t0), None, "count restarts after a success");
        b.on_failure(t0);
        let later = t0 + Duration::from_millis(1_500);
        assert_eq!(b.admit(later), Admission::Probe);
        assert_eq!(b.on_failure(later), Some(Transition::Opened));
        assert!(matches!(b.admit(later), Admission::Rejected { .. }));
    }

    #[test]
    fn abandoned_probe_is_replaced_after_open_period() {
        let b = breaker();
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_failure(t0);
        let t1 = t0 + Duration::from_millis(1_001);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(b.admit(t1 + Duration::from_millis(1_001)), Admission::Probe);
    }
}
