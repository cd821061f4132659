//! A FAKE Qdrant server for tests: Qdrant's gRPC `Collections` and `Points`
//! services (the generated server traits of qdrant-client), answering the
//! subset of calls the Qdrant store makes, backed by a qdrant-edge shard
//! (Qdrant's own segment engine) per collection. Every other call, and any
//! filter or query shape outside that subset, is `UNIMPLEMENTED`, so the
//! store cannot come to rely on something this fake does not check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use qdrant_client::qdrant::{
    self as grpc, collections_server::Collections, collections_server::CollectionsServer,
    points_server::Points, points_server::PointsServer,
};
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    DEFAULT_VECTOR_NAME, EdgeShard, OrderByInterface, PayloadOps, PointId, PointInsertOperations,
    PointOperations, PointStruct, QueryEnum, QueryRequest, ScoringQuery, ScrollRequest,
    SetPayloadOp, UpdateOperation, WithPayloadInterface, WithVector,
};
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct FakeQdrant {
    dir: Arc<tempfile::TempDir>,
    collections: Arc<Mutex<HashMap<String, Arc<EdgeShard>>>>,
}

/// Starts the fake on a free 127.0.0.1 port; returns its URL.
pub async fn start() -> String {
    let fake = FakeQdrant {
        dir: Arc::new(tempfile::tempdir().unwrap()),
        collections: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CollectionsServer::new(fake.clone()))
            .add_service(PointsServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("the fake Qdrant does not support {what}"))
}

fn failed(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl FakeQdrant {
    fn shard(&self, name: &str) -> Result<Arc<EdgeShard>, Status> {
        self.collections
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("Collection `{name}` doesn't exist!")))
    }
}

fn edge_id(id: &grpc::PointId) -> Result<PointId, Status> {
    match &id.point_id_options {
        Some(grpc::point_id::PointIdOptions::Uuid(s)) => uuid::Uuid::parse_str(s)
            .map(PointId::Uuid)
            .map_err(|e| Status::invalid_argument(e.to_string())),
        Some(grpc::point_id::PointIdOptions::Num(n)) => Ok(PointId::NumId(*n)),
        None => Err(Status::invalid_argument("point id missing")),
    }
}

fn grpc_id(id: PointId) -> grpc::PointId {
    match id {
        PointId::Uuid(u) => u.to_string().into(),
        PointId::NumId(n) => n.into(),
    }
}

fn json_payload(payload: HashMap<String, grpc::Value>) -> Map<String, Value> {
    payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect()
}

fn grpc_payload(payload: Map<String, Value>) -> HashMap<String, grpc::Value> {
    qdrant_client::Payload::from(payload).into()
}

fn path(key: &str) -> Result<qdrant_edge::JsonPath, Status> {
    key.try_into()
        .map_err(|()| Status::invalid_argument(format!("bad key {key}")))
}

/// A filter of `must` field conditions: keyword matches and ranges.
fn edge_filter(f: &grpc::Filter) -> Result<qdrant_edge::Filter, Status> {
    if !f.should.is_empty() || !f.must_not.is_empty() || f.min_should.is_some() {
        return Err(unsupported("should/must_not filters"));
    }
    let mut must = Vec::new();
    for c in &f.must {
        let Some(grpc::condition::ConditionOneOf::Field(fc)) = &c.condition_one_of else {
            return Err(unsupported("non-field conditions"));
        };
        let key = path(&fc.key)?;
        let condition = match (&fc.r#match, &fc.range) {
            (Some(m), None) => match &m.match_value {
                Some(grpc::r#match::MatchValue::Keyword(k)) => {
                    qdrant_edge::FieldCondition::new_match(key, qdrant_edge::Match::from(k.clone()))
                }
                _ => return Err(unsupported("matches other than keyword")),
            },
            (None, Some(r)) => qdrant_edge::FieldCondition::new_range(
                key,
                qdrant_edge::Range {
                    lt: r.lt.map(OrderedFloat),
                    gt: r.gt.map(OrderedFloat),
                    gte: r.gte.map(OrderedFloat),
                    lte: r.lte.map(OrderedFloat),
                },
            ),
            _ => return Err(unsupported("this field condition")),
        };
        must.push(qdrant_edge::Condition::Field(condition));
    }
    Ok(qdrant_edge::Filter {
        should: None,
        min_should: None,
        must: Some(must),
        must_not: None,
    })
}

fn dense(v: &grpc::Vectors) -> Result<Vec<f32>, Status> {
    #[allow(deprecated, reason = "older clients send `data`")]
    match &v.vectors_options {
        Some(grpc::vectors::VectorsOptions::Vector(v)) => match &v.vector {
            Some(grpc::vector::Vector::Dense(d)) => Ok(d.data.clone()),
            None if !v.data.is_empty() => Ok(v.data.clone()),
            _ => Err(unsupported("non-dense vectors")),
        },
        _ => Err(unsupported("named vectors")),
    }
}

fn update(
    shard: &EdgeShard,
    op: UpdateOperation,
) -> Result<Response<grpc::PointsOperationResponse>, Status> {
    shard.update(op).map_err(failed)?;
    Ok(Response::new(grpc::PointsOperationResponse {
        result: Some(grpc::UpdateResult {
            operation_id: Some(0),
            status: grpc::UpdateStatus::Completed as i32,
        }),
        ..Default::default()
    }))
}

fn count(shard: &EdgeShard, filter: Option<qdrant_edge::Filter>) -> Result<usize, Status> {
    shard
        .count(qdrant_edge::CountRequest {
            filter,
            exact: true,
        })
        .map_err(failed)
}

macro_rules! service {
    (impl $trait:ident for $ty:ty { $($done:item)* } unimplemented { $($name:ident($req:ident) -> $resp:ident;)* }) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $($done)*
            $(
                async fn $name(&self, _: Request<grpc::$req>) -> Result<Response<grpc::$resp>, Status> {
                    Err(unsupported(stringify!($name)))
                }
            )*
        }
    };
}

service! {
    impl Collections for FakeQdrant {
        async fn collection_exists(
            &self,
            request: Request<grpc::CollectionExistsRequest>,
        ) -> Result<Response<grpc::CollectionExistsResponse>, Status> {
            let name = request.into_inner().collection_name;
            let exists = self.collections.lock().unwrap().contains_key(&name);
            Ok(Response::new(grpc::CollectionExistsResponse {
                result: Some(grpc::CollectionExists { exists }),
                time: 0.0,
            }))
        }

        async fn create(
            &self,
            request: Request<grpc::CreateCollection>,
        ) -> Result<Response<grpc::CollectionOperationResponse>, Status> {
            let r = request.into_inner();
            let Some(grpc::vectors_config::Config::Params(p)) =
                r.vectors_config.and_then(|v| v.config)
            else {
                return Err(unsupported("collections without one unnamed vector"));
            };
            if p.distance != grpc::Distance::Cosine as i32 {
                return Err(unsupported("distances other than cosine"));
            }
            let mut collections = self.collections.lock().unwrap();
            if collections.contains_key(&r.collection_name) {
                return Err(Status::already_exists(format!(
                    "Collection `{}` already exists!",
                    r.collection_name
                )));
            }
            let dir = self.dir.path().join(&r.collection_name);
            std::fs::create_dir_all(&dir).map_err(failed)?;
            let config = super::edge_config(p.size as usize);
            let shard = EdgeShard::new(&dir, config).map_err(failed)?;
            collections.insert(r.collection_name, Arc::new(shard));
            Ok(Response::new(grpc::CollectionOperationResponse {
                result: true,
                time: 0.0,
            }))
        }

        async fn get(
            &self,
            request: Request<grpc::GetCollectionInfoRequest>,
        ) -> Result<Response<grpc::GetCollectionInfoResponse>, Status> {
            let shard = self.shard(&request.into_inner().collection_name)?;
            let info = shard.info();
            let size = shard
                .config()
                .vectors
                .get(DEFAULT_VECTOR_NAME)
                .map_or(0, |v| v.size as u64);
            Ok(Response::new(grpc::GetCollectionInfoResponse {
                result: Some(grpc::CollectionInfo {
                    status: grpc::CollectionStatus::Green as i32,
                    segments_count: info.segments_count as u64,
                    points_count: Some(info.points_count as u64),
                    indexed_vectors_count: Some(info.indexed_vectors_count as u64),
                    config: Some(grpc::CollectionConfig {
                        params: Some(grpc::CollectionParams {
                            vectors_config: Some(grpc::VectorsConfig {
                                config: Some(grpc::vectors_config::Config::Params(
                                    grpc::VectorParams {
                                        size,
                                        distance: grpc::Distance::Cosine as i32,
                                        ..Default::default()
                                    },
                                )),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                time: 0.0,
            }))
        }
    }
    unimplemented {
        list(ListCollectionsRequest) -> ListCollectionsResponse;
        update(UpdateCollection) -> CollectionOperationResponse;
        delete(DeleteCollection) -> CollectionOperationResponse;
        update_aliases(ChangeAliases) -> CollectionOperationResponse;
        list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse;
        list_aliases(ListAliasesRequest) -> ListAliasesResponse;
        collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
        update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
        create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
        delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
        list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
    }
}

service! {
    impl Points for FakeQdrant {
        async fn create_field_index(
            &self,
            request: Request<grpc::CreateFieldIndexCollection>,
        ) -> Result<Response<grpc::PointsOperationResponse>, Status> {
            let r = request.into_inner();
            let shard = self.shard(&r.collection_name)?;
            let kind = match grpc::FieldType::try_from(r.field_type.unwrap_or(-1)) {
                Ok(grpc::FieldType::Keyword) => qdrant_edge::PayloadSchemaType::Keyword,
                Ok(grpc::FieldType::Float) => qdrant_edge::PayloadSchemaType::Float,
                _ => return Err(unsupported("this index type")),
            };
            update(
                &shard,
                UpdateOperation::FieldIndexOperation(qdrant_edge::FieldIndexOperations::CreateIndex(
                    qdrant_edge::CreateIndex {
                        field_name: path(&r.field_name)?,
                        field_schema: Some(qdrant_edge::PayloadFieldSchema::FieldType(kind)),
                    },
                )),
            )
        }

        async fn upsert(
            &self,
            request: Request<grpc::UpsertPoints>,
        ) -> Result<Response<grpc::PointsOperationResponse>, Status> {
            let r = request.into_inner();
            let shard = self.shard(&r.collection_name)?;
            let size = shard.config().vectors.get(DEFAULT_VECTOR_NAME).map_or(0, |v| v.size);
            let mut points = Vec::with_capacity(r.points.len());
            for p in r.points {
                let id = edge_id(p.id.as_ref().ok_or_else(|| Status::invalid_argument("id"))?)?;
                let vector = dense(p.vectors.as_ref().ok_or_else(|| Status::invalid_argument("vectors"))?)?;
                if vector.len() != size {
                    return Err(Status::invalid_argument(format!(
                        "Wrong input: Vector dimension error: expected dim: {size}, got {}",
                        vector.len()
                    )));
                }
                points.push(PointStruct::new(id, vector, Value::Object(json_payload(p.payload))).into());
            }
            update(
                &shard,
                UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                    PointInsertOperations::PointsList(points),
                )),
            )
        }

        async fn delete(
            &self,
            request: Request<grpc::DeletePoints>,
        ) -> Result<Response<grpc::PointsOperationResponse>, Status> {
            let r = request.into_inner();
            let shard = self.shard(&r.collection_name)?;
            let op = match r.points.and_then(|p| p.points_selector_one_of) {
                Some(grpc::points_selector::PointsSelectorOneOf::Points(list)) => {
                    PointOperations::DeletePoints {
                        ids: list.ids.iter().map(edge_id).collect::<Result<_, _>>()?,
                    }
                }
                Some(grpc::points_selector::PointsSelectorOneOf::Filter(f)) => {
                    PointOperations::DeletePointsByFilter(edge_filter(&f)?)
                }
                None => return Err(Status::invalid_argument("points selector missing")),
            };
            update(&shard, UpdateOperation::PointOperation(op))
        }

        async fn set_payload(
            &self,
            request: Request<grpc::SetPayloadPoints>,
        ) -> Result<Response<grpc::PointsOperationResponse>, Status> {
            let r = request.into_inner();
            let shard = self.shard(&r.collection_name)?;
            let Some(grpc::points_selector::PointsSelectorOneOf::Points(list)) =
                r.points_selector.and_then(|p| p.points_selector_one_of)
            else {
                return Err(unsupported("set_payload by filter"));
            };
            if r.key.is_some() {
                return Err(unsupported("set_payload with a key"));
            }
            update(
                &shard,
                UpdateOperation::PayloadOperation(PayloadOps::SetPayload(SetPayloadOp {
                    payload: json_payload(r.payload).into(),
                    points: Some(list.ids.iter().map(edge_id).collect::<Result<_, _>>()?),
                    filter: None,
                    key: None,
                })),
            )
        }

        async fn count(
            &self,
            request: Request<grpc::CountPoints>,
        ) -> Result<Response<grpc::CountResponse>, Status> {
            let r = request.into_inner();
            let shard = self.shard(&r.collection_name)?;
            let filter = r.filter.as_ref().map(edge_filter).transpose()?;
            let n = count(&shard, filter)?;
            Ok(Response::new(grpc::CountResponse {
                result: Some(grpc::CountResult { count: n as u64 }),
                ..Default::default()
            }))
        }

        async fn query(
            &self,
            request: Request<grpc::QueryPoints>,
        ) -> Result<Response<grpc::QueryResponse>, Status> {
            let r = request.into_inner();
            let shard = self.shard(&r.collection_name)?;
            if !r.prefetch.is_empty() || r.using.is_some() || r.offset.is_some() {
                return Err(unsupported("prefetch, using or offset"));
            }
            let Some(grpc::query::Variant::Nearest(grpc::VectorInput {
                variant: Some(grpc::vector_input::Variant::Dense(vector)),
            })) = r.query.and_then(|q| q.variant)
            else {
                return Err(unsupported("queries other than nearest to a dense vector"));
            };
            let with_payload = matches!(
                r.with_payload.and_then(|w| w.selector_options),
                Some(grpc::with_payload_selector::SelectorOptions::Enable(true))
            );
            let points = shard
                .query(QueryRequest {
                    prefetches: vec![],
                    query: Some(ScoringQuery::Vector(QueryEnum::Nearest(
                        qdrant_edge::NamedQuery {
                            query: vector.data.into(),
                            using: None,
                        },
                    ))),
                    filter: r.filter.as_ref().map(edge_filter).transpose()?,
                    score_threshold: r.score_threshold.map(OrderedFloat),
                    limit: r.limit.unwrap_or(10) as usize,
                    offset: 0,
                    params: None,
                    with_vector: WithVector::Bool(false),
                    with_payload: WithPayloadInterface::Bool(with_payload),
                })
                .map_err(failed)?;
            let result = points
                .into_iter()
                .map(|p| grpc::ScoredPoint {
                    id: Some(grpc_id(p.id)),
                    payload: p.payload.map(|p| grpc_payload(p.0)).unwrap_or_default(),
                    score: p.score,
                    version: p.version,
                    ..Default::default()
                })
                .collect();
            Ok(Response::new(grpc::QueryResponse {
                result,
                ..Default::default()
            }))
        }

        async fn scroll(
            &self,
            request: Request<grpc::ScrollPoints>,
        ) -> Result<Response<grpc::ScrollResponse>, Status> {
            let r = request.into_inner();
            let shard = self.shard(&r.collection_name)?;
            let Some(order_by) = r.order_by else {
                return Err(unsupported("scroll without order_by"));
            };
            if order_by.direction.is_some_and(|d| d != grpc::Direction::Asc as i32)
                || order_by.start_from.is_some()
                || r.offset.is_some()
            {
                return Err(unsupported("this scroll"));
            }
            let (records, _) = shard
                .scroll(ScrollRequest {
                    offset: None,
                    limit: Some(r.limit.unwrap_or(10) as usize),
                    filter: r.filter.as_ref().map(edge_filter).transpose()?,
                    with_payload: Some(WithPayloadInterface::Bool(false)),
                    with_vector: WithVector::Bool(false),
                    order_by: Some(OrderByInterface::Key(path(&order_by.key)?)),
                })
                .map_err(failed)?;
            let result = records
                .into_iter()
                .map(|p| grpc::RetrievedPoint {
                    id: Some(grpc_id(p.id)),
                    ..Default::default()
                })
                .collect();
            Ok(Response::new(grpc::ScrollResponse {
                result,
                ..Default::default()
            }))
        }
    }
    unimplemented {
        get(GetPoints) -> GetResponse;
        update_vectors(UpdatePointVectors) -> PointsOperationResponse;
        delete_vectors(DeletePointVectors) -> PointsOperationResponse;
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
        delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
        search(SearchPoints) -> SearchResponse;
        search_batch(SearchBatchPoints) -> SearchBatchResponse;
        search_groups(SearchPointGroups) -> SearchGroupsResponse;
        recommend(RecommendPoints) -> RecommendResponse;
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
        discover(DiscoverPoints) -> DiscoverResponse;
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
        query_batch(QueryBatchPoints) -> QueryBatchResponse;
        query_groups(QueryPointGroups) -> QueryGroupsResponse;
        facet(FacetCounts) -> FacetResponse;
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
    }
}
