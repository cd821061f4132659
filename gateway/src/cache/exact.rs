//! The exact tier: complete responses by exact key ([`super::key`]), in
//! memory, bounded by entries and by bytes with least-recently-used
//! eviction, each entry served until its expiry.

use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

/// One cached response.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedResponse {
    /// The response body as the client first received it.
    pub body: Bytes,
    pub tenant: String,
    pub group: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; served while `now < expires_at`.
    pub expires_at: u64,
}

/// Counters for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
}

#[derive(Debug)]
struct State {
    entries: LruCache<String, CachedResponse>,
    stats: ExactStats,
}

/// Bounded, thread-safe, least-recently-used.
#[derive(Debug)]
pub struct ExactTier {
    max_entries: usize,
    max_bytes: usize,
    state: Mutex<State>,
}

/// Bytes an entry is charged: its body and key, plus a fixed overhead.
fn charge(key: &str, entry: &CachedResponse) -> usize {
    const OVERHEAD: usize = 128;
    entry.body.len() + key.len() + entry.tenant.len() + entry.group.len() + OVERHEAD
}

impl ExactTier {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            max_bytes,
            state: Mutex::new(State {
                entries: LruCache::unbounded(),
                stats: ExactStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every update is a single call), so a poisoned lock is still good.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry under `key` if it has not expired at `now` (unix seconds);
    /// an expired entry is dropped.
    pub fn get(&self, key: &str, now: u64) -> Option<CachedResponse> {
        let mut s = self.lock();
        let found = match s.entries.get(key) {
            Some(e) if now < e.expires_at => Some(e.clone()),
            Some(_) => {
                if let Some(e) = s.entries.pop(key) {
                    s.stats.bytes -= charge(key, &e);
                    s.stats.expirations += 1;
                }
                None
            }
            None => None,
        };
        match found {
            Some(_) => s.stats.hits += 1,
            None => s.stats.misses += 1,
        }
        s.stats.entries = s.entries.len();
        found
    }

    /// Stores `entry`, replacing any entry under `key`, then evicts the
    /// least recently used entries until both bounds hold. An entry larger
    /// than `max_bytes` on its own is not stored.
    pub fn insert(&self, key: String, entry: CachedResponse) -> bool {
        let size = charge(&key, &entry);
        if size > self.max_bytes {
            return false;
        }
        let mut s = self.lock();
        if let Some(old) = s.entries.put(key.clone(), entry) {
            s.stats.bytes -= charge(&key, &old);
        }
        s.stats.bytes += size;
        while s.entries.len() > self.max_entries || s.stats.bytes > self.max_bytes {
            match s.entries.pop_lru() {
                Some((k, e)) => {
                    s.stats.bytes -= charge(&k, &e);
                    s.stats.evictions += 1;
                }
                None => break,
            }
        }
        s.stats.entries = s.entries.len();
        true
    }

    /// Removes the entries of `tenant` and `group` (each `None` for all);
    /// returns how many.
    pub fn purge(&self, tenant: Option<&str>, group: Option<&str>) -> usize {
        let mut s = self.lock();
        let doomed: Vec<String> = s
            .entries
            .iter()
            .filter(|(_, e)| {
                tenant.is_none_or(|t| e.tenant == t) && group.is_none_or(|g| e.group == g)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            if let Some(e) = s.entries.pop(k) {
                s.stats.bytes -= charge(k, &e);
            }
        }
        s.stats.entries = s.entries.len();
        doomed.len()
    }

    pub fn stats(&self) -> ExactStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests;
