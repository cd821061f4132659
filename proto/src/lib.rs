//! gRPC service definitions (batch submission, node-agent telemetry) and
//! their generated tonic code (issues #5 and #6).
//!
//! Empty for now: nothing here is used yet, and nothing pretends to work.
