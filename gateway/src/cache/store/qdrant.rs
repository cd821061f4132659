//! The vector store on a Qdrant server, over gRPC (qdrant-client).
//!
//! One collection (default `switchyard_cache`) with one unnamed dense
//! vector, cosine distance, and payload indexes on the scope fields, expiry
//! and recency; created on first contact if absent, and refused if it holds
//! vectors of another dimension. Entries carry the same payload as the
//! embedded store, so the two behave alike (`store/tests.rs` runs one suite
//! on both). The server may be down when the gateway starts: the collection
//! is checked on first use, and until then every call fails, which the
//! request path treats as a lookup failure (fail open).

use std::collections::HashMap;

use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, OrderByBuilder, PointId, PointStruct,
    PointsIdsList, Query, QueryPointsBuilder, Range, ScrollPointsBuilder, SetPayloadPointsBuilder,
    UpsertPointsBuilder, VectorParamsBuilder, point_id::PointIdOptions, vectors_config,
};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{
    DATA, EVICT_CHUNK, EXPIRES_AT, Entry, GROUP, LAST_USED, Neighbour, SCOPE, StoreError,
    StoreStats, TENANT, neighbour,
};

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A collection on a Qdrant server.
#[derive(Clone)]
pub struct QdrantStore {
    client: std::sync::Arc<Qdrant>,
    collection: String,
    dimension: usize,
    ready: std::sync::Arc<OnceCell<()>>,
}

impl QdrantStore {
    /// A client for `url` (the gRPC port, usually 6334). Nothing is sent
    /// until the first call.
    pub fn new(
        url: &str,
        api_key: Option<String>,
        collection: &str,
        dimension: usize,
        timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(timeout)
            .connect_timeout(timeout)
            .skip_compatibility_check()
            .build()
            .map_err(backend)?;
        Ok(Self {
            client: std::sync::Arc::new(client),
            collection: collection.to_owned(),
            dimension,
            ready: std::sync::Arc::new(OnceCell::new()),
        })
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Makes sure the collection exists with our dimension and indexes
    /// (once; retried on the next call after a failure).
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.ready
            .get_or_try_init(|| async {
                let c = &self.client;
                let name = &self.collection;
                if c.collection_exists(name).await.map_err(backend)? {
                    let info = c.collection_info(name).await.map_err(backend)?;
                    let stored = info
                        .result
                        .and_then(|i| i.config)
                        .and_then(|c| c.params)
                        .and_then(|p| p.vectors_config)
                        .and_then(|v| v.config)
                        .map(|config| match config {
                            vectors_config::Config::Params(p) => p.size as usize,
                            vectors_config::Config::ParamsMap(_) => 0,
                        })
                        .unwrap_or(0);
                    if stored != self.dimension {
                        return Err(StoreError::Dimension {
                            path: format!("qdrant collection {name}").into(),
                            stored,
                            wanted: self.dimension,
                        });
                    }
                    return Ok(());
                }
                c.create_collection(CreateCollectionBuilder::new(name).vectors_config(
                    VectorParamsBuilder::new(self.dimension as u64, Distance::Cosine),
                ))
                .await
                .map_err(backend)?;
                for (field, kind) in [
                    (SCOPE, FieldType::Keyword),
                    (TENANT, FieldType::Keyword),
                    (GROUP, FieldType::Keyword),
                    (EXPIRES_AT, FieldType::Float),
                    (LAST_USED, FieldType::Float),
                ] {
                    c.create_field_index(
                        CreateFieldIndexCollectionBuilder::new(name, field, kind).wait(true),
                    )
                    .await
                    .map_err(backend)?;
                }
                tracing::info!(collection = %name, dimension = self.dimension,
                    "semantic cache: Qdrant collection created");
                Ok(())
            })
            .await
            .map(|_| ())
    }

    pub async fn upsert(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        self.ready().await?;
        let points: Vec<PointStruct> = entries
            .into_iter()
            .map(|e| {
                let payload = json!({
                    SCOPE: e.scope, TENANT: e.tenant, GROUP: e.group,
                    EXPIRES_AT: e.expires_at, LAST_USED: e.created_at, DATA: e.data,
                });
                let payload = match payload {
                    Value::Object(m) => qdrant_client::Payload::from(m),
                    _ => qdrant_client::Payload::new(),
                };
                PointStruct::new(e.id.to_string(), e.vector, payload)
            })
            .collect();
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, points).wait(true))
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub async fn nearest(
        &self,
        scope: &str,
        vector: Vec<f32>,
        limit: usize,
        now: f64,
    ) -> Result<Vec<Neighbour>, StoreError> {
        self.ready().await?;
        let filter = Filter::must([
            Condition::matches(SCOPE, scope.to_owned()),
            Condition::range(
                EXPIRES_AT,
                Range {
                    gt: Some(now),
                    ..Default::default()
                },
            ),
        ]);
        let found = self
            .client
            .query(
                QueryPointsBuilder::new(&self.collection)
                    .query(Query::new_nearest(vector))
                    .filter(filter)
                    .limit(limit as u64)
                    .with_payload(true),
            )
            .await
            .map_err(backend)?;
        Ok(found
            .result
            .into_iter()
            .filter_map(|p| {
                let id = p.id.as_ref().and_then(uuid_of)?;
                let payload = p
                    .payload
                    .into_iter()
                    .map(|(k, v)| (k, v.into_json()))
                    .collect();
                neighbour(id, p.score, payload, scope, now)
            })
            .collect())
    }

    pub async fn remove(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
        self.ready().await?;
        self.delete_ids(ids.into_iter().map(|id| id.to_string().into()).collect())
            .await
    }

    async fn delete_ids(&self, ids: Vec<PointId>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(PointsIdsList { ids })
                    .wait(true),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub async fn count(&self, filter: Option<Filter>) -> Result<usize, StoreError> {
        self.ready().await?;
        let mut request = CountPointsBuilder::new(&self.collection).exact(true);
        if let Some(f) = filter {
            request = request.filter(f);
        }
        let counted = self.client.count(request).await.map_err(backend)?;
        Ok(counted.result.map_or(0, |r| r.count as usize))
    }

    pub async fn touch(&self, ids: Vec<Uuid>, now: f64) -> Result<(), StoreError> {
        self.ready().await?;
        let payload: HashMap<String, qdrant_client::qdrant::Value> =
            HashMap::from([(LAST_USED.to_owned(), now.into())]);
        self.client
            .set_payload(
                SetPayloadPointsBuilder::new(&self.collection, payload)
                    .points_selector(PointsIdsList {
                        ids: ids.into_iter().map(|id| id.to_string().into()).collect(),
                    })
                    .wait(true),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Deletes the points `filter` matches; returns how many.
    pub async fn delete_matching(&self, filter: Filter) -> Result<usize, StoreError> {
        let n = self.count(Some(filter.clone())).await?;
        if n > 0 {
            self.client
                .delete_points(
                    DeletePointsBuilder::new(&self.collection)
                        .points(filter)
                        .wait(true),
                )
                .await
                .map_err(backend)?;
        }
        Ok(n)
    }

    pub async fn evict(&self, max: usize) -> Result<usize, StoreError> {
        let mut evicted = 0;
        loop {
            let excess = self.count(None).await?.saturating_sub(max);
            if excess == 0 {
                return Ok(evicted);
            }
            let oldest = self
                .client
                .scroll(
                    ScrollPointsBuilder::new(&self.collection)
                        .limit(excess.min(EVICT_CHUNK) as u32)
                        .order_by(OrderByBuilder::new(LAST_USED))
                        .with_payload(false),
                )
                .await
                .map_err(backend)?;
            let ids: Vec<PointId> = oldest.result.into_iter().filter_map(|p| p.id).collect();
            if ids.is_empty() {
                return Ok(evicted);
            }
            evicted += ids.len();
            self.delete_ids(ids).await?;
        }
    }

    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let entries = self.count(None).await?;
        let info = self
            .client
            .collection_info(&self.collection)
            .await
            .map_err(backend)?
            .result;
        Ok(StoreStats {
            entries,
            indexed: info
                .as_ref()
                .and_then(|i| i.indexed_vectors_count)
                .unwrap_or(0) as usize,
            segments: info.as_ref().map_or(0, |i| i.segments_count as usize),
            disk_bytes: None,
        })
    }
}

fn uuid_of(id: &PointId) -> Option<Uuid> {
    match &id.point_id_options {
        Some(PointIdOptions::Uuid(s)) => Uuid::parse_str(s).ok(),
        _ => None,
    }
}

/// The Qdrant filter for entries expired at `now`.
pub fn expired(now: f64) -> Filter {
    Filter::must([Condition::range(
        EXPIRES_AT,
        Range {
            lte: Some(now),
            ..Default::default()
        },
    )])
}

/// The Qdrant filter for a purge.
pub fn purge(tenant: Option<&str>, group: Option<&str>) -> Filter {
    let mut conditions = Vec::new();
    if let Some(t) = tenant {
        conditions.push(Condition::matches(TENANT, t.to_owned()));
    }
    if let Some(g) = group {
        conditions.push(Condition::matches(GROUP, g.to_owned()));
    }
    Filter::must(conditions)
}
