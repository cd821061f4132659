//! `switchyard.v1.BatchService` over tonic, with server reflection, on
//! `[batch] grpc_listen`. With `auth.master_key` set, every call needs
//! `authorization: Bearer <master key>` metadata.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use secrecy::SecretString;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::batch_service_server::{BatchService, BatchServiceServer};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::store::BatchSpec;
use super::{BatchError, BatchRow, Batches, Endpoint, ItemState, NewItem, ResultRow, State};
use crate::api::middleware::GrpcBearer;

/// Longest completion window, seconds (366 days).
const MAX_WINDOW_S: u64 = 366 * 86_400;

/// Results sent per store read.
const RESULTS_PAGE: usize = 512;

#[derive(Debug, Clone)]
pub struct Service {
    batches: Arc<Batches>,
}

impl From<BatchError> for Status {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Invalid(m) => Status::invalid_argument(m),
            BatchError::NotFound(m) => Status::not_found(m),
            BatchError::Conflict(m) => Status::failed_precondition(m),
            BatchError::Store(e) => {
                tracing::error!(error = %e, "batch store error");
                Status::internal("batch store error (logged)")
            }
        }
    }
}

fn endpoint_from_pb(v: i32) -> Result<Option<Endpoint>, i32> {
    match pb::Endpoint::try_from(v) {
        Ok(pb::Endpoint::Unspecified) => Ok(None),
        Ok(pb::Endpoint::ChatCompletions) => Ok(Some(Endpoint::ChatCompletions)),
        Ok(pb::Endpoint::Embeddings) => Ok(Some(Endpoint::Embeddings)),
        Ok(pb::Endpoint::Completions) => Ok(Some(Endpoint::Completions)),
        Err(_) => Err(v),
    }
}

fn endpoint_to_pb(e: Endpoint) -> pb::Endpoint {
    match e {
        Endpoint::ChatCompletions => pb::Endpoint::ChatCompletions,
        Endpoint::Embeddings => pb::Endpoint::Embeddings,
        Endpoint::Completions => pb::Endpoint::Completions,
    }
}

/// A stored batch as the proto's message.
pub fn batch_to_pb(r: &BatchRow) -> pb::Batch {
    let c = r.counts;
    let u = |v: i64| v.max(0) as u64;
    pb::Batch {
        id: r.id.clone(),
        state: match r.state {
            State::InProgress => pb::BatchState::InProgress,
            State::Completed | State::Failed => pb::BatchState::Completed,
            State::Cancelled => pb::BatchState::Cancelled,
            State::Expired => pb::BatchState::Expired,
        } as i32,
        endpoint: endpoint_to_pb(r.endpoint) as i32,
        priority: r.priority.clamp(0, 3) as i32,
        metadata: serde_json::from_str(&r.metadata).unwrap_or_default(),
        counts: Some(pb::ItemCounts {
            total: u(c.total),
            pending: u(c.pending()),
            succeeded: u(c.succeeded),
            failed: u(c.failed),
            cancelled: u(c.cancelled),
            expired: u(c.expired),
            placed_local: u(c.placed_local),
            placed_external: u(c.placed_external),
            from_cache: u(c.from_cache),
        }),
        created_unix_ms: r.created_ms,
        deadline_unix_ms: r.deadline_ms,
        finished_unix_ms: r.finished_ms.unwrap_or(0),
        output_file_id: r.output_file_id.clone().unwrap_or_default(),
        error_file_id: r.error_file_id.clone().unwrap_or_default(),
    }
}

fn result_to_pb(r: ResultRow) -> pb::BatchResult {
    let outcome = match r.state {
        ItemState::Succeeded => pb::Outcome::Succeeded,
        ItemState::Failed => pb::Outcome::Failed,
        ItemState::Cancelled => pb::Outcome::Cancelled,
        ItemState::Expired => pb::Outcome::Expired,
        ItemState::Pending => pb::Outcome::Unspecified,
    };
    pb::BatchResult {
        cursor: r.cursor.max(0) as u64,
        custom_id: r.custom_id.unwrap_or_default(),
        index: r.index,
        outcome: outcome as i32,
        status_code: u32::from(r.status.unwrap_or(0)),
        body: r.response.unwrap_or_default(),
        placement: r.placement,
        finished_unix_ms: r.finished_ms,
    }
}

/// A batch's fixed fields from the first message of `CreateBatch`.
pub fn spec_from_pb(spec: &pb::BatchSpec, default_window_secs: u64) -> Result<BatchSpec, Status> {
    let endpoint = endpoint_from_pb(spec.endpoint)
        .map_err(|v| Status::invalid_argument(format!("spec.endpoint: unknown value {v}")))?
        .unwrap_or(Endpoint::ChatCompletions);
    let created_ms = super::now_ms();
    let (deadline_ms, window) = match spec.due {
        Some(pb::batch_spec::Due::CompletionWindowSeconds(s))
            if (1..=MAX_WINDOW_S).contains(&s) =>
        {
            (created_ms + (s as i64) * 1_000, format!("{s}s"))
        }
        Some(pb::batch_spec::Due::CompletionWindowSeconds(_)) => {
            return Err(Status::invalid_argument(format!(
                "spec.completion_window_seconds must be 1 to {MAX_WINDOW_S} (366 days)"
            )));
        }
        Some(pb::batch_spec::Due::DeadlineUnixMs(d))
            if d > created_ms && d - created_ms <= (MAX_WINDOW_S as i64) * 1_000 =>
        {
            (d, format!("{}s", (d - created_ms + 999) / 1_000))
        }
        Some(pb::batch_spec::Due::DeadlineUnixMs(_)) => {
            return Err(Status::invalid_argument(
                "spec.deadline_unix_ms must be in the future and within 366 days",
            ));
        }
        None => (
            created_ms + (default_window_secs as i64) * 1_000,
            format!("{default_window_secs}s"),
        ),
    };
    let priority = match pb::Priority::try_from(spec.priority) {
        Ok(pb::Priority::Unspecified | pb::Priority::Normal) => 2,
        Ok(pb::Priority::Low) => 1,
        Ok(pb::Priority::High) => 3,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "spec.priority: unknown value {}",
                spec.priority
            )));
        }
    };
    let metadata = serde_json::to_string(&spec.metadata).unwrap_or_else(|_| "{}".into());
    Ok(BatchSpec {
        id: format!("batch_{}", uuid::Uuid::new_v4().simple()),
        endpoint,
        priority,
        metadata,
        input_file_id: None,
        completion_window: window,
        created_ms,
        deadline_ms,
        // gRPC callers hold the master key: the default tenant.
        owner: crate::access::DEFAULT_TENANT.into(),
        owner_key: None,
    })
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<pb::BatchResult, Status>> + Send>>;

#[tonic::async_trait]
impl BatchService for Service {
    async fn create_batch(
        &self,
        request: Request<Streaming<pb::CreateBatchRequest>>,
    ) -> Result<Response<pb::Batch>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty stream: send a spec first"))?;
        let Some(pb::create_batch_request::Part::Spec(spec)) = first.part else {
            return Err(Status::invalid_argument(
                "the first message must carry the batch's spec",
            ));
        };
        let spec = spec_from_pb(&spec, self.batches.settings.default_window_secs)?;
        let endpoint = spec.endpoint;
        let mut creating = self.batches.begin(spec).await?;
        while let Some(msg) = stream.message().await? {
            match msg.part {
                Some(pb::create_batch_request::Part::Items(chunk)) => {
                    for item in chunk.items {
                        let (endpoint, invalid) = match endpoint_from_pb(item.endpoint) {
                            Ok(e) => (e.unwrap_or(endpoint), None),
                            Err(v) => (
                                endpoint,
                                Some(super::Invalid::request(
                                    400,
                                    "unknown_endpoint",
                                    Some("endpoint"),
                                    format!("Unknown endpoint value {v}."),
                                )),
                            ),
                        };
                        creating
                            .push(NewItem {
                                custom_id: Some(item.custom_id),
                                endpoint,
                                body: item.body,
                                invalid,
                            })
                            .await?;
                    }
                }
                Some(pb::create_batch_request::Part::Spec(_)) => {
                    return Err(Status::invalid_argument(
                        "only the first message may carry a spec",
                    ));
                }
                None => {}
            }
        }
        let row = creating.finish().await?;
        Ok(Response::new(batch_to_pb(&row)))
    }

    async fn get_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let row = self.batches.get(&request.into_inner().id).await?;
        Ok(Response::new(batch_to_pb(&row)))
    }

    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 20,
            n @ 1..=100 => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit {n}: between 1 and 100"
                )));
            }
        };
        let store = self.batches.store.clone();
        let after = (!req.after.is_empty()).then_some(req.after);
        let mut rows = super::blocking(move || {
            store.list(limit, after.as_deref(), crate::access::DEFAULT_TENANT)
        })
        .await
        .map_err(BatchError::from)?;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        Ok(Response::new(pb::ListBatchesResponse {
            batches: rows.iter().map(batch_to_pb).collect(),
            has_more,
        }))
    }

    async fn cancel_batch(
        &self,
        request: Request<pb::CancelBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let row = self.batches.cancel(&request.into_inner().id).await?;
        Ok(Response::new(batch_to_pb(&row)))
    }

    type StreamResultsStream = ResultStream;

    async fn stream_results(
        &self,
        request: Request<pb::StreamResultsRequest>,
    ) -> Result<Response<Self::StreamResultsStream>, Status> {
        let req = request.into_inner();
        let row = self.batches.get(&req.batch_id).await?;
        let cursor = i64::try_from(req.cursor)
            .map_err(|_| Status::invalid_argument("cursor out of range"))?;
        let batches = self.batches.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(RESULTS_PAGE);
        tokio::spawn(async move {
            let mut cursor = cursor;
            let mut progress = batches.progress.subscribe();
            let seq = row.seq;
            let id = row.id;
            loop {
                // Whether the batch was over before this read: then what
                // this read finds is all there will ever be.
                progress.borrow_and_update();
                let over = match batches.get(&id).await {
                    Ok(b) => b.state.is_final(),
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let store = batches.store.clone();
                let page = super::blocking(move || store.results(seq, cursor, RESULTS_PAGE)).await;
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(BatchError::from(e)))).await;
                        return;
                    }
                };
                let full = page.len() == RESULTS_PAGE;
                for r in page {
                    cursor = r.cursor;
                    if tx.send(Ok(result_to_pb(r))).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                if over || !req.follow {
                    return;
                }
                tokio::select! {
                    changed = progress.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream) as ResultStream))
    }
}

/// Binds the gRPC listener and serves BatchService and reflection until
/// the process ends. Returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    batches: Arc<Batches>,
    master_key: Option<SecretString>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .with_service_name("switchyard.v1.BatchService")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()?;
    let service = tonic::service::interceptor::InterceptedService::new(
        BatchServiceServer::new(Service { batches }).max_decoding_message_size(64 * 1024 * 1024),
        GrpcBearer {
            secret: master_key.map(Arc::new),
            missing: "missing `authorization: Bearer <key>` metadata",
            wrong: "incorrect API key",
        },
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(reflection)
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });
    tracing::info!(addr = %addr, "gRPC listening (BatchService, reflection)");
    Ok(addr)
}
