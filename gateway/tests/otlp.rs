//! OpenTelemetry export end to end: the real binary, configured with
//! `[tracing] otlp_endpoint`, sends its request spans to a stand-in OTLP
//! collector (a tonic server built from the protocol's own definitions,
//! `opentelemetry-proto`) while it serves a request on a SIMULATED GPU.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use support::*;
use switchyard_fakes::sim::{SimConfig, SimEngine};
use switchyard_scheduler::profile::GpuProfile;

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((service.clone(), s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let a = span.attributes.iter().find(|a| a.key == key)?;
    Some(match a.value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::BoolValue(b) => b.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

#[tokio::test]
async fn request_spans_reach_the_collector_as_one_trace_without_the_prompt() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let sim = SimEngine::start(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            name: "sim-h100-0".into(),
            profile: GpuProfile::named("h100").unwrap(),
            models: vec!["llama".into()],
            speed: 1.0,
            default_output_tokens: 8,
            gpu_index: 0,
            host_kv_tokens: 0,
        },
    )
    .await
    .unwrap();
    let config = format!(
        "[tracing]\notlp_endpoint = \"http://{addr}\"\nservice_name = \"switchyard-test\"\n\n\
         [cache]\nenabled = true\n\n\
         [providers.sim-h100-0]\ntype = \"openai_compat\"\nbase_url = \"{}/v1\"\n\
         local = {{ gpu = \"h100\", gpu_hour_usd = 2.0, permits = 8, telemetry = \"sim\" }}\n\n\
         [[model_groups]]\nname = \"llama\"\n[[model_groups.deployments]]\nprovider = \"sim-h100-0\"\nmodel = \"llama\"\n",
        sim.url()
    );
    let gw = Gateway::start(&config, &[]);
    let secret = "my card is 4111 1111 1111 1111";
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "trace-me-1")
        .json(&json!({"model": "llama", "max_tokens": 4,
                      "messages": [{"role": "user", "content": secret}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    // The batch processor exports every 5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = collector.spans.lock().unwrap().clone();
        if spans.iter().any(|(_, s)| s.name == "request") && spans.len() >= 4 {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans received: {:?}",
            spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(spans.iter().all(|(svc, _)| svc == "switchyard-test"));
    let by_name = |n: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no `{n}` span"))
    };
    let root = by_name("request");
    assert!(root.parent_span_id.is_empty(), "request is the root");
    assert_eq!(attr(root, "request_id").as_deref(), Some("trace-me-1"));
    assert_eq!(
        attr(root, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(root, "url.path").as_deref(),
        Some("/v1/chat/completions")
    );
    for name in ["cache.lookup", "placement", "upstream"] {
        let s = by_name(name);
        assert_eq!(
            s.trace_id, root.trace_id,
            "{name} is in the request's trace"
        );
        assert_eq!(
            s.parent_span_id, root.span_id,
            "{name} is a child of request"
        );
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    }
    assert_eq!(
        attr(by_name("cache.lookup"), "cache.result").as_deref(),
        Some("miss")
    );
    assert_eq!(
        attr(by_name("placement"), "model_group").as_deref(),
        Some("llama")
    );
    let up = by_name("upstream");
    assert_eq!(attr(up, "deployment").as_deref(), Some("sim-h100-0/llama"));
    assert_eq!(attr(up, "attempt").as_deref(), Some("1"));
    // The prompt is in no span, attribute or event.
    let dump = format!("{spans:?}");
    assert!(!dump.contains("4111"), "the prompt leaked into a span");
    drop(gw);
}
