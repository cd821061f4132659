//! GPU-aware scheduler (issue #5): knows nothing of HTTP.
//!
//! Built so far:
//! - [`profile`]: simulated GPU profiles (H100, A100, L4) from a roofline;
//! - [`engine`]: a simulated inference engine (continuous batching, chunked
//!   prefill, KV capacity, prefix cache), clock-agnostic;
//! - [`placement`]: the pure placement core (TTFT estimate, SLO, cost
//!   policy, overflow, priorities, health);
//! - [`ledger`]: the gateway's own view of each backend (in flight, pending
//!   prefill, prefixes sent, learned rates), which placement reads;
//! - [`catalog`]: model prices from LiteLLM's catalog;
//! - [`replay`]: trace replay in virtual time with baselines.
//!
//! - [`prompt`]: a request's token estimate and prefix-block hashes, shared
//!   with the simulated engines;
//! - [`telemetry`]: GPU samples (NVML loaded at run time), health from
//!   them, and engines' own `/metrics`.
//!
//! The gateway's live placement is `gateway/src/fleet.rs`; the simulated
//! engines of `switchyard sim` are `fakes/src/sim.rs`. Not yet: node agents
//! over gRPC. See `docs/scheduling.md`.

pub mod catalog;
pub mod engine;
pub mod ledger;
pub mod placement;
pub mod profile;
pub mod prompt;
pub mod replay;
pub mod telemetry;
