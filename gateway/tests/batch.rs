//! Batches end to end over gRPC: the real gateway binary, a client
//! generated from `proto/`, reflection, and SIGKILL in the middle of
//! running and of creating batches.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: panics are failures"
)]

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::batch_service_client::BatchServiceClient;
use tonic::transport::Channel;

const KEY: (&str, &str) = ("TEST_KEY", "sk-test-key-0123456789");

/// A gateway over fake `f` (model group `m`) with batches stored in `dir`.
fn config(f: &FakeUpstream, dir: &std::path::Path, extra: &str) -> String {
    ordered_config(
        &[f],
        &format!(
            "[batch]\nenabled = true\ndir = \"{}\"\ngrpc_listen = \"127.0.0.1:0\"\nconcurrency = 8\n{extra}\n",
            dir.display()
        ),
    )
}

/// The gRPC address from the start-up log.
fn grpc_addr(gw: &Gateway) -> SocketAddr {
    gw.startup
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("gRPC listening"))
        })
        .and_then(|v| v["addr"].as_str().map(|a| a.parse().unwrap()))
        .expect("no `gRPC listening` line")
}

async fn connect(gw: &Gateway) -> BatchServiceClient<Channel> {
    BatchServiceClient::connect(format!("http://{}", grpc_addr(gw)))
        .await
        .unwrap()
}

fn item(i: usize) -> pb::BatchItem {
    pb::BatchItem {
        custom_id: format!("item-{i}"),
        endpoint: 0,
        body: json!({"model": "m", "messages": [{"role": "user", "content": format!("question {i}")}]})
            .to_string()
            .into_bytes(),
    }
}

fn spec(window_s: u64) -> pb::CreateBatchRequest {
    pb::CreateBatchRequest {
        part: Some(pb::create_batch_request::Part::Spec(pb::BatchSpec {
            endpoint: pb::Endpoint::ChatCompletions as i32,
            due: Some(pb::batch_spec::Due::CompletionWindowSeconds(window_s)),
            priority: 0,
            metadata: HashMap::from([("job".to_owned(), "test".to_owned())]),
        })),
    }
}

fn chunk(items: Vec<pb::BatchItem>) -> pb::CreateBatchRequest {
    pb::CreateBatchRequest {
        part: Some(pb::create_batch_request::Part::Items(pb::ItemChunk {
            items,
        })),
    }
}

async fn create(
    c: &mut BatchServiceClient<Channel>,
    msgs: Vec<pb::CreateBatchRequest>,
) -> Result<pb::Batch, tonic::Status> {
    c.create_batch(tokio_stream::iter(msgs))
        .await
        .map(tonic::Response::into_inner)
}

/// Every committed result of a batch (no follow).
async fn results(c: &mut BatchServiceClient<Channel>, id: &str) -> Vec<pb::BatchResult> {
    let mut s = c
        .stream_results(pb::StreamResultsRequest {
            batch_id: id.into(),
            cursor: 0,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        out.push(r);
    }
    out
}

/// The prompt of a request the fake received.
fn prompt(r: &switchyard_fakes::RecordedRequest) -> String {
    r.body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn sigkill_mid_batch_leaves_exactly_one_result_per_item_and_never_reruns_a_finished_one() {
    const N: usize = 300;
    let fake = fake().await;
    // Each request waits 25 ms upstream: the batch takes over a second.
    for _ in 0..(3 * N) {
        fake.push_fault(Fault::SlowFirstByte { delay_ms: 25 });
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake, dir.path(), "");
    let mut gw = Gateway::start(&cfg, &[KEY]);
    let mut c = connect(&gw).await;
    let mut msgs = vec![spec(3_600)];
    msgs.extend(
        (0..N)
            .collect::<Vec<_>>()
            .chunks(64)
            .map(|ids| chunk(ids.iter().map(|&i| item(i)).collect())),
    );
    let batch = create(&mut c, msgs).await.unwrap();
    assert_eq!(batch.counts.as_ref().unwrap().total, N as u64);
    assert_eq!(batch.state, pb::BatchState::InProgress as i32);

    // Kill -9 three times while it runs; before each kill, note what had
    // been committed and how many requests the upstream had seen.
    let mut committed_before: Vec<(HashSet<String>, usize)> = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(250 + 100 * round)).await;
        let done: HashSet<String> = results(&mut c, &batch.id)
            .await
            .into_iter()
            .map(|r| r.custom_id)
            .collect();
        let seen = fake.requests().len();
        gw.child.kill().unwrap();
        gw.child.wait().unwrap();
        assert!(
            done.len() < N,
            "round {round}: the batch finished before the kill; slow it down"
        );
        committed_before.push((done, seen));
        gw = Gateway::start(&cfg, &[KEY]);
        c = connect(&gw).await;
    }
    // Then it finishes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let b = c
            .get_batch(pb::GetBatchRequest {
                id: batch.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if b.state != pb::BatchState::InProgress as i32 {
            break b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "batch did not finish: {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(finished.state, pb::BatchState::Completed as i32);
    let counts = finished.counts.unwrap();
    assert_eq!(
        (counts.total, counts.succeeded, counts.pending),
        (N as u64, N as u64, 0)
    );
    assert_eq!(
        counts.placed_external, N as u64,
        "a group with no local GPU runs externally"
    );

    // Exactly one result per item, each the answer to its own question.
    let all = results(&mut c, &batch.id).await;
    assert_eq!(all.len(), N);
    let mut ids = HashSet::new();
    let mut cursors = HashSet::new();
    for r in &all {
        assert!(
            ids.insert(r.custom_id.clone()),
            "duplicate result for {}",
            r.custom_id
        );
        assert!(cursors.insert(r.cursor));
        assert_eq!(r.outcome, pb::Outcome::Succeeded as i32);
        assert_eq!(r.status_code, 200);
        let i: usize = r.custom_id.strip_prefix("item-").unwrap().parse().unwrap();
        assert_eq!(r.index, i as u64);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let text = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(text, format!("Fake answer to: question {i}"));
    }
    // Results stream in cursor order, and resume after a cursor.
    assert!(all.windows(2).all(|w| w[0].cursor < w[1].cursor));
    let mid = all[N / 2].cursor;
    let rest = c
        .stream_results(pb::StreamResultsRequest {
            batch_id: batch.id.clone(),
            cursor: mid,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let rest: Vec<pb::BatchResult> = futures_util::StreamExt::collect::<Vec<_>>(rest)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rest.len(), N - N / 2 - 1);

    // No item whose result had committed before a kill was requested again.
    let requests = fake.requests();
    for (round, (done, seen)) in committed_before.iter().enumerate() {
        let again: Vec<String> = requests[*seen..]
            .iter()
            .map(prompt)
            .filter(|p| done.contains(&p.replace("question ", "item-")))
            .collect();
        assert!(
            again.is_empty(),
            "round {round}: finished items ran again: {again:?}"
        );
    }
    // Every item reached the upstream; the re-runs are the few in flight
    // at each kill.
    let asked: HashSet<String> = requests.iter().map(prompt).collect();
    assert_eq!(asked.len(), N);
    assert!(
        requests.len() < N + 3 * 2 * 8,
        "{} requests",
        requests.len()
    );

    // The OpenAI-format output file agrees.
    let out = client()
        .get(gw.url(&format!("/v1/files/{}/content", finished.output_file_id)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), N);
    assert_eq!(lines[7]["custom_id"], "item-7");
    assert_eq!(lines[7]["response"]["status_code"], 200);
}

#[tokio::test]
async fn a_cancelled_batch_stays_cancelled_and_an_unacknowledged_create_leaves_nothing() {
    let fake = fake().await;
    for _ in 0..200 {
        fake.push_fault(Fault::SlowFirstByte { delay_ms: 200 });
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake, dir.path(), "");
    let mut gw = Gateway::start(&cfg, &[KEY]);
    let mut c = connect(&gw).await;
    let batch = create(
        &mut c,
        vec![spec(3_600), chunk((0..100).map(item).collect())],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled = c
        .cancel_batch(pb::CancelBatchRequest {
            id: batch.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, pb::BatchState::Cancelled as i32);
    let counts = cancelled.counts.unwrap();
    assert!(counts.cancelled > 50, "{counts:?}");
    assert_eq!(counts.succeeded + counts.cancelled + counts.failed, 100);
    let again = c
        .cancel_batch(pb::CancelBatchRequest {
            id: batch.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    // A create whose stream is cut by SIGKILL was never acknowledged.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(spec(3_600)).await.unwrap();
    tx.send(chunk((0..50).map(item).collect())).await.unwrap();
    let mut c2 = c.clone();
    let pending = tokio::spawn(async move {
        c2.create_batch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = fake.requests().len();
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    assert!(pending.await.unwrap().is_err());
    drop(tx);

    gw = Gateway::start(&cfg, &[KEY]);
    c = connect(&gw).await;
    let list = c
        .list_batches(pb::ListBatchesRequest {
            limit: 0,
            after: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.batches.len(), 1, "{list:?}");
    let kept = &list.batches[0];
    assert_eq!(kept.id, batch.id);
    assert_eq!(kept.state, pb::BatchState::Cancelled as i32);
    assert_eq!(kept.counts, Some(counts));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.requests().len(), seen, "nothing ran after the restart");
    // Cancelled items report as such, once each.
    let all = results(&mut c, &batch.id).await;
    assert_eq!(all.len(), 100);
    let cancelled_results = all
        .iter()
        .filter(|r| r.outcome == pb::Outcome::Cancelled as i32)
        .count() as u64;
    assert_eq!(cancelled_results, counts.cancelled);
}

#[tokio::test]
async fn bad_batches_get_precise_grpc_statuses() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake, dir.path(), "max_items = 10\n")
        + "\n[auth]\nmaster_key = { env = \"MASTER\" }\n";
    let gw = Gateway::start(&cfg, &[KEY, ("MASTER", "sk-master-0123456789")]);
    let channel = Channel::from_shared(format!("http://{}", grpc_addr(&gw)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Without the key.
    let mut anon = BatchServiceClient::new(channel.clone());
    let e = anon
        .get_batch(pb::GetBatchRequest {
            id: "batch_x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut c = BatchServiceClient::with_interceptor(channel, |mut r: tonic::Request<()>| {
        r.metadata_mut().insert(
            "authorization",
            "Bearer sk-master-0123456789".parse().unwrap(),
        );
        Ok(r)
    });
    let code = |r: Result<tonic::Response<pb::Batch>, tonic::Status>| r.unwrap_err().code();
    // Duplicate custom_id, across chunks: refused whole.
    let dup = c
        .create_batch(tokio_stream::iter(vec![
            spec(60),
            chunk(vec![item(1), item(2)]),
            chunk(vec![item(3), item(1)]),
        ]))
        .await;
    let e = dup.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("item-1"), "{}", e.message());
    // Over max_items.
    let many = c
        .create_batch(tokio_stream::iter(vec![
            spec(60),
            chunk((0..11).map(item).collect()),
        ]))
        .await;
    assert_eq!(code(many), tonic::Code::InvalidArgument);
    // No spec first; an empty batch; a deadline in the past.
    let nospec = c
        .create_batch(tokio_stream::iter(vec![chunk(vec![item(1)])]))
        .await;
    assert_eq!(code(nospec), tonic::Code::InvalidArgument);
    let empty = c.create_batch(tokio_stream::iter(vec![spec(60)])).await;
    assert_eq!(code(empty), tonic::Code::InvalidArgument);
    let past = pb::CreateBatchRequest {
        part: Some(pb::create_batch_request::Part::Spec(pb::BatchSpec {
            due: Some(pb::batch_spec::Due::DeadlineUnixMs(1_000)),
            ..Default::default()
        })),
    };
    let past = c
        .create_batch(tokio_stream::iter(vec![past, chunk(vec![item(1)])]))
        .await;
    assert_eq!(code(past), tonic::Code::InvalidArgument);
    let missing = c
        .get_batch(pb::GetBatchRequest {
            id: "batch_nope".into(),
        })
        .await;
    assert_eq!(code(missing), tonic::Code::NotFound);
    // None of those left a batch behind.
    let list = c
        .list_batches(pb::ListBatchesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.batches.is_empty(), "{list:?}");

    // Per-item problems are results, not refusals.
    let bad_items = vec![
        item(1),
        pb::BatchItem {
            custom_id: "unknown-model".into(),
            endpoint: 0,
            body: br#"{"model":"nope","messages":[]}"#.to_vec(),
        },
        pb::BatchItem {
            custom_id: "not-json".into(),
            endpoint: 0,
            body: b"{".to_vec(),
        },
        pb::BatchItem {
            custom_id: "bad-endpoint".into(),
            endpoint: 42,
            body: item(2).body,
        },
        pb::BatchItem {
            custom_id: "streams".into(),
            endpoint: 0,
            body: br#"{"model":"m","stream":true,"messages":[]}"#.to_vec(),
        },
        // Two items without a custom_id fail on their own, not as duplicates.
        pb::BatchItem {
            custom_id: String::new(),
            endpoint: 0,
            body: item(3).body,
        },
        pb::BatchItem {
            custom_id: String::new(),
            endpoint: 0,
            body: item(4).body,
        },
    ];
    let b = c
        .create_batch(tokio_stream::iter(vec![spec(60), chunk(bad_items)]))
        .await
        .unwrap()
        .into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let b = loop {
        let b = c
            .get_batch(pb::GetBatchRequest { id: b.id.clone() })
            .await
            .unwrap()
            .into_inner();
        if b.state == pb::BatchState::Completed as i32 {
            break b;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let counts = b.counts.unwrap();
    assert_eq!((counts.succeeded, counts.failed), (1, 6));
    let mut s = c
        .stream_results(pb::StreamResultsRequest {
            batch_id: b.id.clone(),
            cursor: 0,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut codes = HashMap::new();
    let mut anonymous = 0;
    while let Some(r) = s.message().await.unwrap() {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let code = (
            r.status_code,
            body["error"]["code"].as_str().map(str::to_owned),
        );
        if r.custom_id.is_empty() {
            assert_eq!(code, (400, Some("missing_custom_id".into())));
            anonymous += 1;
        } else {
            codes.insert(r.custom_id, code);
        }
    }
    assert_eq!(anonymous, 2);
    assert_eq!(
        codes["unknown-model"],
        (404, Some("model_not_found".into()))
    );
    assert_eq!(codes["not-json"], (400, Some("invalid_body".into())));
    assert_eq!(
        codes["bad-endpoint"],
        (400, Some("unknown_endpoint".into()))
    );
    assert_eq!(codes["streams"], (400, Some("stream_not_supported".into())));
    assert_eq!(codes["item-1"].0, 200);
}

#[tokio::test]
async fn reflection_lists_the_services_like_grpcurl() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&fake, dir.path(), ""), &[KEY]);
    let channel = Channel::from_shared(format!("http://{}", grpc_addr(&gw)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut r = ServerReflectionClient::new(channel);
    let ask = |m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let replies = r
        .server_reflection_info(tokio_stream::iter(vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "switchyard.v1.BatchService".into(),
            )),
        ]))
        .await
        .unwrap()
        .into_inner();
    let replies: Vec<_> = futures_util::StreamExt::collect::<Vec<_>>(replies).await;
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies[0].as_ref().unwrap().message_response.clone()
    else {
        panic!("{replies:?}")
    };
    let names: HashSet<String> = list.service.into_iter().map(|s| s.name).collect();
    let expected: HashSet<String> = [
        "switchyard.v1.BatchService",
        "grpc.reflection.v1.ServerReflection",
    ]
    .map(str::to_owned)
    .into();
    // The node agents' TelemetryService is not served here, so not listed.
    assert_eq!(names, expected);
    let Some(MessageResponse::FileDescriptorResponse(fd)) =
        replies[1].as_ref().unwrap().message_response.clone()
    else {
        panic!("{replies:?}")
    };
    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(
        fd.file_descriptor_proto[0].as_slice(),
    )
    .unwrap();
    assert_eq!(file.name(), "switchyard/v1/batch.proto");
    let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
    assert_eq!(
        methods,
        [
            "CreateBatch",
            "GetBatch",
            "ListBatches",
            "CancelBatch",
            "StreamResults"
        ]
    );
}
