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
    FieldCondition, FieldIndexOperations, Filter, Match, OrderByInterface, PayloadFieldSchema,
    PayloadOps, PayloadSchemaType, PointId, PointInsertOperations, PointOperations, PointStruct,
    QueryEnum, QueryRequest, Range, ScoringQuery, ScrollRequest, SetPayloadOp, UpdateOperation,
    WithPayloadInterface, WithVector,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

mod qdrant;
pub use qdrant::QdrantStore;

/// Payload field holding an entry's scope key.
const SCOPE: &str = "scope";
/// Payload field holding an entry's expiry, in seconds since the Unix epoch.
const EXPIRES_AT: &str = "expires_at";
/// Payload field holding the tenant an entry belongs to (for purges).
const TENANT: &str = "tenant";
/// Payload field holding the model group an entry answers (for purges).
const GROUP: &str = "group";
/// Payload field holding when an entry was last stored or served, in
/// seconds since the Unix epoch: the store evicts the smallest first.
const LAST_USED: &str = "last_used";
/// Payload field holding the caller's data.
const DATA: &str = "data";

/// The payload indexes of every shard: the scope fields (keyword), expiry
/// and recency (float, for range filters and ordering).
const INDEXES: [(&str, PayloadSchemaType); 5] = [
    (SCOPE, PayloadSchemaType::Keyword),
    (TENANT, PayloadSchemaType::Keyword),
    (GROUP, PayloadSchemaType::Keyword),
    (EXPIRES_AT, PayloadSchemaType::Float),
    (LAST_USED, PayloadSchemaType::Float),
];

/// Most points deleted by one eviction step.
const EVICT_CHUNK: usize = 10_000;

/// One cached prompt: its vector, the scope it may be found in, when it
/// expires, and what the cache keeps with it (the response's location,
/// the prompt's features for verification…).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: Uuid,
    pub scope: String,
    pub tenant: String,
    pub group: String,
    pub vector: Vec<f32>,
    /// Seconds since the Unix epoch.
    pub expires_at: f64,
    /// Seconds since the Unix epoch; also the entry's first `last_used`.
    pub created_at: f64,
    pub data: Map<String, Value>,
}

/// What the store holds, for `switchyard cache stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Entries stored, expired ones included until the next sweep.
    pub entries: usize,
    /// Entries in segments with a vector index (HNSW); the rest are
    /// searched by scanning.
    pub indexed: usize,
    pub segments: usize,
    /// Bytes on disk under the store's directory (`None` for a server).
    pub disk_bytes: Option<u64>,
}

/// A stored entry near a query vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    pub id: Uuid,
    /// Cosine similarity to the query, in [-1, 1].
    pub similarity: f32,
    pub expires_at: f64,
    /// The model group the entry answers.
    pub group: String,
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

fn keyword(field: &str, value: &str) -> Result<qdrant_edge::Condition, StoreError> {
    Ok(qdrant_edge::Condition::Field(FieldCondition::new_match(
        path(field)?,
        Match::from(value.to_owned()),
    )))
}

fn must(conditions: Vec<qdrant_edge::Condition>) -> Filter {
    Filter {
        should: None,
        min_should: None,
        must: Some(conditions),
        must_not: None,
    }
}

/// Entries whose expiry is at or before `now`.
fn expired_filter(now: f64) -> Result<Filter, StoreError> {
    Ok(must(vec![qdrant_edge::Condition::Field(
        FieldCondition::new_range(
            path(EXPIRES_AT)?,
            Range {
                gt: None,
                lt: None,
                gte: None,
                lte: Some(OrderedFloat(now)),
            },
        ),
    )]))
}

fn purge_filter(tenant: Option<&str>, group: Option<&str>) -> Result<Filter, StoreError> {
    let mut conditions = Vec::new();
    if let Some(t) = tenant {
        conditions.push(keyword(TENANT, t)?);
    }
    if let Some(g) = group {
        conditions.push(keyword(GROUP, g)?);
    }
    Ok(must(conditions))
}

/// Bytes of the files under `dir` (0 where unreadable).
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = dir.read_dir() else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// A search result before its scope and expiry are checked: id, score,
/// payload.
type Found = (Uuid, f32, Map<String, Value>);

/// A search result as a [`Neighbour`], or `None` when it is not one the
/// caller may see: another scope's entry (defence in depth: every search
/// already filters on the scope; this is logged as the bug it would be) or
/// an expired one (the embedded store's first search does not filter on
/// expiry).
fn neighbour(
    id: Uuid,
    similarity: f32,
    mut payload: Map<String, Value>,
    scope: &str,
    now: f64,
) -> Option<Neighbour> {
    if payload.get(SCOPE).and_then(Value::as_str) != Some(scope) {
        tracing::error!(%id, "vector store returned an entry of another scope; dropped");
        return None;
    }
    let expires_at = payload
        .get(EXPIRES_AT)
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    if expires_at <= now {
        return None;
    }
    let data = match payload.remove(DATA) {
        Some(Value::Object(data)) => data,
        _ => Map::new(),
    };
    let group = match payload.remove(GROUP) {
        Some(Value::String(group)) => group,
        _ => String::new(),
    };
    Some(Neighbour {
        id,
        similarity,
        expires_at,
        group,
        data,
    })
}

/// The optimizer settings every shard runs with, new or loaded: index new
/// entries once `INDEX_AFTER` are waiting, keep `SEGMENTS` segments, and
/// build indexes on one thread (the other core keeps serving lookups).
fn tune(shard: &EdgeShard, dimension: usize) -> Result<(), StoreError> {
    let optimizers = qdrant_edge::EdgeOptimizersConfig {
        // In KB of vectors (F32).
        indexing_threshold: Some((INDEX_AFTER * dimension * 4).div_ceil(1024).max(1)),
        default_segment_number: Some(SEGMENTS),
        ..shard.config().optimizers.clone()
    };
    if shard.config().optimizers != optimizers {
        shard.set_optimizers_config(optimizers).map_err(backend)?;
    }
    let hnsw = shard.config().hnsw_config;
    if hnsw.max_indexing_threads != INDEX_THREADS {
        shard
            .set_hnsw_config(qdrant_edge::HnswIndexConfig {
                max_indexing_threads: INDEX_THREADS,
                ..hnsw
            })
            .map_err(backend)?;
    }
    Ok(())
}

/// Indexed segments keep an int8 copy of every vector in memory (scalar
/// quantization: a quarter of the F32 bytes) that the index is built and
/// searched with; the nearest are then rescored with the F32 vectors, so
/// every similarity the cache compares with its threshold is exact.
fn quantization() -> qdrant_edge::QuantizationConfig {
    // Built from JSON: qdrant-edge 0.7.2 does not re-export the variant's
    // struct.
    serde_json::from_value(
        json!({"scalar": {"type": "int8", "quantile": 0.99, "always_ram": true}}),
    )
    .unwrap_or_else(|e| unreachable!("a fixed, valid quantization config: {e}"))
}

/// A new shard's configuration: one unnamed vector of `dimension`, cosine
/// distance, payloads in memory.
fn edge_config(dimension: usize) -> EdgeConfig {
    EdgeConfig {
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
        quantization_config: Some(quantization()),
        optimizers: Default::default(),
        wal_options: None,
    }
}

/// The semantic tier's vector store.
#[derive(Clone)]
pub enum VectorStore {
    Edge(EdgeStore),
    Qdrant(QdrantStore),
}

impl VectorStore {
    pub fn dimension(&self) -> usize {
        match self {
            Self::Edge(s) => s.dimension,
            Self::Qdrant(s) => s.dimension(),
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
            Self::Qdrant(s) => s.upsert(entries).await,
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
            Self::Qdrant(s) => s.nearest(&scope, vector, limit, now).await,
        }
    }

    pub async fn remove(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
        match self {
            Self::Edge(s) => s.blocking(move |shard| EdgeStore::remove(shard, ids)).await,
            Self::Qdrant(s) => s.remove(ids).await,
        }
    }

    /// Entries stored (expired ones included until they are removed).
    pub async fn count(&self) -> Result<usize, StoreError> {
        match self {
            Self::Edge(s) => s.blocking(|shard| EdgeStore::count(shard, None)).await,
            Self::Qdrant(s) => s.count(None).await,
        }
    }

    /// Marks entries as used at `now`, so eviction keeps them longer.
    pub async fn touch(&self, ids: Vec<Uuid>, now: f64) -> Result<(), StoreError> {
        match self {
            Self::Edge(s) => {
                s.blocking(move |shard| EdgeStore::touch(shard, ids, now))
                    .await
            }
            Self::Qdrant(s) => s.touch(ids, now).await,
        }
    }

    /// Deletes the entries expired at `now`; returns how many.
    pub async fn sweep(&self, now: f64) -> Result<usize, StoreError> {
        match self {
            Self::Edge(s) => {
                s.blocking(move |shard| EdgeStore::delete_matching(shard, expired_filter(now)?))
                    .await
            }
            Self::Qdrant(s) => s.delete_matching(qdrant::expired(now)).await,
        }
    }

    /// Deletes the least recently used entries until at most `max` remain;
    /// returns how many went.
    pub async fn evict(&self, max: usize) -> Result<usize, StoreError> {
        match self {
            Self::Edge(s) => s.blocking(move |shard| EdgeStore::evict(shard, max)).await,
            Self::Qdrant(s) => s.evict(max).await,
        }
    }

    /// Deletes the entries of `tenant` and `group` (each `None` for all);
    /// returns how many.
    pub async fn purge(
        &self,
        tenant: Option<String>,
        group: Option<String>,
    ) -> Result<usize, StoreError> {
        match self {
            Self::Edge(s) => {
                let filter = purge_filter(tenant.as_deref(), group.as_deref())?;
                s.blocking(move |shard| EdgeStore::delete_matching(shard, filter))
                    .await
            }
            Self::Qdrant(s) => {
                s.delete_matching(qdrant::purge(tenant.as_deref(), group.as_deref()))
                    .await
            }
        }
    }

    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        match self {
            Self::Edge(s) => {
                let dir = s.dir.clone();
                s.blocking(move |shard| {
                    let info = shard.info();
                    Ok(StoreStats {
                        entries: EdgeStore::count(shard, None)?,
                        indexed: info.indexed_vectors_count,
                        segments: info.segments_count,
                        disk_bytes: Some(disk_usage(&dir)),
                    })
                })
                .await
            }
            Self::Qdrant(s) => s.stats().await,
        }
    }

    /// Starts the store's upkeep: every `sweep_every` expired entries are
    /// deleted, the least recently used beyond `max_entries` are evicted,
    /// and an embedded shard is optimized (its vector index built); an
    /// embedded shard is also flushed every `flush_every`, and indexes its
    /// new entries as soon as `INDEX_AFTER` of them wait (checked twice a
    /// second), so lookups never scan more than about that many. A Qdrant
    /// server flushes and indexes on its own. Needs a Tokio runtime; without one
    /// nothing is started. An embedded shard's tasks end when it is dropped.
    ///
    /// Why the flushes: qdrant-edge 0.7.2 writes every update to its WAL,
    /// but `EdgeShard::load` does not replay the WAL; only a flush
    /// (explicit, or the shard's `Drop` on a clean exit) makes updates
    /// survive. So a crash loses at most the updates of the last interval.
    /// The flusher and the sweeper are separate tasks, so a long index build
    /// never delays a flush.
    pub fn upkeep(&self, u: Upkeep) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        match self {
            Self::Edge(s) => {
                let weak = s.downgrade();
                let flusher = weak.clone();
                runtime.spawn(every(u.flush_every, move || {
                    let store = flusher.upgrade();
                    async move {
                        let Some(store) = store else { return false };
                        if tokio::task::spawn_blocking(move || store.flush())
                            .await
                            .is_err()
                        {
                            tracing::warn!("semantic cache: flushing the store failed");
                        }
                        true
                    }
                }));
                let indexer = weak.clone();
                runtime.spawn(every(INDEX_CHECK, move || {
                    let store = indexer.upgrade();
                    async move {
                        let Some(store) = store else { return false };
                        let indexed = tokio::task::spawn_blocking(move || store.index_waiting())
                            .await
                            .map_err(backend)
                            .and_then(|indexed| indexed);
                        match indexed {
                            Ok(true) => tracing::debug!("semantic cache: new entries indexed"),
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "semantic cache: indexing new entries failed");
                            }
                        }
                        true
                    }
                }));
                runtime.spawn(every(u.sweep_every, move || {
                    let store = weak.upgrade().map(Self::Edge);
                    async move {
                        let Some(store) = store else { return false };
                        store.sweep_once(u.max_entries).await;
                        true
                    }
                }));
            }
            Self::Qdrant(_) => {
                let store = self.clone();
                runtime.spawn(every(u.sweep_every, move || {
                    let store = store.clone();
                    async move {
                        store.sweep_once(u.max_entries).await;
                        true
                    }
                }));
            }
        }
    }

    /// One sweep: expired entries, eviction, and (embedded) optimization.
    /// Failures are logged; the next sweep tries again.
    async fn sweep_once(&self, max_entries: usize) {
        let result = async {
            let expired = self.sweep(crate::cache::http::now_secs() as f64).await?;
            let evicted = self.evict(max_entries).await?;
            let optimized = match self {
                Self::Edge(s) => {
                    let s = s.clone();
                    tokio::task::spawn_blocking(move || s.optimize())
                        .await
                        .map_err(backend)??
                }
                Self::Qdrant(_) => false,
            };
            Ok::<_, StoreError>((expired, evicted, optimized))
        };
        match result.await {
            Ok((expired, evicted, optimized)) => {
                if expired + evicted > 0 || optimized {
                    tracing::info!(expired, evicted, optimized, "semantic cache: store swept");
                }
            }
            Err(e) => tracing::warn!(error = %e, "semantic cache: sweeping the store failed"),
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
    dir: PathBuf,
    /// Held while the shard is optimized: the indexer and the sweeper never
    /// optimize at once.
    optimizing: Arc<std::sync::Mutex<()>>,
}

/// An [`EdgeStore`] that does not keep its shard open: the upkeep tasks
/// hold one, and end once the store itself is dropped.
#[derive(Clone)]
struct WeakEdge {
    shard: std::sync::Weak<EdgeShard>,
    dimension: usize,
    dir: PathBuf,
    optimizing: Arc<std::sync::Mutex<()>>,
}

impl WeakEdge {
    fn upgrade(&self) -> Option<EdgeStore> {
        Some(EdgeStore {
            shard: self.shard.upgrade()?,
            dimension: self.dimension,
            dir: self.dir.clone(),
            optimizing: self.optimizing.clone(),
        })
    }
}

/// New entries are searched by scanning until the shard indexes them, and
/// a scan costs every lookup about 0.15 µs per unindexed entry
/// (docs/cache.md, Speed): entries are indexed once this many are waiting.
const INDEX_AFTER: usize = 1_000;
/// How often the indexer checks for unindexed entries.
const INDEX_CHECK: std::time::Duration = std::time::Duration::from_millis(500);
/// Segments the shard keeps before merging the smallest: with qdrant's
/// default for two cores (2), every newly indexed segment was merged into
/// the largest at once, rebuilding its whole index (12 s of both cores at
/// 100,000 entries) each time.
const SEGMENTS: usize = 4;
/// Threads an index build uses.
const INDEX_THREADS: usize = 1;
/// Candidates read from the quantized index per neighbour asked for, then
/// rescored with the F32 vectors.
const OVERSAMPLING: f64 = 2.0;

/// The store's background upkeep ([`VectorStore::upkeep`]).
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// How often everything is written to disk: a crash loses at most this
    /// much of the latest entries.
    pub flush_every: std::time::Duration,
    /// How often expired entries are deleted, the store is cut back to
    /// `max_entries`, and the shard optimized (new entries are also indexed
    /// as soon as enough of them wait).
    pub sweep_every: std::time::Duration,
    pub max_entries: usize,
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
            EdgeShard::new(dir, edge_config(dimension)).map_err(backend)?
        };
        // A shard made by an older version may lack some indexes (eviction
        // needs the one on `last_used`).
        let indexed = shard.info().payload_schema;
        for (field, kind) in INDEXES {
            let field_name = path(field)?;
            if indexed.contains_key(&field_name) {
                continue;
            }
            shard
                .update(UpdateOperation::FieldIndexOperation(
                    FieldIndexOperations::CreateIndex(CreateIndex {
                        field_name,
                        field_schema: Some(PayloadFieldSchema::FieldType(kind)),
                    }),
                ))
                .map_err(backend)?;
        }
        tune(&shard, dimension)?;
        Ok(Self {
            shard: Arc::new(shard),
            dimension,
            dir: dir.to_owned(),
            optimizing: Arc::default(),
        })
    }

    fn downgrade(&self) -> WeakEdge {
        WeakEdge {
            shard: Arc::downgrade(&self.shard),
            dimension: self.dimension,
            dir: self.dir.clone(),
            optimizing: self.optimizing.clone(),
        }
    }

    /// Entries not yet in a vector index (searched by scanning).
    fn unindexed(&self) -> usize {
        let info = self.shard.info();
        info.points_count.saturating_sub(info.indexed_vectors_count)
    }

    /// Write everything to disk (the WAL already holds every update).
    pub fn flush(&self) {
        self.shard.flush();
    }

    /// Builds the vector index (HNSW) over segments grown past qdrant's
    /// indexing threshold and merges small segments; returns whether it did
    /// anything. Searches and updates go on meanwhile. Blocking, and long
    /// for a large store (docs/cache.md has timings).
    pub fn optimize(&self) -> Result<bool, StoreError> {
        let _one_at_a_time = self
            .optimizing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.shard.optimize().map_err(backend)
    }

    /// Optimizes if `INDEX_AFTER` entries wait for the index and no
    /// optimization is running; returns whether it did anything.
    fn index_waiting(&self) -> Result<bool, StoreError> {
        if self.unindexed() < INDEX_AFTER {
            return Ok(false);
        }
        let _one_at_a_time = match self.optimizing.try_lock() {
            Ok(guard) => guard,
            // As in `optimize`: a panic elsewhere leaves nothing to repair.
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
        };
        self.shard.optimize().map_err(backend)
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
                let payload = json!({
                    SCOPE: e.scope, TENANT: e.tenant, GROUP: e.group,
                    EXPIRES_AT: e.expires_at, LAST_USED: e.created_at, DATA: e.data,
                });
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
        // The scope alone first: checking the expiry of every point the
        // HNSW search visits costs a fifth of a search of a big scope
        // (docs/cache.md, Vector store), and expired entries are few (the
        // sweep deletes them), so it is checked on the results instead.
        // Only when an expired entry took a place among them is the search
        // run again with the expiry in the filter.
        let scoped = must(vec![keyword(SCOPE, scope)?]);
        let live = |found: Vec<Found>| -> Vec<Neighbour> {
            found
                .into_iter()
                .filter_map(|(id, score, payload)| neighbour(id, score, payload, scope, now))
                .collect()
        };
        let found = Self::search(shard, scoped, vector.clone(), limit)?;
        let complete = found.len() < limit;
        let first = live(found);
        if first.len() == limit || complete {
            return Ok(first);
        }
        let unexpired = must(vec![
            keyword(SCOPE, scope)?,
            qdrant_edge::Condition::Field(FieldCondition::new_range(
                path(EXPIRES_AT)?,
                Range {
                    gt: Some(OrderedFloat(now)),
                    lt: None,
                    gte: None,
                    lte: None,
                },
            )),
        ]);
        Ok(live(Self::search(shard, unexpired, vector, limit)?))
    }

    /// The `limit` nearest points that pass `filter`, with their payloads.
    fn search(
        shard: &EdgeShard,
        filter: qdrant_edge::Filter,
        vector: Vec<f32>,
        limit: usize,
    ) -> Result<Vec<Found>, StoreError> {
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
                params: Some(qdrant_edge::SearchParams {
                    hnsw_ef: None,
                    exact: false,
                    quantization: Some(qdrant_edge::QuantizationSearchParams {
                        ignore: false,
                        rescore: Some(true),
                        oversampling: Some(OVERSAMPLING),
                    }),
                    indexed_only: false,
                    acorn: None,
                }),
                with_vector: WithVector::Bool(false),
                with_payload: WithPayloadInterface::Bool(true),
            })
            .map_err(backend)?;
        Ok(points
            .into_iter()
            .filter_map(|p| {
                let PointId::Uuid(id) = p.id else {
                    return None;
                };
                Some((id, p.score, p.payload?.0))
            })
            .collect())
    }

    fn remove(shard: &EdgeShard, ids: Vec<Uuid>) -> Result<(), StoreError> {
        Self::delete(shard, ids.into_iter().map(PointId::Uuid).collect())
    }

    fn delete(shard: &EdgeShard, ids: Vec<PointId>) -> Result<(), StoreError> {
        shard
            .update(UpdateOperation::PointOperation(
                PointOperations::DeletePoints { ids },
            ))
            .map_err(backend)
    }

    fn count(shard: &EdgeShard, filter: Option<Filter>) -> Result<usize, StoreError> {
        shard
            .count(qdrant_edge::CountRequest {
                filter,
                exact: true,
            })
            .map_err(backend)
    }

    fn touch(shard: &EdgeShard, ids: Vec<Uuid>, now: f64) -> Result<(), StoreError> {
        let payload = json!({ LAST_USED: now });
        let Value::Object(payload) = payload else {
            return Ok(());
        };
        shard
            .update(UpdateOperation::PayloadOperation(PayloadOps::SetPayload(
                SetPayloadOp {
                    payload: payload.into(),
                    points: Some(ids.into_iter().map(PointId::Uuid).collect()),
                    filter: None,
                    key: None,
                },
            )))
            .map_err(backend)
    }

    /// Deletes the points `filter` matches; returns how many.
    fn delete_matching(shard: &EdgeShard, filter: Filter) -> Result<usize, StoreError> {
        let n = Self::count(shard, Some(filter.clone()))?;
        if n > 0 {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(filter),
                ))
                .map_err(backend)?;
        }
        Ok(n)
    }

    /// Deletes the least recently used points beyond `max`, oldest first.
    fn evict(shard: &EdgeShard, max: usize) -> Result<usize, StoreError> {
        let mut evicted = 0;
        loop {
            let excess = Self::count(shard, None)?.saturating_sub(max);
            if excess == 0 {
                return Ok(evicted);
            }
            let (oldest, _) = shard
                .scroll(ScrollRequest {
                    offset: None,
                    limit: Some(excess.min(EVICT_CHUNK)),
                    filter: None,
                    with_payload: Some(WithPayloadInterface::Bool(false)),
                    with_vector: WithVector::Bool(false),
                    order_by: Some(OrderByInterface::Key(path(LAST_USED)?)),
                })
                .map_err(backend)?;
            if oldest.is_empty() {
                return Ok(evicted);
            }
            evicted += oldest.len();
            Self::delete(shard, oldest.into_iter().map(|r| r.id).collect())?;
        }
    }
}

/// Runs `f` every `period` (the first time after one period) until it
/// returns `false`.
async fn every<F, Fut>(period: std::time::Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if !f().await {
            break;
        }
    }
}

#[cfg(test)]
mod fake_qdrant;
#[cfg(test)]
mod tests;
