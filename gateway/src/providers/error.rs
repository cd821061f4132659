//! What can go wrong talking to an upstream, and what the dispatcher does
//! about each kind.

use std::time::Duration;

/// Which time-out expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Total,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect time-out",
            Self::FirstByte => "time-to-first-token time-out",
            Self::Total => "total time-out",
        })
    }
}

/// A failed upstream attempt. Messages never contain credentials: upstream
/// text is scrubbed of the provider's key before it is stored here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Timeout(TimeoutPhase),
    #[error("HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("connection error: {0}")]
    Transport(String),
    #[error("invalid response: {0}")]
    Protocol(String),
    #[error("{0}")]
    Unsupported(String),
}

impl ProviderError {
    /// Worth another attempt on the same deployment (before the first byte
    /// reached the client).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Transport(_) => true,
            Self::Timeout(phase) => *phase != TimeoutPhase::Total,
            Self::Status { status, .. } => {
                matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504 | 529)
            }
            Self::Protocol(_) | Self::Unsupported(_) => false,
        }
    }

    /// Worth trying the next deployment once this one is given up. A request
    /// the upstream found invalid (400, 413, 422) would fail anywhere, so it
    /// goes straight back to the client.
    pub fn falls_back(&self) -> bool {
        match self {
            Self::Status { status, .. } => !matches!(status, 400 | 413 | 422),
            _ => true,
        }
    }

    /// Counts against the deployment's circuit breaker.
    pub fn trips_breaker(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                *status == 429 || *status >= 500 || *status == 401 || *status == 403
            }
            Self::Unsupported(_) => false,
            _ => true,
        }
    }
}
