//! GPU and engine telemetry, and what it means for placement.
//!
//! Sources of [`GpuSample`]s sit behind [`GpuTelemetry`]:
//!
//! - [`Nvml`]: the NVIDIA Management Library through nvml-wrapper, loaded
//!   at run time (`libnvidia-ml.so.1`), so the binary starts where there is
//!   no driver; each poll makes only cheap calls (utilisation, memory,
//!   power, temperature, throttle reasons, ECC counters) and drains the
//!   critical-XID event set without waiting;
//! - [`NoGpus`]: what `auto` falls back to without NVML;
//! - the simulator's samples, fetched over HTTP by the gateway
//!   (`switchyard sim` serves them as JSON in this same shape).
//!
//! [`HealthTracker`] turns samples into a [`Health`]: stale telemetry, a new
//! XID error or an uncorrectable ECC error drains a GPU (nothing new is sent
//! to it for [`HealthPolicy::error_hold_s`]); thermal or power-brake
//! throttling degrades it. [`EngineLoad::parse`] reads an engine's own
//! `/metrics` (vLLM, SGLang or TGI names).

use serde::{Deserialize, Serialize};

use crate::placement::Health;

/// One GPU at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: u32,
    pub uuid: String,
    /// Product name as NVML reports it (the simulator's say `SIMULATED`).
    pub name: String,
    /// Percent of the last sample period a kernel was running.
    pub utilization_pct: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub power_w: f64,
    pub power_limit_w: f64,
    pub temperature_c: f64,
    /// Active clock-throttle reasons, from [`THROTTLE_REASONS`].
    pub throttle: Vec<String>,
    /// Critical XID errors seen since the source started.
    pub xid_errors: u64,
    /// The last XID code seen, if any.
    pub last_xid: Option<u64>,
    /// Uncorrectable ECC errors since the driver loaded.
    pub ecc_uncorrected: u64,
    pub simulated: bool,
}

/// Throttle reasons by name, and whether each degrades the GPU. Power
/// capping by software is how a GPU runs at full load, so it is reported
/// but not held against it; hardware slowdowns, thermal throttling and the
/// power brake mean the GPU runs slower than its profile.
pub const THROTTLE_REASONS: [(&str, bool); 5] = [
    ("sw_power_cap", false),
    ("hw_slowdown", true),
    ("sw_thermal_slowdown", true),
    ("hw_thermal_slowdown", true),
    ("hw_power_brake_slowdown", true),
];

/// A source of GPU samples.
pub trait GpuTelemetry: Send {
    /// `nvml`, `sim` or `none`, for logs and labels.
    fn source(&self) -> &'static str;
    /// One sample of every GPU.
    fn sample(&mut self) -> Result<Vec<GpuSample>, String>;
}

/// No GPUs (NVML absent, or telemetry turned off).
#[derive(Debug, Default)]
pub struct NoGpus;

impl GpuTelemetry for NoGpus {
    fn source(&self) -> &'static str {
        "none"
    }
    fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
        Ok(Vec::new())
    }
}

/// NVML, loaded at run time.
pub struct Nvml {
    nvml: &'static nvml_wrapper::Nvml,
    events: Option<nvml_wrapper::EventSet<'static>>,
    xids: Vec<(u64, Option<u64>)>,
}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvml").finish_non_exhaustive()
    }
}

impl Nvml {
    /// Loads NVML and registers for critical XID events on every GPU.
    /// Fails (with NVML's reason) where there is no driver.
    pub fn open() -> Result<Self, String> {
        use nvml_wrapper::bitmasks::event::EventTypes;
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML: {e}"))?;
        // One NVML handle per process, alive until exit: leaking it lets the
        // event set borrow it for 'static.
        let nvml: &'static nvml_wrapper::Nvml = Box::leak(Box::new(nvml));
        let count = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
        let mut events = nvml.create_event_set().ok();
        for i in 0..count {
            let Ok(device) = nvml.device_by_index(i) else {
                continue;
            };
            // Not every GPU supports XID events (some vGPUs do not); a failed
            // registration frees the set, so ask first.
            let supported = device
                .supported_event_types()
                .is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
            if let (true, Some(set)) = (supported, events.take()) {
                events = device
                    .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                    .ok();
            }
        }
        Ok(Self {
            nvml,
            events,
            xids: vec![(0, None); count as usize],
        })
    }
}

impl GpuTelemetry for Nvml {
    fn source(&self) -> &'static str {
        "nvml"
    }

    fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
        use nvml_wrapper::bitmasks::device::ThrottleReasons;
        use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
        // Drain pending XID events without blocking.
        if let Some(set) = &self.events {
            while let Ok(ev) = set.wait(0) {
                let code = match ev.event_data {
                    Some(nvml_wrapper::enums::event::XidError::Value(v)) => Some(v),
                    _ => None,
                };
                if let Ok(i) = ev.device.index()
                    && let Some(slot) = self.xids.get_mut(i as usize)
                {
                    slot.0 += 1;
                    slot.1 = code;
                }
            }
        }
        let count = self.nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            let d = self
                .nvml
                .device_by_index(i)
                .map_err(|e| format!("NVML GPU {i}: {e}"))?;
            let util = d
                .utilization_rates()
                .map(|u| f64::from(u.gpu))
                .unwrap_or(0.0);
            let mem = d.memory_info().ok();
            let reasons = d
                .current_throttle_reasons()
                .unwrap_or(ThrottleReasons::empty());
            let flags = [
                ThrottleReasons::SW_POWER_CAP,
                ThrottleReasons::HW_SLOWDOWN,
                ThrottleReasons::SW_THERMAL_SLOWDOWN,
                ThrottleReasons::HW_THERMAL_SLOWDOWN,
                ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
            ];
            let throttle = THROTTLE_REASONS
                .iter()
                .zip(flags)
                .filter(|(_, f)| reasons.contains(*f))
                .map(|((name, _), _)| (*name).to_owned())
                .collect();
            let (xid_errors, last_xid) = self.xids.get(i as usize).copied().unwrap_or_default();
            out.push(GpuSample {
                index: i,
                uuid: d.uuid().unwrap_or_default(),
                name: d.name().unwrap_or_default(),
                utilization_pct: util,
                memory_used_bytes: mem.as_ref().map_or(0, |m| m.used),
                memory_total_bytes: mem.as_ref().map_or(0, |m| m.total),
                power_w: d.power_usage().map(|mw| f64::from(mw) / 1e3).unwrap_or(0.0),
                power_limit_w: d
                    .enforced_power_limit()
                    .map(|mw| f64::from(mw) / 1e3)
                    .unwrap_or(0.0),
                temperature_c: d
                    .temperature(TemperatureSensor::Gpu)
                    .map(f64::from)
                    .unwrap_or(0.0),
                throttle,
                xid_errors,
                last_xid,
                // Not every GPU has ECC (consumer parts): then 0.
                ecc_uncorrected: d
                    .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
                    .unwrap_or(0),
                simulated: false,
            });
        }
        Ok(out)
    }
}

/// How telemetry maps to health.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    /// Samples older than this drain the GPU.
    pub stale_after_s: f64,
    /// How long a new XID or uncorrectable ECC error drains the GPU.
    pub error_hold_s: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            stale_after_s: 5.0,
            error_hold_s: 300.0,
        }
    }
}

/// Why a GPU is not healthy (a bounded set, for labels and logs).
pub fn reason_str(health: Health, why: Option<&'static str>) -> &'static str {
    match (health, why) {
        (Health::Healthy, _) => "healthy",
        (_, Some(w)) => w,
        (Health::Degraded, None) => "degraded",
        (Health::Drained, None) => "drained",
    }
}

/// One GPU's health over time: remembers error counters between samples so
/// that a new error drains the GPU for a while and then lets it back.
#[derive(Debug, Clone, Default)]
pub struct HealthTracker {
    last: Option<(f64, u64, u64)>,
    error_at: Option<f64>,
}

impl HealthTracker {
    /// Takes a sample received at `at` (seconds, any clock shared with
    /// `now`).
    pub fn observe(&mut self, sample: &GpuSample, at: f64) {
        let counters = (sample.xid_errors, sample.ecc_uncorrected);
        match self.last {
            Some((_, xid, ecc)) if counters.0 > xid || counters.1 > ecc => {
                self.error_at = Some(at);
            }
            // The first sample: errors counted before we watched still
            // count once (the GPU may be in a bad state now).
            None if counters.0 > 0 || counters.1 > 0 => self.error_at = Some(at),
            _ => {}
        }
        self.last = Some((at, counters.0, counters.1));
    }

    /// Health now, given the latest sample, and why.
    pub fn health(
        &self,
        sample: Option<&GpuSample>,
        now: f64,
        policy: &HealthPolicy,
    ) -> (Health, Option<&'static str>) {
        let (Some((at, _, _)), Some(sample)) = (self.last, sample) else {
            return (Health::Drained, Some("no_telemetry"));
        };
        if now - at > policy.stale_after_s {
            return (Health::Drained, Some("stale_telemetry"));
        }
        if self.error_at.is_some_and(|t| now - t < policy.error_hold_s) {
            return (Health::Drained, Some("gpu_error"));
        }
        let degrading = sample.throttle.iter().find_map(|t| {
            THROTTLE_REASONS
                .iter()
                .find(|(name, bad)| *bad && name == t)
                .map(|(name, _)| *name)
        });
        match degrading {
            Some(r) if r.contains("thermal") => (Health::Degraded, Some("thermal_throttle")),
            Some(r) if r.contains("power") => (Health::Degraded, Some("power_throttle")),
            Some(_) => (Health::Degraded, Some("hw_slowdown")),
            None => (Health::Healthy, None),
        }
    }
}

/// The worse of two healths.
pub fn worse(
    a: (Health, Option<&'static str>),
    b: (Health, Option<&'static str>),
) -> (Health, Option<&'static str>) {
    let rank = |h: Health| match h {
        Health::Healthy => 0,
        Health::Degraded => 1,
        Health::Drained => 2,
    };
    if rank(b.0) > rank(a.0) { b } else { a }
}

/// An engine's load from its own `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EngineLoad {
    pub running: f64,
    pub waiting: f64,
    /// KV-cache usage, 0 to 1, where the engine reports it.
    pub kv_usage: Option<f64>,
}

impl EngineLoad {
    /// Reads Prometheus text exposition in vLLM's (v0 and v1), SGLang's or
    /// TGI's metric names, summing over label sets (one engine may report
    /// several models). `None` when no known metric is present.
    pub fn parse(text: &str) -> Option<Self> {
        const RUNNING: [&str; 3] = [
            "vllm:num_requests_running",
            "sglang:num_running_reqs",
            "tgi_batch_current_size",
        ];
        const WAITING: [&str; 3] = [
            "vllm:num_requests_waiting",
            "sglang:num_queue_reqs",
            "tgi_queue_size",
        ];
        const KV: [&str; 3] = [
            "vllm:kv_cache_usage_perc",
            "vllm:gpu_cache_usage_perc",
            "sglang:token_usage",
        ];
        let mut load = Self::default();
        let mut seen = false;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // name{labels} value [timestamp]; label values may hold spaces.
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) if line.as_bytes()[i] == b'{' => {
                    let Some(close) = line.rfind('}') else {
                        continue;
                    };
                    (&line[..i], &line[close + 1..])
                }
                Some(i) => (&line[..i], &line[i..]),
                None => continue,
            };
            let Some(value) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            else {
                continue;
            };
            if !value.is_finite() {
                continue;
            }
            if RUNNING.contains(&name) {
                load.running += value;
                seen = true;
            } else if WAITING.contains(&name) {
                load.waiting += value;
                seen = true;
            } else if KV.contains(&name) {
                load.kv_usage = Some(load.kv_usage.unwrap_or(0.0).max(value));
                seen = true;
            }
        }
        seen.then_some(load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GpuSample {
        GpuSample {
            index: 0,
            uuid: "GPU-0".into(),
            name: "SIMULATED H100".into(),
            utilization_pct: 50.0,
            memory_used_bytes: 1,
            memory_total_bytes: 2,
            power_w: 300.0,
            power_limit_w: 700.0,
            temperature_c: 60.0,
            throttle: vec![],
            xid_errors: 0,
            last_xid: None,
            ecc_uncorrected: 0,
            simulated: true,
        }
    }

    #[test]
    fn errors_drain_for_the_hold_then_let_the_gpu_back() {
        let p = HealthPolicy::default();
        let mut t = HealthTracker::default();
        let mut s = sample();
        assert_eq!(t.health(Some(&s), 0.0, &p).1, Some("no_telemetry"));
        t.observe(&s, 0.0);
        assert_eq!(t.health(Some(&s), 1.0, &p), (Health::Healthy, None));
        assert_eq!(t.health(Some(&s), 6.0, &p).1, Some("stale_telemetry"));
        s.xid_errors = 1;
        s.last_xid = Some(79);
        t.observe(&s, 10.0);
        assert_eq!(
            t.health(Some(&s), 10.5, &p),
            (Health::Drained, Some("gpu_error"))
        );
        t.observe(&s, 309.0);
        assert_eq!(t.health(Some(&s), 309.5, &p).0, Health::Drained);
        t.observe(&s, 311.0);
        assert_eq!(
            t.health(Some(&s), 311.0, &p).0,
            Health::Healthy,
            "same count: old news"
        );
    }

    #[test]
    fn thermal_throttling_degrades_and_a_power_cap_does_not() {
        let p = HealthPolicy::default();
        let mut t = HealthTracker::default();
        let mut s = sample();
        s.throttle = vec!["sw_power_cap".into()];
        t.observe(&s, 0.0);
        assert_eq!(t.health(Some(&s), 0.0, &p).0, Health::Healthy);
        s.throttle.push("hw_thermal_slowdown".into());
        assert_eq!(
            t.health(Some(&s), 0.0, &p),
            (Health::Degraded, Some("thermal_throttle"))
        );
        let worst = worse((Health::Degraded, Some("x")), (Health::Drained, Some("y")));
        assert_eq!(worst.0, Health::Drained);
    }

    #[test]
    fn reads_vllm_sglang_and_tgi_metrics() {
        let vllm = "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
            # TYPE vllm:num_requests_running gauge\n\
            vllm:num_requests_running{engine=\"0\",model_name=\"a b\"} 3.0\n\
            vllm:num_requests_running{engine=\"1\",model_name=\"c\"} 2.0\n\
            vllm:num_requests_waiting{model_name=\"a\"} 7\n\
            vllm:kv_cache_usage_perc{model_name=\"a\"} 0.42\n";
        assert_eq!(
            EngineLoad::parse(vllm),
            Some(EngineLoad {
                running: 5.0,
                waiting: 7.0,
                kv_usage: Some(0.42)
            })
        );
        let sglang = "sglang:num_running_reqs{model_name=\"m\"} 4\nsglang:num_queue_reqs{model_name=\"m\"} 1\nsglang:token_usage{model_name=\"m\"} 0.5\n";
        assert_eq!(EngineLoad::parse(sglang).unwrap().waiting, 1.0);
        let tgi = "tgi_batch_current_size 8\ntgi_queue_size 2\n";
        assert_eq!(
            EngineLoad::parse(tgi),
            Some(EngineLoad {
                running: 8.0,
                waiting: 2.0,
                kv_usage: None
            })
        );
        assert_eq!(EngineLoad::parse("other_metric 1\n"), None);
        assert_eq!(EngineLoad::parse("vllm:num_requests_running NaN\n"), None);
    }

    /// Without a driver NVML fails to open with a clear reason, and the
    /// binary goes on. With one (a GPU machine; `SWITCHYARD_TEST_NVML=1`
    /// makes its absence a failure) every reading must be plausible and a
    /// poll must be cheap, since it runs every 500 ms.
    #[test]
    #[allow(clippy::print_stderr, reason = "says which path it took")]
    fn nvml_opens_and_samples_sanely_or_fails_cleanly() {
        let required = std::env::var("SWITCHYARD_TEST_NVML").is_ok_and(|v| v == "1");
        let mut nvml = match Nvml::open() {
            Ok(n) => n,
            Err(e) => {
                assert!(!required, "SWITCHYARD_TEST_NVML=1 but {e}");
                eprintln!("NVML absent here, so only its clean failure is tested: {e}");
                assert!(e.starts_with("NVML"), "{e}");
                return;
            }
        };
        let gpus = nvml.sample().expect("NVML sample");
        assert!(!gpus.is_empty(), "NVML loaded but reports no GPU");
        for (i, g) in gpus.iter().enumerate() {
            eprintln!("NVML GPU: {g:?}");
            assert_eq!(g.index as usize, i);
            assert!(g.uuid.starts_with("GPU-"), "{}", g.uuid);
            assert!(!g.name.is_empty() && !g.simulated);
            assert!((0.0..=100.0).contains(&g.utilization_pct));
            assert!(g.memory_total_bytes > 0);
            assert!(g.memory_used_bytes <= g.memory_total_bytes);
            assert!(g.power_limit_w > 0.0 && g.power_w > 0.0, "{g:?}");
            assert!(g.power_w <= g.power_limit_w * 1.5, "{g:?}");
            assert!((1.0..=120.0).contains(&g.temperature_c), "{g:?}");
            for t in &g.throttle {
                assert!(THROTTLE_REASONS.iter().any(|(n, _)| n == t), "{t}");
            }
        }
        let mut took: Vec<f64> = (0..50)
            .map(|_| {
                let t = std::time::Instant::now();
                let again = nvml.sample().expect("NVML sample");
                assert_eq!(again.len(), gpus.len());
                assert_eq!(again[0].uuid, gpus[0].uuid);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        took.sort_by(f64::total_cmp);
        eprintln!(
            "NVML poll of {} GPU(s): p50 {:.3} ms, max {:.3} ms",
            gpus.len(),
            took[25],
            took[49]
        );
        assert!(took[25] < 50.0, "an NVML poll took {} ms", took[25]);
    }
}
