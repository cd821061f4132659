//! GPU-aware placement end to end: the real binary in front of SIMULATED
//! engines (`switchyard_fakes::sim`, the engine model in real time) and a
//! fake external provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use switchyard_fakes::sim::{SimConfig, SimEngine};
use switchyard_scheduler::profile::GpuProfile;

const KEY: (&str, &str) = ("TEST_KEY", "sk-test-key-0123456789");

async fn sim(name: &str, gpu: &str) -> SimEngine {
    SimEngine::start(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            name: name.into(),
            profile: GpuProfile::named(gpu).unwrap(),
            models: vec!["llama".into()],
            speed: 1.0,
            default_output_tokens: 16,
            gpu_index: 0,
            host_kv_tokens: 0,
        },
    )
    .await
    .unwrap()
}

/// Group `llama` on the given simulated engines, then the external fake
/// (priced explicitly), with `scheduler` settings prepended.
fn config(sims: &[(&SimEngine, &str, u32)], external: &FakeUpstream, scheduler: &str) -> String {
    let mut c = format!(
        "[scheduler]\ntelemetry_interval_ms = 100\nstale_after_ms = 400\n{scheduler}\n\
         [providers.ext]\ntype = \"openai_compat\"\nbase_url = \"{}/v1\"\napi_key = {{ env = \"TEST_KEY\" }}\n",
        external.url()
    );
    for (s, gpu, permits) in sims {
        c.push_str(&format!(
            "\n[providers.{}]\ntype = \"openai_compat\"\nbase_url = \"{}/v1\"\n\
             local = {{ gpu = \"{gpu}\", gpu_hour_usd = 1.0, permits = {permits}, telemetry = \"sim\" }}\n",
            s.name(),
            s.url()
        ));
    }
    c.push_str("\n[[model_groups]]\nname = \"llama\"\n");
    for (s, _, _) in sims {
        c.push_str(&format!(
            "[[model_groups.deployments]]\nprovider = \"{}\"\nmodel = \"llama\"\n",
            s.name()
        ));
    }
    c.push_str(
        "[[model_groups.deployments]]\nprovider = \"ext\"\nmodel = \"fake-mini\"\n\
         price = { input_per_million = 0.15, output_per_million = 0.6 }\nttft_ms = 300\n",
    );
    c
}

/// A chat request whose prompt is about `tokens` tokens (4 bytes each),
/// distinct per `tag` so no prefix is shared.
fn body(tokens: usize, tag: &str, stream: bool, max_tokens: u32) -> Value {
    let filler = format!("{tag} ").repeat(tokens * 4 / (tag.len() + 1));
    json!({"model": "llama", "stream": stream, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": filler}]})
}

async fn send(gw: &Gateway, body: &Value) -> (u16, String, String, Value) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (placement, reason) = (
        h("x-switchyard-placement"),
        h("x-switchyard-placement-reason"),
    );
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, placement, reason, json)
}

#[tokio::test]
async fn fills_the_gpu_within_the_slo_then_overflows_to_the_external_provider() {
    // An L4 prefills ~3,800 tokens/s: with a 1 s SLO one 2,000-token
    // prompt fits (0.53 s), a second queued behind it would not (1.06 s).
    let l4 = sim("sim-l4-0", "l4").await;
    let ext = fake().await;
    let gw = Gateway::start(
        &config(&[(&l4, "l4", 16)], &ext, "ttft_slo_ms = 1000"),
        &[KEY],
    );
    let bodies: Vec<Value> = (0..4)
        .map(|i| body(2_000, &format!("q{i}"), true, 8))
        .collect();
    let results = futures_util::future::join_all(bodies.iter().map(|b| send(&gw, b))).await;
    let mut local = 0;
    let mut overflow = 0;
    for (status, placement, reason, _) in &results {
        assert_eq!(*status, 200);
        match (placement.as_str(), reason.as_str()) {
            ("local:sim-l4-0/l4", "slo_met_local") => local += 1,
            ("external:ext", "overflow") => overflow += 1,
            other => panic!("unexpected placement {other:?}"),
        }
    }
    assert!(local >= 1, "the idle GPU takes the first request");
    assert!(
        overflow >= 2,
        "requests the GPU cannot start within 1 s overflow ({local} local)"
    );
    // The upstream that answered the overflow got exactly those requests.
    assert_eq!(ext.requests().len(), overflow);
    // Counters by target and reason match what the responses said.
    let f = fleet(&gw).await;
    let count = |target: &str, reason: &str| {
        f["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["target"] == target && d["reason"] == reason)
            .map_or(0, |d| d["count"].as_u64().unwrap())
    };
    assert_eq!(count("local:sim-l4-0/l4", "slo_met_local"), local);
    assert_eq!(count("external:ext", "overflow"), overflow as u64);
    let b = &f["backends"][0];
    assert_eq!(b["name"], "sim-l4-0");
    assert_eq!(b["gpus"][0]["simulated"], true);
    assert!(
        b["gpus"][0]["name"]
            .as_str()
            .unwrap()
            .contains("(simulated)")
    );
}

#[tokio::test]
async fn a_short_prompt_on_an_idle_gpu_stays_local_and_streams_usage() {
    let h100 = sim("sim-h100-0", "h100").await;
    let ext = fake().await;
    let gw = Gateway::start(&config(&[(&h100, "h100", 8)], &ext, ""), &[KEY]);
    let (status, placement, reason, json) = send(&gw, &body(100, "hi", false, 12)).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        (placement.as_str(), reason.as_str()),
        ("local:sim-h100-0/h100", "slo_met_local")
    );
    assert_eq!(json["usage"]["completion_tokens"], 12);
    assert_eq!(json["choices"][0]["finish_reason"], "length");
    assert!(ext.requests().is_empty());
    // The same prompt again hits the simulated prefix cache only for full
    // 512-token blocks; a 2,048-token prompt has three of them cached (the
    // engine computes at least the last token).
    let long = body(2_048, "same", false, 4);
    send(&gw, &long).await;
    let (_, _, _, again) = send(&gw, &long).await;
    assert!(
        again["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            >= 1_536,
        "{again}"
    );
}

#[tokio::test]
async fn local_only_refuses_with_503_queue_full_instead_of_waiting_past_the_bound() {
    // One permit: a long stream holds it; the next request may not go
    // external and cannot start within 300 ms.
    let l4 = sim("sim-l4-0", "l4").await;
    let ext = fake().await;
    let gw = Gateway::start(
        &config(
            &[(&l4, "l4", 1)],
            &ext,
            "mode = \"local_only\"\nmax_queue_wait_ms = 300",
        ),
        &[KEY],
    );
    let holder = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&body(100, "hold", true, 60))
        .send()
        .await
        .unwrap();
    assert_eq!(
        holder.headers()["x-switchyard-placement"],
        "local:sim-l4-0/l4"
    );
    let started = std::time::Instant::now();
    let (status, _, _, json) = send(&gw, &body(2_000, "next", false, 4)).await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["error"]["code"], "queue_full", "{json}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(ext.requests().is_empty(), "local_only never goes external");
    drop(holder);
}

#[tokio::test]
async fn an_xid_error_drains_the_gpu_and_its_requests_go_to_the_other() {
    let a = sim("sim-h100-0", "h100").await;
    let b = sim("sim-h100-1", "h100").await;
    let ext = fake().await;
    let gw = Gateway::start(
        &config(&[(&a, "h100", 8), (&b, "h100", 8)], &ext, ""),
        &[KEY],
    );
    let r = client()
        .post(format!("{}/sim/faults", a.url()))
        .json(&json!({"xid": 79}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Wait for the gateway's poller to see it.
    let mut drained = false;
    for _ in 0..50 {
        let f = fleet(&gw).await;
        if f["backends"][0]["health"] == "drained" {
            assert_eq!(f["backends"][0]["health_reason"], "gpu_error");
            assert_eq!(f["backends"][0]["gpus"][0]["last_xid"], 79);
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(drained, "the XID error did not drain sim-h100-0");
    for i in 0..6 {
        let (status, placement, _, _) = send(&gw, &body(50, &format!("x{i}"), false, 2)).await;
        assert_eq!(status, 200);
        assert_eq!(placement, "local:sim-h100-1/h100");
    }
}

#[tokio::test]
async fn an_unreachable_engine_is_drained_and_work_overflows() {
    // A local backend whose engine is not running: after the stale period
    // its requests go external with the reason `overflow`.
    let gone = sim("sim-l4-9", "l4").await;
    let ext = fake().await;
    let cfg = config(&[(&gone, "l4", 4)], &ext, "");
    drop(gone);
    let gw = Gateway::start(&cfg, &[KEY]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let f = fleet(&gw).await;
    assert_eq!(f["backends"][0]["health"], "drained", "{f}");
    assert_eq!(f["backends"][0]["health_reason"], "engine_unreachable");
    let (status, placement, reason, _) = send(&gw, &body(50, "y", false, 2)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (placement.as_str(), reason.as_str()),
        ("external:ext", "overflow")
    );
}

#[tokio::test]
async fn an_engine_with_unreadable_metrics_stays_in_service_on_the_ledger() {
    // Its `/metrics` answers, but with nothing an engine would say (here the
    // fake's JSON model list): the engine is alive, so it keeps its work;
    // its load is unknown and the fleet view says why.
    let a = sim("sim-h100-7", "h100").await;
    let ext = fake().await;
    let cfg = config(&[(&a, "h100", 4)], &ext, "").replace(
        "telemetry = \"sim\" }",
        &format!(
            "telemetry = \"sim\", metrics_url = \"{}/v1/models\" }}",
            ext.url()
        ),
    );
    let gw = Gateway::start(&cfg, &[KEY]);
    tokio::time::sleep(Duration::from_millis(800)).await; // twice the stale period
    let f = fleet(&gw).await;
    assert_eq!(f["backends"][0]["health"], "healthy", "{f}");
    assert!(f["backends"][0]["engine"].is_null(), "{f}");
    assert!(
        f["backends"][0]["engine_error"]
            .as_str()
            .is_some_and(|e| e.contains("no vLLM, SGLang or TGI metrics")),
        "{f}"
    );
    let (status, placement, _, _) = send(&gw, &body(50, "z", false, 2)).await;
    assert_eq!(status, 200);
    assert_eq!(placement, "local:sim-h100-7/h100");
    let logs = [gw.startup.clone(), gw.drain_logs()].concat().join("\n");
    assert!(logs.contains("engine metrics unavailable"), "{logs}");
}
