//! Exponential backoff with full jitter, honouring `retry-after`.

use std::time::Duration;

use crate::config::RetryConfig;

/// How long to wait before retry number `retry` (1-based), or `None` when
/// the upstream asked for a wait longer than `max_retry_after_ms` (then the
/// next deployment is tried instead).
pub fn delay(cfg: &RetryConfig, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
    let cap = cfg
        .backoff_base_ms
        .saturating_mul(1u64 << retry.saturating_sub(1).min(20))
        .min(cfg.backoff_max_ms);
    let jittered = Duration::from_millis(rand::random_range(0..=cap));
    match retry_after {
        Some(after) if after > Duration::from_millis(cfg.max_retry_after_ms) => None,
        Some(after) => Some(after.max(jittered)),
        None => Some(jittered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let cfg = RetryConfig {
            max_retries: 5,
            backoff_base_ms: 100,
            backoff_max_ms: 300,
            max_retry_after_ms: 1_000,
        };
        for _ in 0..100 {
            assert!(delay(&cfg, 1, None).is_some_and(|d| d <= Duration::from_millis(100)));
            assert!(delay(&cfg, 10, None).is_some_and(|d| d <= Duration::from_millis(300)));
        }
        assert_eq!(
            delay(&cfg, 1, Some(Duration::from_millis(800))),
            Some(Duration::from_millis(800))
        );
        assert_eq!(delay(&cfg, 1, Some(Duration::from_secs(2))), None);
    }
}
