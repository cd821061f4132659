//! Retries, fallback, circuit breaking and mid-stream failures, against
//! the real binary and faulty fake upstreams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::*;

const KEY: (&str, &str) = ("TEST_KEY", "sk-test-key-0123456789");

#[tokio::test]
async fn retries_a_500_then_succeeds_on_the_same_deployment() {
    let a = fake().await;
    a.push_fault(Fault::Status {
        status: 500,
        retry_after_secs: None,
        message: None,
    });
    let gw = Gateway::start(&ordered_config(&[&a], ""), &[KEY]);
    let resp = post_chat(&gw, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-backend"], "p0/up0");
    assert_eq!(a.requests().len(), 2, "one failed attempt, one retry");
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let a = fake().await;
    a.push_fault(Fault::Status {
        status: 429,
        retry_after_secs: Some(1),
        message: None,
    });
    let gw = Gateway::start(&ordered_config(&[&a], ""), &[KEY]);
    let t = Instant::now();
    let resp = post_chat(&gw, false).await;
    assert_eq!(resp.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        t.elapsed()
    );
    // The wait is upstream time, not gateway overhead.
    let overhead: f64 = resp.headers()["x-switchyard-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead < 100.0, "overhead {overhead} ms");
}

#[tokio::test]
async fn connection_reset_is_retried() {
    let a = fake().await;
    a.push_fault(Fault::Reset);
    let gw = Gateway::start(&ordered_config(&[&a], ""), &[KEY]);
    let resp = post_chat(&gw, true).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn slow_first_byte_falls_back_to_next_deployment() {
    let (a, b) = (fake().await, fake().await);
    for _ in 0..3 {
        a.push_fault(Fault::SlowFirstByte { delay_ms: 3_000 });
    }
    let gw = Gateway::start(
        &ordered_config(&[&a, &b], "[breaker]\nfailure_threshold = 10\n"),
        &[KEY],
    );
    let t = Instant::now();
    let resp = post_chat(&gw, true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-backend"], "p1/up1");
    // Three TTFT time-outs of 1 s on A, then B.
    assert!(t.elapsed() >= Duration::from_secs(3) && t.elapsed() < Duration::from_secs(8));
    assert!(resp.text().await.unwrap().contains("[DONE]"));
}

#[tokio::test]
async fn client_errors_are_not_retried_or_failed_over() {
    let (a, b) = (fake().await, fake().await);
    a.push_fault(Fault::Status {
        status: 400,
        retry_after_secs: None,
        message: Some("context too long".into()),
    });
    let gw = Gateway::start(&ordered_config(&[&a, &b], ""), &[KEY]);
    let resp = post_chat(&gw, false).await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "context too long");
    assert_eq!(a.requests().len(), 1);
    assert_eq!(b.requests().len(), 0);
}

#[tokio::test]
async fn upstream_credentials_never_reach_the_client() {
    // The upstream rejects the key and echoes it back, as OpenAI does.
    let a = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeConfig {
            api_key: Some("the-right-key".into()),
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    a.push_fault(Fault::Status {
        status: 401,
        retry_after_secs: None,
        message: Some(format!("Incorrect API key provided: {}", KEY.1)),
    });
    let gw = Gateway::start(&ordered_config(&[&a], ""), &[KEY]);
    let resp = post_chat(&gw, false).await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(KEY.1), "{text}");
    assert!(text.contains("upstream_auth_failed"), "{text}");
    let logs = gw.drain_logs().join("\n");
    assert!(!logs.contains(KEY.1), "key leaked into logs");
}

#[tokio::test]
async fn breaker_opens_and_skips_the_failing_deployment() {
    let (a, b) = (fake().await, fake().await);
    for _ in 0..20 {
        a.push_fault(Fault::Status {
            status: 503,
            retry_after_secs: None,
            message: None,
        });
    }
    let extra = "[breaker]\nfailure_threshold = 3\nopen_ms = 60000\n\n[auth]\nmaster_key = { env = \"MASTER\" }\n";
    let gw = Gateway::start(
        &ordered_config(&[&a, &b], extra),
        &[KEY, ("MASTER", "master-secret")],
    );
    let c = client();
    for _ in 0..4 {
        let resp = c
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("master-secret")
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-switchyard-backend"], "p1/up1");
    }
    // 3 attempts opened the breaker; later requests never touched A.
    assert_eq!(a.requests().len(), 3);
    assert_eq!(b.requests().len(), 4);
    let admin: serde_json::Value = c
        .get(gw.url("/admin/deployments"))
        .bearer_auth("master-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deps = &admin["model_groups"][0]["deployments"];
    assert_eq!(deps[0]["breaker"]["state"], "open");
    assert_eq!(deps[1]["breaker"]["state"], "closed");
}

#[tokio::test]
async fn all_breakers_open_gives_503_with_retry_after() {
    let a = fake().await;
    for _ in 0..10 {
        a.push_fault(Fault::Status {
            status: 500,
            retry_after_secs: None,
            message: None,
        });
    }
    let gw = Gateway::start(
        &ordered_config(&[&a], "[breaker]\nfailure_threshold = 3\nopen_ms = 60000\n"),
        &[KEY],
    );
    let c = client();
    let first = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 502);
    let second = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    let after: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&after));
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_healthy_deployment");
    assert_eq!(a.requests().len(), 3);
}

#[tokio::test]
async fn drop_mid_stream_ends_with_an_error_event_not_done() {
    let a = fake().await;
    a.push_fault(Fault::DropMidStream { after_chunks: 3 });
    let gw = Gateway::start(&ordered_config(&[&a], ""), &[KEY]);
    let resp = post_chat(&gw, true).await;
    assert_eq!(resp.status(), 200, "headers were sent with the first chunk");
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 4, "3 chunks then the error: {text}");
    let last: serde_json::Value =
        serde_json::from_str(events[3].trim_start_matches("data: ")).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error");
    assert!(!text.contains("[DONE]"));
    assert_eq!(a.requests().len(), 1, "no retry after the first byte");
}

#[tokio::test]
async fn truncated_json_body_is_retried() {
    let (a, b) = (fake().await, fake().await);
    a.push_fault(Fault::DropMidStream { after_chunks: 10 });
    let gw = Gateway::start(&ordered_config(&[&a, &b], ""), &[KEY]);
    let resp = post_chat(&gw, false).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hello world")
    );
}

#[tokio::test]
async fn unreachable_upstream_fails_over() {
    let b = fake().await;
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let config = ordered_config(&[&b], "").replace(
        "[providers.p0]",
        &format!("[providers.dead]\ntype = \"openai_compat\"\nbase_url = \"http://{dead_addr}/v1\"\n\n[providers.p0]"),
    ).replace(
        "[[model_groups.deployments]]\nprovider = \"p0\"",
        "[[model_groups.deployments]]\nprovider = \"dead\"\nmodel = \"x\"\n[[model_groups.deployments]]\nprovider = \"p0\"",
    );
    let gw = Gateway::start(&config, &[KEY]);
    let resp = post_chat(&gw, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-backend"], "p0/up0");
}

#[tokio::test]
async fn request_log_line_has_the_fields_and_no_prompt() {
    let a = fake().await;
    let gw = Gateway::start(&ordered_config(&[&a], ""), &[KEY]);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "req-abc-123")
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "my secret prompt text"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-abc-123");
    let line = (0..50)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            gw.drain_logs()
                .into_iter()
                .find(|l| l.contains("req-abc-123"))
        })
        .expect("request log line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["model_group"], "m");
    assert_eq!(v["deployment"], "p0/up0");
    assert_eq!(v["status"], 200);
    assert_eq!(v["prompt_tokens"], 4);
    assert!(v["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(!line.contains("secret prompt"));
}
