//! The usage ledger: one row per request in the access database, written
//! by a background thread in batches (one transaction per 25 ms window
//! under load), so a request never waits for the disk. `/admin/usage` reads it back,
//! aggregated.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use super::store::{Store, StoreError, now_ms};

/// One request's usage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UsageRecord {
    pub ts_ms: u64,
    pub request_id: String,
    pub tenant: String,
    pub key_id: Option<String>,
    pub endpoint: &'static str,
    pub model_group: Option<String>,
    /// `local`, `external`, `cache`, or none (not placed by the scheduler).
    pub placement: Option<&'static str>,
    pub provider: Option<String>,
    pub deployment: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cost_usd: f64,
    /// A cache hit's estimated saving.
    pub saved_usd: f64,
    pub cache: &'static str,
    pub latency_ms: f64,
    pub status: u16,
    pub outcome: &'static str,
}

enum Msg {
    Record(Box<UsageRecord>),
    Flush(mpsc::SyncSender<()>),
}

/// The writer's handle.
#[derive(Debug)]
pub struct Ledger {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

/// Rows written per transaction at most.
const BATCH: usize = 4096;

/// How long the writer lets records gather before a transaction.
const WINDOW: Duration = Duration::from_millis(25);

impl Ledger {
    /// Start the writer on its own connection to `path`.
    pub fn start(path: &Path, retention_days: u32) -> Result<Self, StoreError> {
        let conn = super::store::open_db(path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("usage-ledger".into())
            .spawn(move || writer(conn, rx, retention_days))
            .map_err(|e| StoreError::Invalid(format!("cannot start the ledger thread: {e}")))?;
        Ok(Self { tx })
    }

    pub fn record(&self, r: UsageRecord) {
        // The writer only stops with the process.
        let _ = self.tx.send(Msg::Record(Box::new(r)));
    }

    /// Wait until every record sent so far is committed.
    pub fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(10));
        }
    }
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<Msg>, retention_days: u32) {
    let mut last_prune = 0u64;
    while let Ok(first) = rx.recv() {
        // Let a window's records gather: one wake-up and one transaction
        // per window under load, not one per request (each costing a
        // futex wake and a WAL write on a core the requests need).
        if !matches!(first, Msg::Flush(_)) {
            std::thread::sleep(WINDOW);
        }
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(r) => records.push(r),
                Msg::Flush(done) => flushes.push(done),
            }
            if records.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !records.is_empty()
            && let Err(e) = insert(&mut conn, &records)
        {
            tracing::error!(error = %e, lost = records.len(), "usage ledger write failed");
        }
        let now = now_ms();
        if retention_days > 0 && now.saturating_sub(last_prune) > 3_600_000 {
            last_prune = now;
            let cutoff = now.saturating_sub(u64::from(retention_days) * 86_400_000);
            if let Err(e) = conn.execute("DELETE FROM usage WHERE ts_ms < ?1", [cutoff as i64]) {
                tracing::warn!(error = %e, "usage ledger: pruning old records failed");
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

fn insert(conn: &mut Connection, records: &[Box<UsageRecord>]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO usage (ts_ms, request_id, tenant, key_id, endpoint, model_group,
               placement, provider, deployment, prompt_tokens, completion_tokens,
               cached_tokens, cost_usd, saved_usd, cache, latency_ms, status, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        for r in records {
            stmt.execute(params![
                r.ts_ms as i64,
                r.request_id,
                r.tenant,
                r.key_id,
                r.endpoint,
                r.model_group,
                r.placement,
                r.provider,
                r.deployment,
                r.prompt_tokens as i64,
                r.completion_tokens as i64,
                r.cached_tokens as i64,
                r.cost_usd,
                r.saved_usd,
                r.cache,
                r.latency_ms,
                r.status,
                r.outcome,
            ])?;
        }
    }
    tx.commit()
}

/// Money spent so far in the current day and month, per `key:<id>` and
/// `tenant:<name>`, from the ledger (at start-up).
pub fn spend_since(
    store: &Store,
    day_start_ms: u64,
    month_start_ms: u64,
) -> Result<HashMap<String, (f64, f64)>, StoreError> {
    store.read(|conn| {
        let mut out: HashMap<String, (f64, f64)> = HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT tenant, key_id,
                    SUM(CASE WHEN ts_ms >= ?1 THEN cost_usd ELSE 0 END), SUM(cost_usd)
             FROM usage WHERE ts_ms >= ?2 GROUP BY tenant, key_id",
        )?;
        let rows = stmt.query_map(params![day_start_ms as i64, month_start_ms as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, f64>(3)?,
            ))
        })?;
        for row in rows {
            let (tenant, key, day, month) = row?;
            let t = out.entry(format!("tenant:{tenant}")).or_default();
            t.0 += day;
            t.1 += month;
            if let Some(k) = key {
                let k = out.entry(format!("key:{k}")).or_default();
                k.0 += day;
                k.1 += month;
            }
        }
        Ok(out)
    })
}

/// `/admin/usage` query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Comma-separated: `tenant`, `key`, `model_group`, `provider`,
    /// `placement`, `cache`, `day`. Default: `tenant`.
    pub group_by: Option<String>,
    /// Unix seconds, inclusive.
    pub start: Option<u64>,
    /// Unix seconds, exclusive.
    pub end: Option<u64>,
    pub tenant: Option<String>,
    pub key: Option<String>,
    pub model_group: Option<String>,
}

/// Group-by names and their SQL expressions.
const DIMENSIONS: &[(&str, &str)] = &[
    ("tenant", "tenant"),
    ("key", "key_id"),
    ("model_group", "model_group"),
    ("provider", "provider"),
    ("placement", "placement"),
    ("cache", "cache"),
    ("day", "date(ts_ms / 1000, 'unixepoch')"),
];

/// Aggregate the ledger.
pub fn report(store: &Store, q: &UsageQuery) -> Result<Vec<serde_json::Value>, StoreError> {
    let dims: Vec<(&str, &str)> = q
        .group_by
        .as_deref()
        .unwrap_or("tenant")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            DIMENSIONS
                .iter()
                .find(|(name, _)| *name == d)
                .copied()
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "Unknown `group_by` dimension `{d}`; use {}.",
                        DIMENSIONS
                            .iter()
                            .map(|d| d.0)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    let select: Vec<String> = dims.iter().map(|(_, e)| e.to_string()).collect();
    let mut sql = String::from("SELECT ");
    for s in &select {
        sql.push_str(s);
        sql.push_str(", ");
    }
    sql.push_str(
        "COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens),
         SUM(cost_usd), SUM(status >= 400), SUM(cache LIKE 'hit%'), AVG(latency_ms),
         SUM(saved_usd)
         FROM usage WHERE ts_ms >= ?1 AND ts_ms < ?2
           AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR key_id = ?4)
           AND (?5 IS NULL OR model_group = ?5)",
    );
    if !select.is_empty() {
        sql.push_str(" GROUP BY ");
        sql.push_str(&select.join(", "));
        sql.push_str(" ORDER BY SUM(cost_usd) DESC, COUNT(*) DESC");
    }
    let start = q.start.unwrap_or(0).saturating_mul(1000);
    let end = q.end.map_or(i64::MAX, |e| e.saturating_mul(1000) as i64);
    store
        .read(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let n = dims.len();
            let rows = stmt.query_map(
                params![start as i64, end, q.tenant, q.key, q.model_group],
                |r| {
                    let mut row = serde_json::Map::new();
                    for (i, (name, _)) in dims.iter().enumerate() {
                        row.insert((*name).into(), r.get::<_, Option<String>>(i)?.into());
                    }
                    let int = |i: usize| -> rusqlite::Result<i64> {
                        Ok(r.get::<_, Option<i64>>(n + i)?.unwrap_or(0))
                    };
                    row.insert("requests".into(), int(0)?.into());
                    row.insert("prompt_tokens".into(), int(1)?.into());
                    row.insert("completion_tokens".into(), int(2)?.into());
                    row.insert("cached_tokens".into(), int(3)?.into());
                    row.insert(
                        "cost_usd".into(),
                        r.get::<_, Option<f64>>(n + 4)?.unwrap_or(0.0).into(),
                    );
                    row.insert("errors".into(), int(5)?.into());
                    row.insert("cache_hits".into(), int(6)?.into());
                    row.insert(
                        "mean_latency_ms".into(),
                        r.get::<_, Option<f64>>(n + 7)?.unwrap_or(0.0).into(),
                    );
                    row.insert(
                        "saved_usd".into(),
                        r.get::<_, Option<f64>>(n + 8)?.unwrap_or(0.0).into(),
                    );
                    Ok(serde_json::Value::Object(row))
                },
            )?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .map(|rows| {
            // An empty ledger still answers one all-zero row when ungrouped.
            rows.into_iter()
                .filter(|r| n_requests(r) > 0 || !dims.is_empty())
                .collect()
        })
}

fn n_requests(r: &serde_json::Value) -> i64 {
    r.get("requests")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0)
}
