//! Node agents end to end: the real `switchyard agent` binary relaying
//! SIMULATED GPUs (`switchyard_fakes::sim`) over gRPC to the real gateway
//! binary, and a gRPC client generated from `proto/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "a test: panics are failures; it reports what it saw on a GPU machine"
)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use switchyard_fakes::sim::{SimConfig, SimEngine};
use switchyard_proto::v1::WatchRequest;
use switchyard_proto::v1::telemetry_service_client::TelemetryServiceClient;
use switchyard_scheduler::profile::GpuProfile;

const KEY: (&str, &str) = ("TEST_KEY", "sk-test-key-0123456789");

async fn sim(name: &str, gpu_index: u32) -> SimEngine {
    SimEngine::start(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            name: name.into(),
            profile: GpuProfile::named("h100").unwrap(),
            models: vec!["llama".into()],
            speed: 1.0,
            default_output_tokens: 8,
            gpu_index,
            host_kv_tokens: 0,
        },
    )
    .await
    .unwrap()
}

/// `switchyard agent` on `listen`, relaying the given simulated engines.
fn agent(listen: &str, sims: &[&SimEngine]) -> Gateway {
    agent_with(listen, sims, &[], &[])
}

/// [`agent`] with more arguments and environment.
fn agent_with(listen: &str, sims: &[&SimEngine], extra: &[&str], env: &[(&str, &str)]) -> Gateway {
    let mut args = vec![
        "agent".to_owned(),
        "--listen".into(),
        listen.into(),
        "--telemetry".into(),
        "sim".into(),
        "--node".into(),
        "node-a".into(),
        "--interval-ms".into(),
        "100".into(),
    ];
    for s in sims {
        args.extend(["--sim".into(), s.url()]);
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Gateway::spawn(&args, env, tempfile::tempdir().unwrap())
}

/// Polls the fleet view until `ok` holds for it (10 s at most).
async fn until(gw: &Gateway, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = fleet(gw).await;
        if ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not seen within 10 s; fleet: {last}");
}

fn health(f: &Value, backend: usize) -> (String, String) {
    let b = &f["backends"][backend];
    (
        b["health"].as_str().unwrap_or_default().to_owned(),
        b["health_reason"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn gpus_seen_through_an_agent_drain_when_it_goes_and_recover_when_it_returns() {
    let a = sim("sim-a", 0).await;
    let b = sim("sim-b", 1).await;
    let ext = fake().await;
    let mut node = agent("127.0.0.1:0", &[&a, &b]);
    let agent_addr = node.addr;
    let mut cfg = format!(
        "[scheduler]\ntelemetry_interval_ms = 100\nstale_after_ms = 500\n\
         [providers.ext]\ntype = \"openai_compat\"\nbase_url = \"{}/v1\"\napi_key = {{ env = \"TEST_KEY\" }}\n",
        ext.url()
    );
    for (s, gpu) in [(&a, "0"), (&b, "1")] {
        cfg.push_str(&format!(
            "\n[providers.{}]\ntype = \"openai_compat\"\nbase_url = \"{}/v1\"\n\
             local = {{ gpu = \"h100\", gpu_hour_usd = 1.0, permits = 4, telemetry = \"agent\", \
             agent = \"http://{agent_addr}\", gpus = [\"{gpu}\"] }}\n",
            s.name(),
            s.url()
        ));
    }
    cfg.push_str("\n[[model_groups]]\nname = \"llama\"\n");
    for s in [&a, &b] {
        cfg.push_str(&format!(
            "[[model_groups.deployments]]\nprovider = \"{}\"\nmodel = \"llama\"\n",
            s.name()
        ));
    }
    cfg.push_str(
        "[[model_groups.deployments]]\nprovider = \"ext\"\nmodel = \"fake-mini\"\n\
         price = { input_per_million = 0.15, output_per_million = 0.6 }\n",
    );
    let gw = Gateway::start(&cfg, &[KEY]);

    // Each backend sees its own GPU, relayed by the agent.
    let f = until(&gw, "both GPUs through the agent", |f| {
        (0..2).all(|i| {
            f["backends"][i]["gpus"]
                .as_array()
                .is_some_and(|g| g.len() == 1)
        })
    })
    .await;
    for (i, s) in [&a, &b].iter().enumerate() {
        let gpu = &f["backends"][i]["gpus"][0];
        assert_eq!(
            gpu["uuid"],
            format!("GPU-SIMULATED-{}-{}", s.addr().port(), s.name())
        );
        assert_eq!(gpu["simulated"], true);
        assert_eq!(health(&f, i).0, "healthy", "{f}");
    }

    // An XID error on one GPU reaches the gateway through the agent.
    let r = client()
        .post(format!("{}/sim/faults", a.url()))
        .json(&json!({"xid": 48}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let f = until(&gw, "the XID error through the agent", |f| {
        health(f, 0) == ("drained".into(), "gpu_error".into())
    })
    .await;
    assert_eq!(f["backends"][0]["gpus"][0]["last_xid"], 48);
    assert_eq!(health(&f, 1).0, "healthy", "{f}");

    // The agent dies: after the stale period both GPUs are drained, and
    // work overflows to the external provider.
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let f = until(&gw, "stale telemetry after the agent died", |f| {
        health(f, 1) == ("drained".into(), "stale_telemetry".into())
    })
    .await;
    assert_eq!(health(&f, 0).0, "drained", "{f}");
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "llama", "max_tokens": 2,
                      "messages": [{"role": "user", "content": "while the agent is away"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-placement"], "external:ext");
    assert_eq!(r.headers()["x-switchyard-placement-reason"], "overflow");

    // The agent comes back on the same address: the gateway reconnects, the
    // healthy GPU takes work again, the one with the XID error stays drained
    // for its hold period.
    let _node = agent(&agent_addr.to_string(), &[&a, &b]);
    let f = until(&gw, "recovery after the agent returned", |f| {
        health(f, 1).0 == "healthy"
    })
    .await;
    assert_eq!(health(&f, 0), ("drained".into(), "gpu_error".into()), "{f}");
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "llama", "max_tokens": 2,
                      "messages": [{"role": "user", "content": "the agent is back"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-placement"], "local:sim-b/h100");

    let logs = [gw.startup.clone(), gw.drain_logs()].concat().join("\n");
    assert!(logs.contains("node agent connected"), "{logs}");
    assert!(logs.contains("node agent lost"), "{logs}");
}

#[tokio::test]
async fn a_generated_grpc_client_streams_samples_from_the_agent() {
    let a = sim("sim-c", 3).await;
    let node = agent("127.0.0.1:0", &[&a]);
    let mut client = TelemetryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let mut stream = client.watch(WatchRequest {}).await.unwrap().into_inner();
    let mut last = 0;
    for _ in 0..3 {
        let s = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a sample every 100 ms")
            .unwrap()
            .expect("the stream stays open");
        assert_eq!((s.node.as_str(), s.source.as_str()), ("node-a", "sim"));
        assert!(s.sequence > last, "sequence {} after {last}", s.sequence);
        last = s.sequence;
        assert!(s.error.is_empty(), "{}", s.error);
        assert_eq!(s.gpus.len(), 1);
        assert_eq!(s.gpus[0].index, 3);
        assert!(s.gpus[0].simulated);
        assert!(s.gpus[0].memory_total_bytes > 0);
    }
    // An engine that stops answering is named in `error`; the stream goes on.
    drop(a);
    let s = loop {
        let s = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if !s.error.is_empty() {
            break s;
        }
    };
    assert!(s.gpus.is_empty());
    assert!(s.error.contains("/sim/telemetry"), "{}", s.error);
}

#[tokio::test]
async fn nvml_absent_fails_clearly_or_auto_serves_no_gpus() {
    // `auto` starts anywhere; `nvml` starts only where the driver loads.
    let node = Gateway::spawn(
        &[
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--telemetry",
            "auto",
            "--interval-ms",
            "100",
        ],
        &[],
        tempfile::tempdir().unwrap(),
    );
    let mut client = TelemetryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let mut stream = client.watch(WatchRequest {}).await.unwrap().into_inner();
    let s = stream.message().await.unwrap().unwrap();
    let nvml = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["agent", "--listen", "127.0.0.1:0", "--telemetry", "nvml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    match s.source.as_str() {
        "none" => {
            assert!(s.gpus.is_empty());
            let logs = node.startup.join("\n");
            assert!(logs.contains("NVML unavailable"), "{logs}");
            let out = nvml.wait_with_output().unwrap();
            assert!(
                !out.status.success(),
                "--telemetry nvml started without NVML"
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("NVML") && err.contains("--telemetry auto"),
                "{err}"
            );
        }
        "nvml" => {
            // A machine with a driver: both serve its GPUs.
            eprintln!("NVML present: {} GPU(s) through the agent", s.gpus.len());
            let mut nvml = nvml;
            std::thread::sleep(Duration::from_secs(1));
            assert!(
                nvml.try_wait().unwrap().is_none(),
                "--telemetry nvml exited with NVML present"
            );
            nvml.kill().unwrap();
        }
        other => panic!("unexpected source {other}"),
    }
}

/// One backend on `sim` whose telemetry comes through the agent at
/// `agent_addr`, naming `gpus`.
fn one_backend(s: &SimEngine, agent_addr: std::net::SocketAddr, gpus: &str) -> String {
    format!(
        "[scheduler]\ntelemetry_interval_ms = 100\nstale_after_ms = 500\n\
         [providers.{name}]\ntype = \"openai_compat\"\nbase_url = \"{url}/v1\"\n\
         local = {{ gpu = \"h100\", gpu_hour_usd = 1.0, permits = 4, telemetry = \"agent\", \
         agent = \"http://{agent_addr}\", gpus = [{gpus}] }}\n\
         [[model_groups]]\nname = \"llama\"\n\
         [[model_groups.deployments]]\nprovider = \"{name}\"\nmodel = \"llama\"\n",
        name = s.name(),
        url = s.url()
    )
}

#[tokio::test]
async fn a_silent_agent_goes_stale_and_a_configured_gpu_it_never_reports_is_drained() {
    let a = sim("sim-d", 0).await;
    let node = agent("127.0.0.1:0", &[&a]);
    let gw = Gateway::start(&one_backend(&a, node.addr, "\"0\""), &[]);
    // Healthy with a GPU sample in hand: a backend is healthy for its first
    // `stale_after_ms` before any sample, and an agent stopped before its
    // first sample arrived would leave it with none (`no_telemetry`), not a
    // stale one (seen once in CI, on a loaded machine).
    until(&gw, "healthy through the agent, with a sample", |f| {
        health(f, 0).0 == "healthy"
            && f["backends"][0]["gpus"]
                .as_array()
                .is_some_and(|g| !g.is_empty())
    })
    .await;
    // Stopped, not killed: connections stay open and nothing answers.
    let pid = node.child.id().to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stop.success());
    until(&gw, "stale while the agent is stopped", |f| {
        health(f, 0) == ("drained".into(), "stale_telemetry".into())
    })
    .await;
    let cont = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    assert!(cont.success());
    until(&gw, "healthy once it runs again", |f| {
        health(f, 0).0 == "healthy"
    })
    .await;

    // A backend naming a GPU the node does not report knows nothing of it.
    let gw = Gateway::start(
        &one_backend(&a, node.addr, "\"0\", \"GPU-not-on-this-node\""),
        &[],
    );
    let f = until(&gw, "drained for the missing GPU", |f| {
        f["backends"][0]["gpus"]
            .as_array()
            .is_some_and(|g| g.len() == 1)
            && health(f, 0).0 == "drained"
    })
    .await;
    assert_eq!(health(&f, 0).1, "no_telemetry", "{f}");
}

const AGENT_TOKEN: &str = "agent-token-5bd1c0e2";

#[tokio::test]
async fn an_agent_with_a_token_serves_only_subscribers_that_send_it() {
    let a = sim("sim-e", 0).await;
    let node = agent_with(
        "127.0.0.1:0",
        &[&a],
        &["--token-env", "NODE_AGENT_TOKEN"],
        &[("NODE_AGENT_TOKEN", AGENT_TOKEN)],
    );
    let url = format!("http://{}", node.addr);
    let watch = |token: Option<&str>| {
        let url = url.clone();
        let token = token.map(|t| format!("Bearer {t}"));
        async move {
            let mut client = TelemetryServiceClient::connect(url).await.unwrap();
            let mut request = tonic::Request::new(WatchRequest {});
            if let Some(t) = token {
                request
                    .metadata_mut()
                    .insert("authorization", t.parse().unwrap());
            }
            client.watch(request).await
        }
    };
    let refused = watch(None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(refused.message().contains("agent_token"), "{refused:?}");
    let refused = watch(Some("agent-token-wrong")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(refused.message(), "incorrect agent token");
    assert!(!format!("{refused:?}").contains(AGENT_TOKEN));
    let mut stream = watch(Some(AGENT_TOKEN)).await.unwrap().into_inner();
    let s = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a sample every 100 ms")
        .unwrap()
        .unwrap();
    assert_eq!(s.gpus.len(), 1);

    // A gateway with the token sees the GPU; one with another token
    // drains the backend and says why, without printing either token.
    let config = |token_env: &str| {
        one_backend(&a, node.addr, "\"0\"").replace(
            "gpus = [",
            &format!("agent_token = {{ env = \"{token_env}\" }}, gpus = ["),
        )
    };
    let gw = Gateway::start(
        &config("GW_AGENT_TOKEN"),
        &[("GW_AGENT_TOKEN", AGENT_TOKEN)],
    );
    until(&gw, "healthy with the agent's token", |f| {
        health(f, 0).0 == "healthy"
    })
    .await;
    let wrong = Gateway::start(
        &config("GW_AGENT_TOKEN"),
        &[("GW_AGENT_TOKEN", "agent-token-wrong")],
    );
    until(&wrong, "drained with a wrong token", |f| {
        health(f, 0).0 == "drained"
    })
    .await;
    // The refusal may be logged before or after the `listening` line.
    let after: Vec<String> =
        std::iter::from_fn(|| wrong.logs.recv_timeout(Duration::from_millis(500)).ok())
            .take(50)
            .collect();
    let logs = [wrong.startup.join("\n"), after.join("\n")].join("\n");
    assert!(logs.contains("incorrect agent token"), "{logs}");
    assert!(
        !logs.contains(AGENT_TOKEN) && !logs.contains("agent-token-wrong"),
        "{logs}"
    );

    // An agent told to require a token it cannot read does not start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--token-env",
            "NO_SUCH_TOKEN_VAR",
        ])
        .env_remove("NO_SUCH_TOKEN_VAR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NO_SUCH_TOKEN_VAR"), "{err}");
}

/// PEM files in a temp dir: a CA (`ca.pem`), an agent certificate for
/// 127.0.0.1 (`agent.pem`, `agent.key`) and a client certificate
/// (`client.pem`, `client.key`), both signed by the CA.
fn pki() -> tempfile::TempDir {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    for (name, san, usage) in [
        ("agent", "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
        (
            "client",
            "gateway.test",
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    dir
}

/// Every log line of `gw` so far and for another half second.
fn all_logs(gw: &Gateway) -> String {
    let after: Vec<String> =
        std::iter::from_fn(|| gw.logs.recv_timeout(Duration::from_millis(500)).ok())
            .take(200)
            .collect();
    [gw.startup.join("\n"), after.join("\n")].join("\n")
}

#[tokio::test]
async fn an_agent_over_mutual_tls_serves_gateways_that_trust_it_and_that_it_trusts() {
    let a = sim("sim-f", 0).await;
    let pki = pki();
    let file = |name: &str| pki.path().join(name).to_str().unwrap().to_owned();
    let node = agent_with(
        "127.0.0.1:0",
        &[&a],
        &[
            "--token-env",
            "NODE_AGENT_TOKEN",
            "--tls-cert",
            &file("agent.pem"),
            "--tls-key",
            &file("agent.key"),
            "--tls-client-ca",
            &file("ca.pem"),
        ],
        &[("NODE_AGENT_TOKEN", AGENT_TOKEN)],
    );
    let config = |scheme: &str, tls: &str| {
        one_backend(&a, node.addr, "\"0\"")
            .replace(
                &format!("agent = \"http://{}\"", node.addr),
                &format!("agent = \"{scheme}://{}\"", node.addr),
            )
            .replace(
                "gpus = [",
                &format!("agent_token = {{ env = \"GW_AGENT_TOKEN\" }}, {tls}gpus = ["),
            )
    };
    let token = [("GW_AGENT_TOKEN", AGENT_TOKEN)];
    let mutual = format!(
        "agent_tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}, ",
        file("ca.pem"),
        file("client.pem"),
        file("client.key")
    );

    // Trusting the agent's CA and holding a client certificate it signed.
    let gw = Gateway::start(&config("https", &mutual), &token);
    let f = until(&gw, "the GPU over mutual TLS", |f| {
        f["backends"][0]["gpus"]
            .as_array()
            .is_some_and(|g| g.len() == 1)
    })
    .await;
    assert_eq!(health(&f, 0).0, "healthy", "{f}");
    let logs = all_logs(&gw);
    assert!(logs.contains("node agent connected"), "{logs}");

    // Without a client certificate the agent refuses the handshake.
    let no_cert = Gateway::start(
        &config(
            "https",
            &format!("agent_tls = {{ ca = \"{}\" }}, ", file("ca.pem")),
        ),
        &token,
    );
    until(&no_cert, "drained without a client certificate", |f| {
        health(f, 0).0 == "drained"
    })
    .await;
    let logs = all_logs(&no_cert);
    assert!(logs.contains("node agent unreachable"), "{logs}");

    // A gateway that does not trust the agent's CA (here: the public web
    // PKI's roots) refuses its certificate.
    let untrusting = Gateway::start(&config("https", ""), &token);
    until(&untrusting, "drained with an untrusted agent", |f| {
        health(f, 0).0 == "drained"
    })
    .await;
    let logs = all_logs(&untrusting);
    assert!(logs.to_lowercase().contains("certificate"), "{logs}");
    // Plain HTTP/2 to a TLS agent gets nowhere either.
    let plain = Gateway::start(&config("http", ""), &token);
    until(&plain, "drained over plain HTTP/2", |f| {
        health(f, 0).0 == "drained"
    })
    .await;
    for logs in [logs, all_logs(&plain)] {
        assert!(!logs.contains(AGENT_TOKEN), "{logs}");
    }

    // Settings that cannot work are refused at start, naming the field.
    let refused = |config: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .env("GW_AGENT_TOKEN", AGENT_TOKEN)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("started with {config}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{config}");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        err
    };
    let err = refused(&config("http", &mutual));
    assert!(
        err.contains("agent_tls") && err.contains("https://"),
        "{err}"
    );
    let err = refused(&config(
        "https",
        &format!("agent_tls = {{ cert = \"{}\" }}, ", file("client.pem")),
    ));
    assert!(err.contains("`cert` and `key` go together"), "{err}");
    let err = refused(&config(
        "https",
        &format!("agent_tls = {{ ca = \"{}\" }}, ", file("client.key")),
    ));
    assert!(
        err.contains("agent_tls") && err.contains("holds no PEM certificates"),
        "{err}"
    );
    let err = refused(&config(
        "https",
        "agent_tls = { ca = \"/nonexistent/ca.pem\" }, ",
    ));
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");

    // An agent whose key is not one does not start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--telemetry",
            "sim",
            "--sim",
        ])
        .arg(a.url())
        .args([
            "--tls-cert",
            &file("agent.pem"),
            "--tls-key",
            &file("ca.pem"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tls-key") && err.contains("holds no PEM private key"),
        "{err}"
    );
}
