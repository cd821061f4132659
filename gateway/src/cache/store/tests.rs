//! The vector store's behaviour. Each check is a function of a store, so the
//! Qdrant-server implementation will run the same suite.

use super::*;

const DIM: usize = 8;
const NOW: f64 = 1_000_000.0;

fn unit(seed: u64) -> Vec<f32> {
    // A deterministic pseudo-random unit vector.
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let v: Vec<f32> = (0..DIM)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / n).collect()
}

fn entry(seed: u64, scope: &str, expires_at: f64) -> Entry {
    let mut data = Map::new();
    data.insert("seed".into(), json!(seed));
    Entry {
        id: Uuid::new_v4(),
        scope: scope.into(),
        tenant: scope.split('|').next().unwrap_or_default().into(),
        group: "g".into(),
        vector: unit(seed),
        expires_at,
        created_at: NOW - 100.0 + seed as f64,
        data,
    }
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

/// The ids of up to 10 unexpired entries of `scope`, sorted.
async fn ids_in(store: &VectorStore, scope: &str) -> Vec<Uuid> {
    let found = store.nearest(scope, unit(0), 10, NOW).await.unwrap();
    sorted(found.into_iter().map(|n| n.id).collect())
}

fn edge(dir: &Path) -> VectorStore {
    VectorStore::Edge(EdgeStore::open(dir, DIM).unwrap())
}

async fn finds_the_nearest_entry_of_its_scope(store: &VectorStore) {
    let entries: Vec<Entry> = (0..20).map(|i| entry(i, "tenant-a", NOW + 60.0)).collect();
    store.upsert(entries.clone()).await.unwrap();
    let found = store.nearest("tenant-a", unit(7), 3, NOW).await.unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(found[0].id, entries[7].id);
    assert!(
        (found[0].similarity - 1.0).abs() < 1e-5,
        "{}",
        found[0].similarity
    );
    assert_eq!(found[0].data["seed"], json!(7));
    assert!(
        found[0].similarity >= found[1].similarity && found[1].similarity >= found[2].similarity
    );
}

async fn never_returns_another_scopes_entry(store: &VectorStore) {
    // The same vector in two scopes: each scope finds only its own.
    let a = entry(42, "tenant-a|gpt", NOW + 60.0);
    let b = entry(42, "tenant-b|gpt", NOW + 60.0);
    store.upsert(vec![a.clone(), b.clone()]).await.unwrap();
    let for_a = store
        .nearest("tenant-a|gpt", unit(42), 10, NOW)
        .await
        .unwrap();
    assert!(
        for_a.iter().all(|n| n.id != b.id),
        "tenant B's entry reached tenant A"
    );
    assert!(for_a.iter().any(|n| n.id == a.id));
    let for_c = store
        .nearest("tenant-c|gpt", unit(42), 10, NOW)
        .await
        .unwrap();
    assert!(for_c.is_empty(), "a scope with no entries found {for_c:?}");
    // A scope that is a prefix of another is a different scope.
    let for_prefix = store.nearest("tenant-a", unit(42), 10, NOW).await.unwrap();
    assert!(for_prefix.iter().all(|n| n.id != a.id));
}

async fn expired_entries_are_not_found(store: &VectorStore) {
    let old = entry(5, "s", NOW - 1.0);
    let edge_of_expiry = entry(6, "s", NOW);
    let fresh = entry(5, "s", NOW + 1.0);
    store
        .upsert(vec![old.clone(), edge_of_expiry.clone(), fresh.clone()])
        .await
        .unwrap();
    let found = store.nearest("s", unit(5), 10, NOW).await.unwrap();
    let ids: Vec<Uuid> = found.iter().map(|n| n.id).collect();
    assert_eq!(ids, vec![fresh.id]);
}

/// Expired entries not yet swept, nearer than every live one, do not hide
/// the live one.
async fn expired_entries_do_not_hide_live_ones(store: &VectorStore) {
    let expired: Vec<Entry> = (0..6).map(|_| entry(7, "s", NOW - 1.0)).collect();
    let live = entry(8, "s", NOW + 60.0);
    let mut all = expired;
    all.push(live.clone());
    store.upsert(all).await.unwrap();
    for limit in [1, 2, 4] {
        let found = store.nearest("s", unit(7), limit, NOW).await.unwrap();
        let ids: Vec<Uuid> = found.iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![live.id], "limit {limit}");
    }
}

async fn upsert_replaces_and_remove_deletes(store: &VectorStore) {
    let mut e = entry(1, "s", NOW + 60.0);
    store.upsert(vec![e.clone()]).await.unwrap();
    e.vector = unit(2);
    store.upsert(vec![e.clone()]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
    let found = store.nearest("s", unit(2), 1, NOW).await.unwrap();
    assert_eq!(found[0].id, e.id);
    assert!((found[0].similarity - 1.0).abs() < 1e-5);
    store.remove(vec![e.id]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
    assert!(
        store
            .nearest("s", unit(2), 1, NOW)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn wrong_lengths_are_refused(store: &VectorStore) {
    let mut e = entry(1, "s", NOW + 60.0);
    e.vector.push(0.0);
    assert!(matches!(
        store.upsert(vec![e]).await,
        Err(StoreError::VectorLength { got: 9, wanted: 8 })
    ));
    assert!(matches!(
        store.nearest("s", vec![0.0; 3], 1, NOW).await,
        Err(StoreError::VectorLength { got: 3, wanted: 8 })
    ));
}

async fn sweep_deletes_only_expired_entries(store: &VectorStore) {
    let old = entry(1, "s", NOW - 1.0);
    let at_expiry = entry(2, "s", NOW);
    let fresh = entry(3, "s", NOW + 1.0);
    store
        .upsert(vec![old, at_expiry, fresh.clone()])
        .await
        .unwrap();
    assert_eq!(store.sweep(NOW).await.unwrap(), 2);
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.sweep(NOW).await.unwrap(), 0);
    let found = store.nearest("s", unit(3), 5, NOW).await.unwrap();
    assert_eq!(found[0].id, fresh.id);
}

async fn eviction_drops_the_least_recently_used(store: &VectorStore) {
    // Entries 0..10 were stored in order (created_at grows with the seed);
    // 2 and 3 were served since, so they are kept over 4..
    let entries: Vec<Entry> = (0..10).map(|i| entry(i, "s", NOW + 60.0)).collect();
    store.upsert(entries.clone()).await.unwrap();
    store
        .touch(vec![entries[2].id, entries[3].id], NOW)
        .await
        .unwrap();
    assert_eq!(store.evict(10).await.unwrap(), 0);
    assert_eq!(store.evict(4).await.unwrap(), 6);
    let expected: Vec<Uuid> = [2, 3, 8, 9].iter().map(|&i| entries[i].id).collect();
    assert_eq!(ids_in(store, "s").await, sorted(expected));
}

async fn purge_by_tenant_and_group(store: &VectorStore) {
    let mut entries = Vec::new();
    for (tenant, group) in [("a", "g1"), ("a", "g2"), ("b", "g1"), ("b", "g2")] {
        let mut e = entry(
            entries.len() as u64,
            &format!("{tenant}|{group}"),
            NOW + 60.0,
        );
        e.group = group.into();
        entries.push(e);
    }
    store.upsert(entries).await.unwrap();
    assert_eq!(
        store
            .purge(Some("a".into()), Some("g2".into()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.purge(None, Some("g1".into())).await.unwrap(), 2);
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(
        store.nearest("b|g2", unit(3), 1, NOW).await.unwrap().len(),
        1
    );
    assert_eq!(store.purge(None, None).await.unwrap(), 1);
    assert_eq!(store.stats().await.unwrap().entries, 0);
}

#[tokio::test]
async fn edge_store_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    // Each check on a fresh shard, so none depends on another's entries.
    finds_the_nearest_entry_of_its_scope(&edge(&dir.path().join("1"))).await;
    never_returns_another_scopes_entry(&edge(&dir.path().join("2"))).await;
    expired_entries_are_not_found(&edge(&dir.path().join("3"))).await;
    expired_entries_do_not_hide_live_ones(&edge(&dir.path().join("9"))).await;
    upsert_replaces_and_remove_deletes(&edge(&dir.path().join("4"))).await;
    wrong_lengths_are_refused(&edge(&dir.path().join("5"))).await;
    sweep_deletes_only_expired_entries(&edge(&dir.path().join("6"))).await;
    eviction_drops_the_least_recently_used(&edge(&dir.path().join("7"))).await;
    purge_by_tenant_and_group(&edge(&dir.path().join("8"))).await;
}

async fn qdrant(url: &str, collection: &str) -> VectorStore {
    let store = QdrantStore::new(
        url,
        None,
        collection,
        DIM,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    store.ready().await.unwrap();
    VectorStore::Qdrant(store)
}

/// The whole behaviour suite on a Qdrant server, each check in a fresh
/// collection.
async fn qdrant_suite(url: &str) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let c = |n: u32| format!("switchyard_test_{run}_{n}");
    finds_the_nearest_entry_of_its_scope(&qdrant(url, &c(1)).await).await;
    never_returns_another_scopes_entry(&qdrant(url, &c(2)).await).await;
    expired_entries_are_not_found(&qdrant(url, &c(3)).await).await;
    expired_entries_do_not_hide_live_ones(&qdrant(url, &c(10)).await).await;
    upsert_replaces_and_remove_deletes(&qdrant(url, &c(4)).await).await;
    wrong_lengths_are_refused(&qdrant(url, &c(5)).await).await;
    sweep_deletes_only_expired_entries(&qdrant(url, &c(6)).await).await;
    eviction_drops_the_least_recently_used(&qdrant(url, &c(7)).await).await;
    purge_by_tenant_and_group(&qdrant(url, &c(8)).await).await;
    // Reopening finds the collection and its entries; another dimension is
    // refused.
    let e = entry(3, "s", NOW + 60.0);
    qdrant(url, &c(9))
        .await
        .upsert(vec![e.clone()])
        .await
        .unwrap();
    let again = qdrant(url, &c(9)).await;
    let found = again.nearest("s", unit(3), 1, NOW).await.unwrap();
    assert_eq!(found.first().map(|n| n.id), Some(e.id));
    let wider =
        QdrantStore::new(url, None, &c(9), DIM + 1, std::time::Duration::from_secs(5)).unwrap();
    match wider.ready().await {
        Err(StoreError::Dimension {
            stored: 8,
            wanted: 9,
            ..
        }) => {}
        other => panic!("expected a dimension error, got {other:?}"),
    }
    let stats = again.stats().await.unwrap();
    assert_eq!((stats.entries, stats.disk_bytes), (1, None));
}

#[tokio::test]
async fn qdrant_store_behaviour_on_the_fake_server() {
    // The FAKE server (qdrant-edge behind Qdrant's gRPC services) checks the
    // client side: every request the store sends, over real gRPC.
    qdrant_suite(&fake_qdrant::start().await).await;
}

#[tokio::test]
#[allow(clippy::print_stderr, reason = "a skipped test says so")]
async fn qdrant_store_behaviour_on_a_real_server() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!(
            "SKIPPED: no Qdrant server (set QDRANT_URL, e.g. http://127.0.0.1:6334, to run the \
             store suite against one); the same suite ran against the fake server"
        );
        return;
    };
    qdrant_suite(&url).await;
}

#[tokio::test]
async fn an_unreachable_qdrant_server_is_an_error_not_a_hang() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let store = QdrantStore::new(
        &format!("http://{dead}"),
        None,
        "c",
        DIM,
        std::time::Duration::from_millis(500),
    )
    .unwrap();
    let v = VectorStore::Qdrant(store);
    let started = std::time::Instant::now();
    assert!(v.nearest("s", unit(1), 1, NOW).await.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn edge_store_indexes_a_large_store_and_still_filters_by_scope() {
    // Past qdrant's indexing threshold, `optimize` builds the HNSW index;
    // search then goes through it and must still keep to the scope.
    const DIM: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeStore::open(dir.path(), DIM).unwrap();
    let v = VectorStore::Edge(store.clone());
    let n = 50_000u64;
    let vector = |seed: u64| -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..DIM)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.into_iter().map(|a| a / norm).collect()
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let entries = chunk
            .iter()
            .map(|&i| Entry {
                id: Uuid::from_u128(u128::from(i) + 1),
                scope: format!("scope-{}", i % 4),
                tenant: "t".into(),
                group: "g".into(),
                vector: vector(i),
                expires_at: NOW + 60.0,
                created_at: NOW,
                data: Map::new(),
            })
            .collect();
        v.upsert(entries).await.unwrap();
    }
    assert!(store.optimize().unwrap(), "nothing was optimized");
    let stats = v.stats().await.unwrap();
    assert_eq!(stats.entries, n as usize);
    assert!(stats.indexed > 0, "{stats:?}");
    assert!(stats.disk_bytes.is_some_and(|b| b > 0));
    for probe in [7u64, 12_345, 49_998] {
        let scope = format!("scope-{}", probe % 4);
        // A query near the probe, not on it: the index is searched with
        // int8 vectors, and every similarity returned must still be the
        // exact cosine (rescored with the F32 vectors).
        let query: Vec<f32> = {
            let q: Vec<f32> = vector(probe)
                .iter()
                .zip(vector(probe + 1_000_003))
                .map(|(a, b)| a + 0.3 * b)
                .collect();
            let norm = q.iter().map(|a| a * a).sum::<f32>().sqrt();
            q.into_iter().map(|a| a / norm).collect()
        };
        let found = v.nearest(&scope, query.clone(), 3, NOW).await.unwrap();
        assert_eq!(found[0].id, Uuid::from_u128(u128::from(probe) + 1));
        for n in &found {
            let seed = n.id.as_u128() as u64 - 1;
            let exact: f32 = vector(seed).iter().zip(&query).map(|(a, b)| a * b).sum();
            assert!(
                (n.similarity - exact).abs() < 1e-5,
                "{} against the exact {exact}",
                n.similarity
            );
        }
        let other = format!("scope-{}", (probe + 1) % 4);
        let found = v.nearest(&other, vector(probe), 3, NOW).await.unwrap();
        assert!(
            found
                .iter()
                .all(|n| n.id != Uuid::from_u128(u128::from(probe) + 1))
        );
    }
}

#[tokio::test]
async fn edge_store_survives_a_restart_and_keeps_its_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard");
    let e = entry(3, "s", NOW + 60.0);
    {
        let shard = EdgeStore::open(&path, DIM).unwrap();
        VectorStore::Edge(shard.clone())
            .upsert(vec![e.clone()])
            .await
            .unwrap();
        shard.flush();
    }
    {
        let store = edge(&path);
        let found = store.nearest("s", unit(3), 1, NOW).await.unwrap();
        assert_eq!(found.first().map(|n| n.id), Some(e.id));
        // One process at a time: a second opener of a live shard is refused.
        assert!(EdgeStore::open(&path, DIM).is_err());
    }
    match EdgeStore::open(&path, DIM + 1) {
        Err(StoreError::Dimension {
            stored: 8,
            wanted: 9,
            ..
        }) => {}
        Err(other) => panic!("expected a dimension error, got {other}"),
        Ok(_) => panic!("a shard of another dimension opened"),
    }
}

#[tokio::test]
async fn edge_store_survives_a_restart_without_an_explicit_flush() {
    // Dropping the store (a clean exit) flushes it: qdrant-edge's `Drop`.
    // A crash does not (its `load` does not replay the WAL); the request
    // path flushes every second for that (tests/python/test_cache.py kills
    // a gateway to check).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard");
    let e = entry(9, "s", NOW + 60.0);
    {
        let store = edge(&path);
        store.upsert(vec![e.clone()]).await.unwrap();
    }
    let found = edge(&path).nearest("s", unit(9), 1, NOW).await.unwrap();
    assert_eq!(found.first().map(|n| n.id), Some(e.id));
}

#[tokio::test]
async fn an_older_shard_gains_the_indexes_it_lacks() {
    // A shard without payload indexes (as an older version made them):
    // opening it adds them, so eviction (ordered by `last_used`) works.
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<Entry> = (0..6).map(|i| entry(i, "s", NOW + 60.0)).collect();
    {
        let bare = EdgeShard::new(dir.path(), edge_config(DIM)).unwrap();
        EdgeStore::upsert(&bare, entries.clone()).unwrap();
        assert!(bare.info().payload_schema.is_empty());
    }
    let store = edge(dir.path());
    assert_eq!(store.evict(2).await.unwrap(), 4);
    assert_eq!(
        ids_in(&store, "s").await,
        sorted(vec![entries[4].id, entries[5].id])
    );
}

#[tokio::test]
async fn edge_store_indexes_new_entries_without_waiting_for_a_sweep() {
    // Every lookup scans the entries not yet indexed: the upkeep indexes
    // them once `INDEX_AFTER` wait, long before the next sweep.
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeStore::open(dir.path(), DIM).unwrap();
    {
        let config = store.shard.config();
        assert_eq!(config.optimizers.default_segment_number, Some(SEGMENTS));
        assert_eq!(
            config.optimizers.indexing_threshold,
            Some((INDEX_AFTER * DIM * 4).div_ceil(1024))
        );
        assert_eq!(config.hnsw_config.max_indexing_threads, INDEX_THREADS);
        assert_eq!(config.quantization_config, Some(quantization()));
    }
    let v = VectorStore::Edge(store.clone());
    let n = INDEX_AFTER as u64 + 200;
    let entries: Vec<Entry> = (0..n).map(|i| entry(i, "s", NOW + 600.0)).collect();
    for chunk in entries.chunks(500) {
        v.upsert(chunk.to_vec()).await.unwrap();
    }
    assert_eq!(v.stats().await.unwrap().indexed, 0);
    let hour = std::time::Duration::from_secs(3_600);
    v.upkeep(Upkeep {
        flush_every: hour,
        sweep_every: hour,
        max_entries: usize::MAX,
    });
    let started = std::time::Instant::now();
    loop {
        let stats = v.stats().await.unwrap();
        if stats.indexed >= INDEX_AFTER {
            assert_eq!(stats.entries, n as usize);
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "not indexed: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Still found, through the index.
    let found = v.nearest("s", unit(17), 1, NOW).await.unwrap();
    assert_eq!(found[0].id, entries[17].id);
}
