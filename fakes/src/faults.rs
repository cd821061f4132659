//! Fault injection: what the next request to a fake upstream suffers.

use serde::{Deserialize, Serialize};

/// One injected failure, consumed by exactly one model request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this HTTP status and an error body in the wire format of
    /// the endpoint that was called.
    Status {
        status: u16,
        /// Seconds for the `retry-after` header, if any.
        #[serde(default)]
        retry_after_secs: Option<u64>,
        /// Error message; a provider-like default when absent.
        #[serde(default)]
        message: Option<String>,
    },
    /// Wait this long before sending anything (status line included).
    SlowFirstByte { delay_ms: u64 },
    /// Close the connection without sending a response.
    Reset,
    /// Send this many stream events (or body bytes, for a JSON response)
    /// and then drop the connection without a terminating event.
    DropMidStream { after_chunks: usize },
}
