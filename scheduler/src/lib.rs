//! GPU-aware scheduler (issue #5): telemetry sources, fleet state,
//! placement, cost policy, the engine simulator and trace replay.
//!
//! Empty for now: nothing here is used yet, and nothing pretends to work.
