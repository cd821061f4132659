//! Benchmark tooling for Switchyard: an open-loop HTTP load generator with
//! coordinated-omission-corrected latencies, and helpers to run the real
//! binaries as separate processes.

pub mod compare;
pub mod load;
pub mod procs;

/// Writes a benchmark's results as pretty JSON to `path`, creating its
/// directory.
pub fn write_results(path: &str, results: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(results)?)?;
    Ok(())
}
