//! Micro-batching: concurrent requests are coalesced into one forward pass.
//!
//! Requests go into a bounded queue; a dedicated thread takes the first
//! waiting request and every other already queued, then (if `max_wait` is
//! not zero) waits up to `max_wait` for more, until `max_batch` texts are in
//! hand, sorts the texts by length (less padding), embeds them
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
    /// Longest wait for more requests once the queued ones are in hand.
    /// Zero (the default) never waits: a lone request runs at once, and
    /// under load batches still form from the requests that queue while the
    /// previous batch runs.
    pub max_wait: Duration,
    /// Most requests waiting; more are refused.
    pub queue_capacity: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::ZERO,
            queue_capacity: 1_024,
        }
    }
}

/// What a request asks to embed.
enum Input {
    Texts(Vec<String>),
    Ids(Vec<Vec<u32>>),
}

impl Input {
    fn len(&self) -> usize {
        match self {
            Self::Texts(t) => t.len(),
            Self::Ids(i) => i.len(),
        }
    }
}

struct Job {
    input: Input,
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
        self.submit(Input::Texts(texts)).await
    }

    /// Embed token-id sequences in the model's own vocabulary (special
    /// tokens are added; ids outside the vocabulary are refused).
    pub async fn embed_ids(&self, ids: Vec<Vec<u32>>) -> Result<Embeddings, EmbedError> {
        self.submit(Input::Ids(ids)).await
    }

    async fn submit(&self, input: Input) -> Result<Embeddings, EmbedError> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Job { input, reply }) {
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
        let mut count = jobs[0].input.len();
        while count < config.max_batch {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.input.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let deadline = Instant::now() + config.max_wait;
        while count < config.max_batch && !config.max_wait.is_zero() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(job) => {
                    count += job.input.len();
                    jobs.push(job);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        run(embedder, jobs, config.max_batch);
    }
}

/// Turn every job into model inputs (a job whose input is invalid is
/// answered with its own error), embed all inputs sorted by length in chunks
/// of `max_batch` (less padding), and answer each job in its input order.
fn run(embedder: &dyn Embedder, jobs: Vec<Job>, max_batch: usize) {
    let mut live = Vec::with_capacity(jobs.len());
    for job in jobs {
        let sequences = match &job.input {
            Input::Texts(texts) => embedder.tokenize(texts),
            Input::Ids(ids) => ids.iter().map(|i| embedder.wrap_ids(i)).collect(),
        };
        match sequences {
            Ok(seqs) => live.push((job.reply, seqs)),
            Err(e) => {
                let _ = job.reply.send(Err(e));
            }
        }
    }
    let mut order: Vec<(usize, &Vec<u32>)> = live
        .iter()
        .flat_map(|(_, seqs)| seqs.iter())
        .enumerate()
        .collect();
    order.sort_by_key(|(_, seq)| seq.len());
    let total = order.len();
    let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); total];
    let mut counts = vec![0usize; total];
    let mut failure = None;
    for chunk in order.chunks(max_batch.max(1)) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|(_, s)| (*s).clone()).collect();
        match embedder.embed_ids(&seqs) {
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
    for (reply, seqs) in live {
        let n = seqs.len();
        let result = match &failure {
            Some(e) => Err(e.clone()),
            None => Ok(Embeddings {
                vectors: vectors.by_ref().take(n).collect(),
                token_counts: counts.by_ref().take(n).collect(),
            }),
        };
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Records the batch sizes it is called with; the vector is the text's
    /// length, so answers can be matched to questions.
    struct Recorder {
        batches: Mutex<Vec<usize>>,
        delay: Duration,
        calls: AtomicUsize,
    }

    impl Embedder for Recorder {
        fn dimension(&self) -> usize {
            1
        }
        fn max_tokens(&self) -> usize {
            16
        }
        /// One "token" per byte; a text's vector is its length.
        fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, EmbedError> {
            Ok(texts.iter().map(|t| vec![0; t.len()]).collect())
        }
        fn wrap_ids(&self, ids: &[u32]) -> Result<Vec<u32>, EmbedError> {
            if ids.contains(&999) {
                return Err(EmbedError::InvalidInput("999".into()));
            }
            Ok(ids.to_vec())
        }
        fn embed_ids(&self, seqs: &[Vec<u32>]) -> Result<Embeddings, EmbedError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.batches.lock().unwrap().push(seqs.len());
            std::thread::sleep(self.delay);
            Ok(Embeddings {
                vectors: seqs.iter().map(|s| vec![s.len() as f32]).collect(),
                token_counts: seqs.iter().map(Vec::len).collect(),
            })
        }
    }

    fn recorder(delay_ms: u64) -> Arc<Recorder> {
        Arc::new(Recorder {
            batches: Mutex::new(Vec::new()),
            delay: Duration::from_millis(delay_ms),
            calls: AtomicUsize::new(0),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_forward_passes_and_get_their_own_answers() {
        let rec = recorder(20);
        let config = BatcherConfig {
            max_batch: 64,
            max_wait: Duration::from_millis(20),
            queue_capacity: 100,
        };
        let b = Batcher::start(rec.clone(), config).unwrap();
        let tasks: Vec<_> = (1..=40)
            .map(|n| {
                let b = b.clone();
                tokio::spawn(
                    async move { (n, b.embed(vec!["x".repeat(n), "y".repeat(n + 100)]).await) },
                )
            })
            .collect();
        for t in tasks {
            let (n, out) = t.await.unwrap();
            let out = out.unwrap();
            assert_eq!(out.vectors, vec![vec![n as f32], vec![(n + 100) as f32]]);
            assert_eq!(out.token_counts, vec![n, n + 100]);
        }
        let calls = rec.calls.load(Ordering::SeqCst);
        assert!(calls < 40, "40 requests took {calls} forward passes");
        assert!(rec.batches.lock().unwrap().iter().all(|&s| s <= 64));
    }

    #[tokio::test]
    async fn big_requests_are_split_into_max_batch_chunks() {
        let rec = recorder(0);
        let config = BatcherConfig {
            max_batch: 8,
            max_wait: Duration::from_millis(1),
            queue_capacity: 4,
        };
        let b = Batcher::start(rec.clone(), config).unwrap();
        let texts: Vec<String> = (0..20).map(|i| "z".repeat(20 - i)).collect();
        let out = b.embed(texts.clone()).await.unwrap();
        let expected: Vec<Vec<f32>> = texts.iter().map(|t| vec![t.len() as f32]).collect();
        assert_eq!(out.vectors, expected, "answers come back in input order");
        assert_eq!(*rec.batches.lock().unwrap(), vec![8, 8, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_not_grown() {
        let rec = recorder(200);
        let config = BatcherConfig {
            max_batch: 1,
            max_wait: Duration::ZERO,
            queue_capacity: 2,
        };
        let b = Batcher::start(rec, config).unwrap();
        let results: Vec<_> = futures_join((0..10).map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.embed(vec!["q".into()]).await })
        }))
        .await;
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(EmbedError::Overloaded)))
            .count();
        let served = results.iter().filter(|r| r.is_ok()).count();
        assert!(refused >= 6, "refused {refused}");
        assert_eq!(refused + served, 10);
    }

    #[tokio::test]
    async fn an_invalid_request_fails_alone() {
        let b = Batcher::start(recorder(0), BatcherConfig::default()).unwrap();
        let (bad, good) = tokio::join!(
            b.embed_ids(vec![vec![1, 999]]),
            b.embed_ids(vec![vec![1, 2, 3]])
        );
        assert!(matches!(bad, Err(EmbedError::InvalidInput(_))));
        assert_eq!(good.unwrap().vectors, vec![vec![3.0]]);
    }

    async fn futures_join(
        handles: impl Iterator<Item = tokio::task::JoinHandle<Result<Embeddings, EmbedError>>>,
    ) -> Vec<Result<Embeddings, EmbedError>> {
        let mut out = Vec::new();
        for h in handles.collect::<Vec<_>>() {
            out.push(h.await.unwrap());
        }
        out
    }
}
