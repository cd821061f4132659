//! GPU profiles for the engine simulator: how fast a simulated GPU
//! prefills and decodes an 8B-parameter model in BF16 (Llama-3.1-8B class),
//! and how many tokens of KV cache it holds.
//!
//! The figures come from a roofline, not from benchmarks of a real engine,
//! and say so wherever they are shown (every simulated name and label says
//! `sim`). Per GPU, with its datasheet's dense BF16 peak and memory
//! bandwidth:
//!
//! - **Prefill** is compute-bound: 2 FLOPs per parameter per token
//!   (16 GFLOP/token), at 50% of peak (typical model-FLOPs utilisation).
//! - **A decode step** is memory-bound: it reads all weights once (16 GB)
//!   plus each running sequence's KV cache (131 KB per token: 32 layers ×
//!   8 KV heads × 128 × K and V × 2 bytes), at 70% of peak bandwidth.
//! - **KV capacity**: 90% of memory less the weights, over 131 KB per token.
//! - **Host KV load** (an engine with a host-memory KV tier, as LMCache or
//!   SGLang's HiCache give): cached blocks copied back over PCIe at 70% of
//!   its x16 bandwidth (Gen5 64 GB/s on the H100, Gen4 32 GB/s on the
//!   others), over 131 KB per token.
//!
//! | profile | BF16 peak | bandwidth | prefill tok/s | step base | per KV token | KV tokens | host load tok/s |
//! |---|---|---|---|---|---|---|---|
//! | `h100` (SXM 80 GB) | 989 TFLOP/s | 3.35 TB/s | 30,900 | 6.8 ms | 56 ns | 427,000 | 342,000 |
//! | `a100` (SXM 80 GB) | 312 TFLOP/s | 2.04 TB/s | 9,750 | 11.2 ms | 92 ns | 427,000 | 171,000 |
//! | `l4` (24 GB) | 121 TFLOP/s | 0.30 TB/s | 3,780 | 76 ms | 624 ns | 42,700 | 171,000 |

use serde::Serialize;

/// Parameters of one 8B-class model.
const PARAMS: f64 = 8.0e9;
const WEIGHT_BYTES: f64 = 16.0e9;
/// Bytes of KV cache per token (BF16).
pub const KV_BYTES_PER_TOKEN: f64 = 131_072.0;
const MFU: f64 = 0.5;
const BANDWIDTH_EFFICIENCY: f64 = 0.7;

/// Tokens of KV that `gb` gigabytes hold (a host-memory KV tier's size).
pub fn kv_tokens_in_gb(gb: f64) -> Result<u64, String> {
    if !(gb.is_finite() && gb >= 0.0) {
        return Err(format!("must be 0 or more GB, not {gb}"));
    }
    Ok((gb * 1e9 / KV_BYTES_PER_TOKEN) as u64)
}

/// How a simulated GPU runs the simulated model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuProfile {
    /// `h100`, `a100` or `l4`.
    pub name: &'static str,
    /// The product name NVML would report, marked simulated.
    pub product: &'static str,
    pub memory_bytes: u64,
    /// Prompt tokens per second of a prefill-only step.
    pub prefill_tokens_per_s: f64,
    /// Seconds of a decode step before any KV cache is read (the weights).
    pub step_base_s: f64,
    /// Seconds per token of KV cache read in a step.
    pub per_kv_token_s: f64,
    /// Tokens of KV cache the GPU holds.
    pub kv_capacity_tokens: u64,
    /// Tokens of cached KV a second copied from host memory (PCIe).
    pub host_load_tokens_per_s: f64,
    /// Board power limit, watts (for simulated telemetry).
    pub power_limit_w: f64,
    /// Idle power, watts.
    pub idle_power_w: f64,
}

impl GpuProfile {
    fn from_datasheet(
        name: &'static str,
        product: &'static str,
        memory_gb: f64,
        peak_flops: f64,
        bandwidth: f64,
        pcie: f64,
        power: (f64, f64),
    ) -> Self {
        let memory = memory_gb * 1e9;
        let effective_bw = bandwidth * BANDWIDTH_EFFICIENCY;
        Self {
            name,
            product,
            memory_bytes: memory as u64,
            prefill_tokens_per_s: peak_flops * MFU / (2.0 * PARAMS),
            step_base_s: WEIGHT_BYTES / effective_bw,
            per_kv_token_s: KV_BYTES_PER_TOKEN / effective_bw,
            kv_capacity_tokens: ((memory * 0.9 - WEIGHT_BYTES) / KV_BYTES_PER_TOKEN).max(0.0)
                as u64,
            host_load_tokens_per_s: pcie * BANDWIDTH_EFFICIENCY / KV_BYTES_PER_TOKEN,
            power_limit_w: power.0,
            idle_power_w: power.1,
        }
    }

    /// The built-in profile called `name` (`h100`, `a100`, `l4`).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "h100" => Some(Self::from_datasheet(
                "h100",
                "NVIDIA H100 80GB HBM3 (simulated)",
                80.0,
                989e12,
                3.35e12,
                64e9,
                (700.0, 70.0),
            )),
            "a100" => Some(Self::from_datasheet(
                "a100",
                "NVIDIA A100-SXM4-80GB (simulated)",
                80.0,
                312e12,
                2.039e12,
                32e9,
                (400.0, 55.0),
            )),
            "l4" => Some(Self::from_datasheet(
                "l4",
                "NVIDIA L4 (simulated)",
                24.0,
                121e12,
                0.3e12,
                32e9,
                (72.0, 16.0),
            )),
            _ => None,
        }
    }

    /// The names [`named`](Self::named) knows.
    pub const NAMES: [&'static str; 3] = ["h100", "a100", "l4"];

    /// Seconds one engine step takes with `prefill` prompt tokens computed
    /// and `kv_tokens` tokens of KV cache read (every sequence in the step,
    /// prompt and generated so far): the weights are read once whatever
    /// else happens, the prefill compute overlaps that read, and the KV
    /// read adds to it.
    pub fn step_seconds(&self, prefill: u64, kv_tokens: u64) -> f64 {
        let compute = prefill as f64 / self.prefill_tokens_per_s;
        compute.max(self.step_base_s) + kv_tokens as f64 * self.per_kv_token_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_in_the_module_doc_is_what_the_code_computes() {
        let h100 = GpuProfile::named("h100").unwrap();
        assert_eq!(h100.prefill_tokens_per_s.round(), 30_906.0);
        assert!((h100.step_base_s - 0.006_82).abs() < 1e-4);
        assert!((h100.per_kv_token_s - 56e-9).abs() < 1e-9);
        assert_eq!(h100.kv_capacity_tokens / 1000, 427);
        assert_eq!((h100.host_load_tokens_per_s / 1000.0).round(), 342.0);
        let a100 = GpuProfile::named("a100").unwrap();
        assert_eq!(a100.prefill_tokens_per_s.round(), 9_750.0);
        assert!((a100.step_base_s - 0.011_2).abs() < 1e-4);
        let l4 = GpuProfile::named("l4").unwrap();
        assert_eq!(l4.prefill_tokens_per_s.round(), 3_781.0);
        assert!((l4.step_base_s - 0.076).abs() < 1e-3);
        assert_eq!(l4.kv_capacity_tokens / 100, 427);
        assert_eq!((l4.host_load_tokens_per_s / 1000.0).round(), 171.0);
        assert!(GpuProfile::named("v100").is_none());
        for name in GpuProfile::NAMES {
            assert_eq!(GpuProfile::named(name).unwrap().name, name);
        }
    }

    #[test]
    fn a_step_is_bound_by_the_weights_or_the_prefill_plus_the_kv_read() {
        let p = GpuProfile::named("h100").unwrap();
        assert_eq!(p.step_seconds(0, 0), p.step_base_s);
        assert_eq!(p.step_seconds(10, 0), p.step_base_s);
        let big = p.step_seconds(8192, 0);
        assert!((big - 8192.0 / p.prefill_tokens_per_s).abs() < 1e-12);
        assert!(p.step_seconds(0, 100_000) > p.step_base_s + 0.005);
    }
}
