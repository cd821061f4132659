//! Micro-batching: concurrent requests are coalesced into one forward pass.
//!
//! Requests go into a bounded queue; a dedicated thread takes the first
//! waiting request, gathers more for up to `max_wait` or until `max_batch`
//! texts are in hand, sorts the texts by length (less padding), embeds them
//! in chunks of `max_batch`, and answers each request. Inference never runs
//! on the async runtime. A full queue is refused at once
//! ([`EmbedError::Overloaded`]) instead of growing without bound.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::{EmbedError, Embedder, Embeddings};

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    /// Most texts in one forward pass.
    pub max_batch: usize,
    /// Longest wait for more requests once one is in hand.
    pub max_wait: Duration,
    /// Most requests waiting; more are refused.
    pub queue_capacity: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::from_millis(2),
            queue_capacity: 1_024,
        }
    }
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Embeddings, EmbedError>>,
}

/// A handle to the batching thread; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    tx: SyncSender<Job>,
    dimension: usize,
    max_tokens: usize,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("dimension", &self.dimension)
            .finish()
    }
}

impl Batcher {
    /// Start the batching thread for `embedder`.
    pub fn start(embedder: Arc<dyn Embedder>, config: BatcherConfig) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(config.queue_capacity.max(1));
        let dimension = embedder.dimension();
        let max_tokens = embedder.max_tokens();
        std::thread::Builder::new()
            .name("switchyard-embedder".into())
            .spawn(move || worker(&*embedder, &rx, config))?;
        Ok(Self {
            tx,
            dimension,
            max_tokens,
        })
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Embed `texts`, batched with whatever else is waiting.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embeddings, EmbedError> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Job { texts, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EmbedError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(EmbedError::Closed),
        }
        answer.await.unwrap_or(Err(EmbedError::Closed))
    }
}

fn worker(embedder: &dyn Embedder, rx: &Receiver<Job>, config: BatcherConfig) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut count = jobs[0].texts.len();
        let deadline = Instant::now() + config.max_wait;
        while count < config.max_batch {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(job) => {
                    count += job.texts.len();
                    jobs.push(job);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        run(embedder, jobs, config.max_batch);
    }
}

/// Embed every job's texts, sorted by length and chunked, and answer each.
fn run(embedder: &dyn Embedder, jobs: Vec<Job>, max_batch: usize) {
    let mut all: Vec<(usize, &str)> = jobs
        .iter()
        .flat_map(|j| j.texts.iter().map(String::as_str))
        .enumerate()
        .collect();
    all.sort_by_key(|(_, t)| t.len());
    let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); all.len()];
    let mut counts = vec![0usize; all.len()];
    let mut failure = None;
    for chunk in all.chunks(max_batch.max(1)) {
        let texts: Vec<String> = chunk.iter().map(|(_, t)| (*t).to_owned()).collect();
        match embedder.embed(&texts) {
            Ok(out) => {
                for (((i, _), v), c) in chunk.iter().zip(out.vectors).zip(out.token_counts) {
                    vectors[*i] = v;
                    counts[*i] = c;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let mut vectors = vectors.into_iter();
    let mut counts = counts.into_iter();
    for job in jobs {
        let n = job.texts.len();
        let result = match &failure {
            Some(e) => Err(e.clone()),
            None => Ok(Embeddings {
                vectors: vectors.by_ref().take(n).collect(),
                token_counts: counts.by_ref().take(n).collect(),
            }),
        };
        let _ = job.reply.send(result);
    }
}
