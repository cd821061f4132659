//! Benchmark tooling for Switchyard: an open-loop HTTP load generator with
//! coordinated-omission-corrected latencies, and helpers to run the real
//! binaries as separate processes.

pub mod load;
pub mod procs;
