//! The access database (`auth.db`, SQLite in WAL mode): virtual keys, the
//! audit log of admin actions, and the usage ledger.
//!
//! Keys are stored as the SHA-256 of the secret (a key is 190 random bits,
//! so a fast hash is the right one: there is nothing to brute-force) with
//! a short hint (`sk-sy-…k3Qx`) for people to recognise them. The table
//! is small and read on every request, so it is mirrored in memory and
//! every change goes to both, database first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rand::Rng as _;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::LimitsConfig;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY,
  hash BLOB NOT NULL UNIQUE,
  record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_ms INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT,
  detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_ms INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  tenant TEXT NOT NULL,
  key_id TEXT,
  endpoint TEXT NOT NULL,
  model_group TEXT,
  placement TEXT,
  provider TEXT,
  deployment TEXT,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  cached_tokens INTEGER NOT NULL,
  cost_usd REAL NOT NULL,
  -- a cache hit: what its answer would have cost (docs/access.md)
  saved_usd REAL NOT NULL DEFAULT 0,
  cache TEXT NOT NULL,
  latency_ms REAL NOT NULL,
  status INTEGER NOT NULL,
  outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts_ms);
CREATE INDEX IF NOT EXISTS usage_tenant ON usage (tenant, ts_ms);
";

/// Key prefix: `sk-` so tools that look for OpenAI-style keys find ours
/// too, then `sy-` for Switchyard.
pub const KEY_PREFIX: &str = "sk-sy-";

/// A virtual key's attributes (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub tenant: String,
    /// Model groups this key may use; empty: all the tenant may use.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Unix seconds after which the key no longer works.
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub created_at: u64,
    #[serde(default)]
    pub revoked_at: Option<u64>,
    #[serde(default)]
    pub rotated_at: Option<u64>,
    /// The secret's first and last characters.
    pub key_hint: String,
}

/// What an admin may set on a key; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub tenant: Option<String>,
    pub models: Option<Vec<String>>,
    pub limits: Option<LimitsConfig>,
    /// Unix seconds; 0 clears the expiry.
    pub expires_at: Option<u64>,
    /// Seconds from now; an alternative to `expires_at`.
    pub expires_in: Option<u64>,
    pub metadata: Option<Map<String, Value>>,
}

/// An admin action, for the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub ts_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Value,
}

#[derive(Debug, Default)]
struct Keys {
    by_hash: HashMap<[u8; 32], Arc<KeyRecord>>,
    hash_of: HashMap<String, [u8; 32]>,
}

/// Errors of admin operations, shown to the admin.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("No virtual key with id `{0}`.")]
    NoSuchKey(String),
    #[error("{0}")]
    Invalid(String),
    #[error("access database: {0}")]
    Db(#[from] rusqlite::Error),
}

#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    keys: RwLock<Keys>,
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn new_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{KEY_PREFIX}{body}")
}

fn hint(secret: &str) -> String {
    format!("{KEY_PREFIX}…{}", &secret[secret.len() - 4..])
}

pub(crate) fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = open_db(path)?;
        conn.execute_batch(SCHEMA)?;
        let mut keys = Keys::default();
        {
            let mut stmt = conn.prepare("SELECT hash, record FROM keys")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (h, record) = row?;
                let record: KeyRecord = serde_json::from_str(&record)
                    .map_err(|e| StoreError::Invalid(format!("corrupt key record: {e}")))?;
                let h: [u8; 32] = h
                    .try_into()
                    .map_err(|_| StoreError::Invalid("corrupt key hash".into()))?;
                keys.hash_of.insert(record.id.clone(), h);
                keys.by_hash.insert(h, Arc::new(record));
            }
        }
        Ok(Self {
            conn: Mutex::new(conn),
            keys: RwLock::new(keys),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key with this secret, revoked or expired ones included.
    pub fn lookup(&self, secret: &str) -> Option<Arc<KeyRecord>> {
        let h = hash(secret);
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.by_hash.get(&h).cloned()
    }

    pub fn get(&self, id: &str) -> Option<Arc<KeyRecord>> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let h = keys.hash_of.get(id)?;
        keys.by_hash.get(h).cloned()
    }

    pub fn list(&self, tenant: Option<&str>) -> Vec<Arc<KeyRecord>> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = keys
            .by_hash
            .values()
            .filter(|k| tenant.is_none_or(|t| k.tenant == t))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        out
    }

    /// Create a key; the secret is returned here and never again.
    pub fn create(&self, patch: KeyPatch, actor: &str) -> Result<(KeyRecord, String), StoreError> {
        let now = now_secs();
        let secret = new_secret();
        let mut record = KeyRecord {
            id: format!("key_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            name: None,
            tenant: String::new(),
            models: Vec::new(),
            limits: LimitsConfig::default(),
            expires_at: None,
            metadata: Map::new(),
            created_at: now,
            revoked_at: None,
            rotated_at: None,
            key_hint: hint(&secret),
        };
        apply(&mut record, patch, now)?;
        if record.tenant.is_empty() {
            return Err(StoreError::Invalid("`tenant` is required.".into()));
        }
        let h = hash(&secret);
        self.write(&record, h, None, actor, "key.create")?;
        Ok((record, secret))
    }

    pub fn update(&self, id: &str, patch: KeyPatch, actor: &str) -> Result<KeyRecord, StoreError> {
        let (mut record, h) = self.current(id)?;
        apply(&mut record, patch, now_secs())?;
        self.write(&record, h, None, actor, "key.update")?;
        Ok(record)
    }

    /// A new secret for the same key (same id, attributes and usage); the
    /// old secret stops working at once.
    pub fn rotate(&self, id: &str, actor: &str) -> Result<(KeyRecord, String), StoreError> {
        let (mut record, old) = self.current(id)?;
        if record.revoked_at.is_some() {
            return Err(StoreError::Invalid(format!("Key `{id}` is revoked.")));
        }
        let secret = new_secret();
        record.key_hint = hint(&secret);
        record.rotated_at = Some(now_secs());
        self.write(&record, hash(&secret), Some(old), actor, "key.rotate")?;
        Ok((record, secret))
    }

    pub fn revoke(&self, id: &str, actor: &str) -> Result<KeyRecord, StoreError> {
        let (mut record, h) = self.current(id)?;
        if record.revoked_at.is_none() {
            record.revoked_at = Some(now_secs());
            self.write(&record, h, None, actor, "key.revoke")?;
        }
        Ok(record)
    }

    fn current(&self, id: &str) -> Result<(KeyRecord, [u8; 32]), StoreError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let h = *keys
            .hash_of
            .get(id)
            .ok_or_else(|| StoreError::NoSuchKey(id.to_owned()))?;
        Ok(((*keys.by_hash[&h]).clone(), h))
    }

    /// Persist a key and its audit entry in one transaction, then mirror
    /// it in memory.
    fn write(
        &self,
        record: &KeyRecord,
        h: [u8; 32],
        replaces: Option<[u8; 32]>,
        actor: &str,
        action: &str,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let detail = serde_json::json!({
            "tenant": record.tenant,
            "name": record.name,
            "models": record.models,
            "limits": record.limits,
            "expires_at": record.expires_at,
            "key_hint": record.key_hint,
        });
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO keys (id, hash, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET hash = excluded.hash, record = excluded.record",
                params![record.id, h.as_slice(), json],
            )?;
            insert_audit(&tx, actor, action, Some(&record.id), &detail)?;
            tx.commit()?;
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = replaces {
            keys.by_hash.remove(&old);
        }
        keys.hash_of.insert(record.id.clone(), h);
        keys.by_hash.insert(h, Arc::new(record.clone()));
        Ok(())
    }

    /// Record an admin action that changes no key (a cache purge, say).
    pub fn audit(&self, actor: &str, action: &str, target: Option<&str>, detail: &Value) {
        let conn = self.conn();
        if let Err(e) = insert_audit(&conn, actor, action, target, detail) {
            tracing::error!(error = %e, action, "audit log write failed");
        }
    }

    /// Audit entries, newest first.
    pub fn audit_log(&self, limit: usize, since_ms: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT ts_ms, actor, action, target, detail FROM audit
             WHERE ts_ms >= ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since_ms as i64, limit as i64], |r| {
            Ok(AuditEntry {
                ts_ms: r.get::<_, i64>(0)? as u64,
                actor: r.get(1)?,
                action: r.get(2)?,
                target: r.get(3)?,
                detail: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or(Value::Null),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Run a read query on the database (the usage reports).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        Ok(f(&self.conn())?)
    }
}

fn insert_audit(
    conn: &Connection,
    actor: &str,
    action: &str,
    target: Option<&str>,
    detail: &Value,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO audit (ts_ms, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_ms() as i64, actor, action, target, detail.to_string()],
    )
}

/// A tenant name: 1 to 64 letters, digits, `_`, `-` or `.`.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn apply(record: &mut KeyRecord, patch: KeyPatch, now: u64) -> Result<(), StoreError> {
    if let Some(t) = patch.tenant {
        if !valid_name(&t) {
            return Err(StoreError::Invalid(
                "`tenant` must be 1 to 64 letters, digits, `_`, `-` or `.`.".into(),
            ));
        }
        record.tenant = t;
    }
    if let Some(n) = patch.name {
        if n.len() > 256 {
            return Err(StoreError::Invalid(
                "`name` is longer than 256 bytes.".into(),
            ));
        }
        record.name = Some(n);
    }
    if let Some(m) = patch.models {
        record.models = m;
    }
    if let Some(l) = patch.limits {
        let bad_money = |v: Option<f64>| v.is_some_and(|v| !(v.is_finite() && v >= 0.0));
        if bad_money(l.budget_daily_usd) || bad_money(l.budget_monthly_usd) {
            return Err(StoreError::Invalid(
                "Budgets must be non-negative numbers.".into(),
            ));
        }
        record.limits = l;
    }
    match (patch.expires_at, patch.expires_in) {
        (Some(_), Some(_)) => {
            return Err(StoreError::Invalid(
                "Give `expires_at` or `expires_in`, not both.".into(),
            ));
        }
        (Some(0), None) => record.expires_at = None,
        (Some(t), None) => record.expires_at = Some(t),
        (None, Some(s)) => record.expires_at = Some(now.saturating_add(s)),
        (None, None) => {}
    }
    if let Some(m) = patch.metadata {
        if Value::Object(m.clone()).to_string().len() > 16 * 1024 {
            return Err(StoreError::Invalid(
                "`metadata` is larger than 16 KiB.".into(),
            ));
        }
        record.metadata = m;
    }
    Ok(())
}
