//! Where the semantic tier's vectors live: a [`VectorStore`] over Qdrant.
//!
//! `edge` (the default) is an embedded qdrant-edge shard under the data
//! directory: no server, persistent across restarts. A Qdrant server
//! (qdrant-client over gRPC) is the second implementation, for deployments
//! that outgrow one machine; it is not built yet.
//!
//! Isolation is part of the store's contract, not the caller's: every entry
//! carries its scope (tenant, model group, and the rest of what must match,
//! hashed by the caller), every search filters on it inside Qdrant, and every
//! neighbour is checked against it again before it is returned. A search can
//! therefore never return another scope's entry, even if a filter were wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfig, EdgeShard, EdgeVectorParams,
    FieldCondition, FieldIndexOperations, Filter, Match, PayloadFieldSchema, PayloadSchemaType,
    PointId, PointInsertOperations, PointOperations, PointStruct, QueryEnum, QueryRequest, Range,
    ScoringQuery, UpdateOperation, WithPayloadInterface, WithVector,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// Payload field holding an entry's scope key.
const SCOPE: &str = "scope";
/// Payload field holding an entry's expiry, in seconds since the Unix epoch.
const EXPIRES_AT: &str = "expires_at";
/// Payload field holding the caller's data.
const DATA: &str = "data";

/// One cached prompt: its vector, the scope it may be found in, when it
/// expires, and what the cache keeps with it (the response's location,
/// the prompt's features for verification…).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: Uuid,
    pub scope: String,
    pub vector: Vec<f32>,
    /// Seconds since the Unix epoch.
    pub expires_at: f64,
    pub data: Map<String, Value>,
}

/// A stored entry near a query vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    pub id: Uuid,
    /// Cosine similarity to the query, in [-1, 1].
    pub similarity: f32,
    pub expires_at: f64,
    pub data: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("vector store: {0}")]
    Backend(String),
    #[error("vector store at {path} holds {stored}-dimensional vectors, not {wanted}")]
    Dimension {
        path: PathBuf,
        stored: usize,
        wanted: usize,
    },
    #[error("vector of {got} dimensions given to a store of {wanted}")]
    VectorLength { got: usize, wanted: usize },
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A payload field's path, as Qdrant names it.
fn path(field: &str) -> Result<qdrant_edge::JsonPath, StoreError> {
    field
        .try_into()
        .map_err(|()| StoreError::Backend(format!("invalid payload field name {field:?}")))
}

/// The semantic tier's vector store.
#[derive(Clone)]
pub enum VectorStore {
    Edge(EdgeStore),
}

impl VectorStore {
    pub fn dimension(&self) -> usize {
        match self {
            Self::Edge(s) => s.dimension,
        }
    }

    /// Insert or replace entries (by id).
    pub async fn upsert(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        for e in &entries {
            self.check_len(&e.vector)?;
        }
        match self {
            Self::Edge(s) => {
                s.blocking(move |shard| EdgeStore::upsert(shard, entries))
                    .await
            }
        }
    }

    /// Up to `limit` unexpired entries of `scope` nearest to `vector`, most
    /// similar first. Entries of any other scope are never returned.
    pub async fn nearest(
        &self,
        scope: &str,
        vector: Vec<f32>,
        limit: usize,
        now: f64,
    ) -> Result<Vec<Neighbour>, StoreError> {
        self.check_len(&vector)?;
        let scope = scope.to_owned();
        match self {
            Self::Edge(s) => {
                s.blocking(move |shard| EdgeStore::nearest(shard, &scope, vector, limit, now))
                    .await
            }
        }
    }

    pub async fn remove(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
        match self {
            Self::Edge(s) => s.blocking(move |shard| EdgeStore::remove(shard, ids)).await,
        }
    }

    /// Entries stored (expired ones included until they are removed).
    pub async fn count(&self) -> Result<usize, StoreError> {
        match self {
            Self::Edge(s) => {
                s.blocking(|shard| {
                    shard
                        .count(qdrant_edge::CountRequest {
                            filter: None,
                            exact: true,
                        })
                        .map_err(backend)
                })
                .await
            }
        }
    }

    fn check_len(&self, vector: &[f32]) -> Result<(), StoreError> {
        if vector.len() == self.dimension() {
            Ok(())
        } else {
            Err(StoreError::VectorLength {
                got: vector.len(),
                wanted: self.dimension(),
            })
        }
    }
}

/// An embedded qdrant-edge shard in a directory of its own.
#[derive(Clone)]
pub struct EdgeStore {
    shard: Arc<EdgeShard>,
    dimension: usize,
}

impl EdgeStore {
    /// Open the shard in `dir`, creating it (cosine distance, payload
    /// indexes on scope and expiry) when the directory is empty. An existing
    /// shard of another dimension is an error, not a silent mix.
    pub fn open(dir: &Path, dimension: usize) -> Result<Self, StoreError> {
        let existing = dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        let shard = if existing {
            let shard = EdgeShard::load(dir, None).map_err(backend)?;
            let stored = shard
                .config()
                .vectors
                .get(DEFAULT_VECTOR_NAME)
                .map(|v| v.size)
                .unwrap_or(0);
            if stored != dimension {
                return Err(StoreError::Dimension {
                    path: dir.to_owned(),
                    stored,
                    wanted: dimension,
                });
            }
            shard
        } else {
            std::fs::create_dir_all(dir).map_err(backend)?;
            let config = EdgeConfig {
                on_disk_payload: false,
                vectors: HashMap::from([(
                    DEFAULT_VECTOR_NAME.to_owned(),
                    EdgeVectorParams {
                        size: dimension,
                        distance: Distance::Cosine,
                        on_disk: None,
                        multivector_config: None,
                        datatype: None,
                        quantization_config: None,
                        hnsw_config: None,
                    },
                )]),
                sparse_vectors: HashMap::new(),
                hnsw_config: Default::default(),
                quantization_config: None,
                optimizers: Default::default(),
                wal_options: None,
            };
            let shard = EdgeShard::new(dir, config).map_err(backend)?;
            for (field, kind) in [
                (SCOPE, PayloadSchemaType::Keyword),
                (EXPIRES_AT, PayloadSchemaType::Float),
            ] {
                shard
                    .update(UpdateOperation::FieldIndexOperation(
                        FieldIndexOperations::CreateIndex(CreateIndex {
                            field_name: path(field)?,
                            field_schema: Some(PayloadFieldSchema::FieldType(kind)),
                        }),
                    ))
                    .map_err(backend)?;
            }
            shard
        };
        Ok(Self {
            shard: Arc::new(shard),
            dimension,
        })
    }

    /// Write everything to disk (the WAL already holds every update).
    pub fn flush(&self) {
        self.shard.flush();
    }

    /// Flushes the shard every `every` until the store is dropped.
    ///
    /// Why: qdrant-edge 0.7.2 writes every update to its WAL, but
    /// `EdgeShard::load` does not replay the WAL; only a flush (explicit, or
    /// the shard's `Drop` on a clean exit) makes updates survive. So a crash
    /// loses at most the updates of the last interval. Needs a Tokio
    /// runtime; without one nothing is started.
    pub fn flush_every(&self, every: std::time::Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shard = Arc::downgrade(&self.shard);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shard) = shard.upgrade() else { break };
                if tokio::task::spawn_blocking(move || shard.flush())
                    .await
                    .is_err()
                {
                    tracing::warn!("semantic cache: flushing the vector store failed");
                }
            }
        });
    }

    /// qdrant-edge is synchronous: run it off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EdgeShard) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shard = self.shard.clone();
        tokio::task::spawn_blocking(move || f(&shard))
            .await
            .map_err(backend)?
    }

    fn upsert(shard: &EdgeShard, entries: Vec<Entry>) -> Result<(), StoreError> {
        let points = entries
            .into_iter()
            .map(|e| {
                let payload = json!({ SCOPE: e.scope, EXPIRES_AT: e.expires_at, DATA: e.data });
                PointStruct::new(PointId::Uuid(e.id), e.vector, payload).into()
            })
            .collect();
        shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
            .map_err(backend)
    }

    fn nearest(
        shard: &EdgeShard,
        scope: &str,
        vector: Vec<f32>,
        limit: usize,
        now: f64,
    ) -> Result<Vec<Neighbour>, StoreError> {
        let filter = Filter {
            should: None,
            min_should: None,
            must: Some(vec![
                qdrant_edge::Condition::Field(FieldCondition::new_match(
                    path(SCOPE)?,
                    Match::from(scope.to_owned()),
                )),
                qdrant_edge::Condition::Field(FieldCondition::new_range(
                    path(EXPIRES_AT)?,
                    Range {
                        gt: Some(OrderedFloat(now)),
                        lt: None,
                        gte: None,
                        lte: None,
                    },
                )),
            ]),
            must_not: None,
        };
        let points = shard
            .query(QueryRequest {
                prefetches: vec![],
                query: Some(ScoringQuery::Vector(QueryEnum::Nearest(
                    qdrant_edge::NamedQuery {
                        query: vector.into(),
                        using: None,
                    },
                ))),
                filter: Some(filter),
                score_threshold: None,
                limit,
                offset: 0,
                params: None,
                with_vector: WithVector::Bool(false),
                with_payload: WithPayloadInterface::Bool(true),
            })
            .map_err(backend)?;
        let mut out = Vec::with_capacity(points.len());
        for p in points {
            let PointId::Uuid(id) = p.id else {
                continue;
            };
            let Some(payload) = p.payload else {
                continue;
            };
            let mut payload = payload.0;
            // Defence in depth: the filter above already demands this.
            if payload.get(SCOPE).and_then(Value::as_str) != Some(scope) {
                tracing::error!(%id, "vector store returned an entry of another scope; dropped");
                continue;
            }
            let expires_at = payload
                .get(EXPIRES_AT)
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            if expires_at <= now {
                continue;
            }
            let data = match payload.remove(DATA) {
                Some(Value::Object(data)) => data,
                _ => Map::new(),
            };
            out.push(Neighbour {
                id,
                similarity: p.score,
                expires_at,
                data,
            });
        }
        Ok(out)
    }

    fn remove(shard: &EdgeShard, ids: Vec<Uuid>) -> Result<(), StoreError> {
        shard
            .update(UpdateOperation::PointOperation(
                PointOperations::DeletePoints {
                    ids: ids.into_iter().map(PointId::Uuid).collect(),
                },
            ))
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests;
