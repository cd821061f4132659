//! The semantic tier in the request path: embed the last user turn, search
//! the caller's scope in the vector store, and serve the nearest candidate
//! that is similar enough **and** passes the [`Verifier`]. Entries carry
//! their response in the store's payload, so they survive a restart.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};
use switchyard_embedder::Batcher;
use uuid::Uuid;

use super::key::CacheKey;
use super::store::{Entry, VectorStore};
use super::verify::Verifier;

/// Candidates read per lookup: the nearest few, in case the nearest fails
/// verification and a slightly farther one passes.
const CANDIDATES: usize = 4;

#[derive(Clone)]
pub struct Semantic {
    pub embedder: Batcher,
    pub store: VectorStore,
    pub budget: Duration,
}

impl std::fmt::Debug for Semantic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semantic")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// A served candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub body: Bytes,
    pub similarity: f32,
    /// The entry was stored under the same exact key (same request).
    pub exact: bool,
    pub group: String,
}

/// What a lookup found, and the query's vector (to store the answer under).
#[derive(Debug, Clone, PartialEq)]
pub struct Looked {
    pub vector: Vec<f32>,
    pub found: Option<Found>,
    /// Not found, but a verified candidate at or above the floor and below
    /// the threshold (an audited group's near band): its answer is compared
    /// with the fresh one.
    pub near: Option<Found>,
}

/// An answer to store, and whose it is.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub response: &'a [u8],
    pub tenant: &'a str,
    pub group: &'a str,
    /// Unix seconds.
    pub now: u64,
    pub ttl_secs: u64,
}

/// The store's id for an exact key: its first 128 bits.
pub fn entry_id(exact: &str) -> Uuid {
    let hex = exact.get(..32).unwrap_or(exact);
    Uuid::from_u128(u128::from_str_radix(hex, 16).unwrap_or(0))
}

impl Semantic {
    async fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        self.embedder
            .embed(vec![text.to_owned()])
            .await
            .map_err(|e| e.to_string())?
            .vectors
            .pop()
            .ok_or_else(|| "the embedder returned no vector".to_owned())
    }

    /// The cosine similarity of two answers' embeddings (the vectors are
    /// normalised); `None` when the embedder fails.
    pub async fn answer_similarity(&self, a: &str, b: &str) -> Option<f32> {
        let out = self
            .embedder
            .embed(vec![a.to_owned(), b.to_owned()])
            .await
            .map_err(|e| tracing::warn!(error = %e, "cache audit: embedding the answers failed"))
            .ok()?;
        let [x, y] = out.vectors.as_slice() else {
            return None;
        };
        Some(x.iter().zip(y).map(|(a, b)| a * b).sum())
    }

    /// Embeds and searches, with no time limit (the caller sets one).
    /// A candidate is served when it was stored under the same exact key,
    /// or when its similarity is at least `similarity` (less for a typo
    /// variant, when `verifier.typo_variants` is on) and it passes
    /// `verifier`. Without one, the first verified candidate from `floor`
    /// up (below what it needs) is returned as `near`.
    pub async fn lookup(
        &self,
        key: &CacheKey,
        similarity: f32,
        floor: f32,
        verifier: Verifier,
        now: f64,
    ) -> Result<Looked, String> {
        let started = Instant::now();
        let vector = self.embed(&key.text).await?;
        let embedded = Instant::now();
        crate::metrics::lookup_phase("embed", embedded - started);
        let neighbours = self
            .store
            .nearest(&key.scope, vector.clone(), CANDIDATES, now)
            .await
            .map_err(|e| e.to_string())?;
        let searched = Instant::now();
        crate::metrics::lookup_phase("search", searched - embedded);
        let mut near = None;
        let found = neighbours.into_iter().find_map(|n| {
            let prompt = n.data.get("prompt").and_then(Value::as_str)?;
            let body = n.data.get("response").and_then(Value::as_str)?;
            let exact = n.data.get("exact").and_then(Value::as_str) == Some(key.exact.as_str());
            let candidate = || Found {
                body: Bytes::from(body.to_owned()),
                similarity: n.similarity,
                exact,
                group: n.group.clone(),
            };
            if exact {
                return Some((n.id, candidate()));
            }
            // A copy typed in a hurry needs less (`Verifier::threshold_for`).
            let needed = if n.similarity < similarity {
                verifier.threshold_for(prompt, &key.text, similarity)
            } else {
                similarity
            };
            if n.similarity < floor.min(needed)
                || verifier.check_at(prompt, &key.text, n.similarity).is_err()
            {
                return None;
            }
            if n.similarity >= needed {
                return Some((n.id, candidate()));
            }
            if near.is_none() {
                near = Some(candidate());
            }
            None
        });
        crate::metrics::lookup_phase("verify", searched.elapsed());
        let found = found.map(|(id, found)| {
            // Recency for eviction, off the request's path.
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch(vec![id], now).await {
                    tracing::warn!(error = %e, "semantic cache: marking an entry used failed");
                }
            });
            found
        });
        let near = near.filter(|_| found.is_none());
        Ok(Looked {
            vector,
            found,
            near,
        })
    }

    /// Stores an answer (embedding the prompt first if the lookup did not).
    pub async fn store(
        &self,
        key: &CacheKey,
        vector: Option<Vec<f32>>,
        answer: Answer<'_>,
    ) -> Result<(), String> {
        let Answer {
            response,
            tenant,
            group,
            now,
            ttl_secs,
        } = answer;
        let response = std::str::from_utf8(response).map_err(|e| e.to_string())?;
        let vector = match vector {
            Some(v) => v,
            None => self.embed(&key.text).await?,
        };
        let mut data = Map::new();
        data.insert("prompt".into(), key.text.clone().into());
        data.insert("response".into(), response.into());
        data.insert("exact".into(), key.exact.clone().into());
        data.insert("created_at".into(), now.into());
        self.store
            .upsert(vec![Entry {
                id: entry_id(&key.exact),
                scope: key.scope.clone(),
                tenant: tenant.to_owned(),
                group: group.to_owned(),
                vector,
                expires_at: now.saturating_add(ttl_secs) as f64,
                created_at: now as f64,
                data,
            }])
            .await
            .map_err(|e| e.to_string())
    }
}
