//! Provider batches ("remote jobs"): items that would go external while
//! their batch's deadline leaves more than the provider's turnaround are
//! collected per deployment and sent through the provider's own batch API
//! (OpenAI Batch API, Anthropic Message Batches) at its batch price.
//!
//! A job is stored (with its items claimed) before anything is sent, and
//! its provider id as soon as the provider gives one (see
//! `store/remote.rs`), so after a crash it is polled again rather than sent
//! again. Its answers are recorded like any result (exactly once: only for
//! items still pending); items it did not answer (expired or cancelled at
//! the provider, a provider-side failure, a failed submission) are
//! released to the runner, which runs them another way (never again in a
//! provider batch). A batch cancelled or expired here cancels its jobs at
//! the provider.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::store::{Finished, Pending, RemoteJob};
use super::{Batches, Endpoint, ItemState, State, blocking, now_ms};
use crate::app::App;
use crate::providers::batch::{RemoteItem, RemoteResult, RemoteState};
use crate::routing::Deployment;

/// What a job reports to the runner when it ends.
#[derive(Debug)]
pub(super) struct RemoteDone {
    pub seq: i64,
    /// Items the job held (counted in the runner's `remote_in_flight`).
    pub items: usize,
    /// Of those, answered by the provider (recorded).
    pub finished: i64,
    /// Of those, still pending: to run another way.
    pub released: Vec<Pending>,
}

/// Placement label of an item answered through a provider batch.
pub(super) fn placement(deployment: &Deployment) -> String {
    format!("external:{}/batch", deployment.provider_name)
}

fn provider_endpoint(e: Endpoint) -> crate::providers::Endpoint {
    match e {
        Endpoint::ChatCompletions => crate::providers::Endpoint::ChatCompletions,
        Endpoint::Completions => crate::providers::Endpoint::Completions,
        Endpoint::Embeddings => crate::providers::Endpoint::Embeddings,
    }
}

fn deployment_by_id<'a>(app: &'a App, id: &str) -> Option<&'a Deployment> {
    app.groups
        .iter()
        .flat_map(|g| g.deployments.iter())
        .find(|d| d.id == id)
}

fn bodies(items: &[Pending]) -> Vec<RemoteItem> {
    items
        .iter()
        .filter_map(|p| match serde_json::from_slice::<Value>(&p.body) {
            Ok(Value::Object(body)) => Some(RemoteItem {
                custom_id: p.key.to_string(),
                body,
            }),
            _ => None,
        })
        .collect()
}

/// Hands items that never became a job back to the runner.
fn give_back(done: &mpsc::UnboundedSender<RemoteDone>, seq: i64, items: Vec<Pending>) {
    let _ = done.send(RemoteDone {
        seq,
        items: items.len(),
        finished: 0,
        released: items,
    });
}

/// Releases job `job`'s pending items and tells the runner.
async fn finish(
    batches: &Arc<Batches>,
    done: &mpsc::UnboundedSender<RemoteDone>,
    (seq, job, items, finished): (i64, i64, usize, i64),
) {
    let store = batches.store.clone();
    let released = match blocking(move || store.remote_finish(job)).await {
        Ok(r) => r,
        Err(e) => {
            // The items stay claimed; the next start releases or polls them.
            tracing::error!(error = %e, job, "provider batch: cannot release its items");
            Vec::new()
        }
    };
    let _ = done.send(RemoteDone {
        seq,
        items,
        finished,
        released,
    });
}

/// Records answers (those of items still pending count); returns how many.
async fn record(batches: &Arc<Batches>, results: Vec<Finished>) -> i64 {
    if results.is_empty() {
        return 0;
    }
    let results = Arc::new(results);
    loop {
        let store = batches.store.clone();
        let r = results.clone();
        match blocking(move || store.record(&r)).await {
            Ok(n) => {
                batches.progress.send_modify(|v| *v += 1);
                return n as i64;
            }
            Err(e) => {
                tracing::error!(error = %e, "provider batch answers not recorded; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn answer(batch: i64, key: i64, status: u16, body: &[u8], placement: &str) -> Finished {
    Finished {
        batch,
        key,
        state: if (200..300).contains(&status) {
            ItemState::Succeeded
        } else {
            ItemState::Failed
        },
        status: Some(status),
        response: body.to_vec(),
        placement: placement.to_owned(),
        finished_ms: now_ms(),
    }
}

/// Stores a job for `items` on deployment `deployment` (by id), submits
/// it, and follows it to its end.
pub(super) async fn submit(
    app: Arc<App>,
    batches: Arc<Batches>,
    (seq, deployment, endpoint): (i64, String, Endpoint),
    items: Vec<Pending>,
    done: mpsc::UnboundedSender<RemoteDone>,
) {
    let count = items.len();
    let Some(dep) = deployment_by_id(&app, &deployment) else {
        tracing::error!(deployment = %deployment, "provider batch: no such deployment; items run another way");
        give_back(&done, seq, items);
        return;
    };
    let keys: Vec<i64> = items.iter().map(|p| p.key).collect();
    let store = batches.store.clone();
    let id = deployment.clone();
    let (job, claimed) = match blocking(move || store.claim_remote(seq, &id, endpoint, &keys)).await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "provider batch: cannot store the job; items run another way");
            give_back(&done, seq, items);
            return;
        }
    };
    let claimed: std::collections::HashSet<i64> = claimed.into_iter().collect();
    let items: Vec<Pending> = items
        .into_iter()
        .filter(|p| claimed.contains(&p.key))
        .collect();
    let remote_items = bodies(&items);
    let submitted = dep
        .provider
        .batch_submit(provider_endpoint(endpoint), &dep.model, &remote_items)
        .await;
    let (remote_id, refused) = match submitted {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(deployment = %dep.id, items = items.len(), error = %e, "provider batch not accepted; its items run another way");
            finish(&batches, &done, (seq, job, count, 0)).await;
            return;
        }
    };
    let store = batches.store.clone();
    let rid = remote_id.clone();
    if let Err(e) = blocking(move || store.remote_submitted(job, &rid)).await {
        // Not fatal now; after a restart this job would be released and
        // its items run again (the provider's batch abandoned).
        tracing::error!(error = %e, job, "provider batch: cannot store its id");
    }
    tracing::info!(deployment = %dep.id, provider_batch = %remote_id, items = items.len(), "provider batch submitted");
    let label = placement(dep);
    let refused: Vec<Finished> = refused
        .into_iter()
        .filter_map(|(cid, r)| match r {
            RemoteResult::Answer { status, body } => {
                Some(answer(seq, cid.parse().ok()?, status, &body, &label))
            }
            RemoteResult::Unfinished(_) => None,
        })
        .collect();
    let pre = record(&batches, refused).await;
    let job = RemoteJob {
        id: job,
        batch: seq,
        deployment,
        endpoint,
        remote_id: Some(remote_id),
    };
    follow(app, batches, job, count, pre, done).await;
}

/// Polls job `job` at the provider until it ends (or its batch does
/// here), records its answers and releases the rest.
pub(super) async fn follow(
    app: Arc<App>,
    batches: Arc<Batches>,
    job: RemoteJob,
    count: usize,
    mut finished: i64,
    done: mpsc::UnboundedSender<RemoteDone>,
) {
    let seq = job.batch;
    let (Some(dep), Some(remote_id)) = (deployment_by_id(&app, &job.deployment), &job.remote_id)
    else {
        tracing::warn!(job = job.id, deployment = %job.deployment, "provider batch: its deployment is no longer configured; items run another way");
        finish(&batches, &done, (seq, job.id, count, finished)).await;
        return;
    };
    let label = placement(dep);
    let poll = Duration::from_millis(batches.settings.provider_batch_poll_ms);
    loop {
        tokio::time::sleep(poll).await;
        let store = batches.store.clone();
        let running = matches!(
            blocking(move || store.batch_by_seq(seq)).await,
            Ok(Some(row)) if row.state == State::InProgress
        );
        if !running {
            // Cancelled or expired here (or complete): stop it there too.
            if let Err(e) = dep.provider.batch_cancel(remote_id).await {
                tracing::debug!(provider_batch = %remote_id, error = %e, "provider batch: cancel refused");
            }
            finish(&batches, &done, (seq, job.id, count, finished)).await;
            return;
        }
        let store = batches.store.clone();
        let id = job.id;
        let pending = match blocking(move || store.remote_items(id)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "provider batch: cannot read its items");
                continue;
            }
        };
        let by_id: HashMap<String, Map<String, Value>> = bodies(&pending)
            .into_iter()
            .map(|i| (i.custom_id, i.body))
            .collect();
        match dep.provider.batch_poll(remote_id, &dep.model, &by_id).await {
            Ok(RemoteState::Running) => {}
            Ok(RemoteState::Ended(results)) => {
                let mut unanswered = 0usize;
                let answers: Vec<Finished> = results
                    .into_iter()
                    .filter_map(|(cid, r)| {
                        let key: i64 = cid.parse().ok()?;
                        match r {
                            RemoteResult::Answer { status, body } => {
                                Some(answer(seq, key, status, &body, &label))
                            }
                            RemoteResult::Unfinished(_) => {
                                unanswered += 1;
                                None
                            }
                        }
                    })
                    .collect();
                let n = answers.len();
                finished += record(&batches, answers).await;
                tracing::info!(provider_batch = %remote_id, answered = n, unanswered, "provider batch ended");
                finish(&batches, &done, (seq, job.id, count, finished)).await;
                return;
            }
            Err(e) => {
                tracing::warn!(provider_batch = %remote_id, error = %e, "provider batch: poll failed; trying again");
            }
        }
    }
}

/// At start: jobs without a provider id are released (their items run
/// here); the others are followed again.
pub(super) async fn resume(
    app: &Arc<App>,
    batches: &Arc<Batches>,
    done: &mpsc::UnboundedSender<RemoteDone>,
) {
    let store = batches.store.clone();
    let jobs = match blocking(move || store.remote_jobs()).await {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "provider batch: cannot read jobs");
            return;
        }
    };
    for job in jobs {
        let store = batches.store.clone();
        let id = job.id;
        let count = blocking(move || store.remote_items(id))
            .await
            .map_or(0, |p| p.len());
        if job.remote_id.is_none() {
            // Its items were never acknowledged by the provider: they are
            // in the store's pending set once released, and the runner
            // reads them there.
            let store = batches.store.clone();
            if let Err(e) = blocking(move || store.remote_finish(id)).await {
                tracing::error!(error = %e, "provider batch: cannot release an unsubmitted job");
            }
            continue;
        }
        tracing::info!(job = id, provider_batch = ?job.remote_id, items = count, "provider batch: following again after a restart");
        tokio::spawn(follow(
            app.clone(),
            batches.clone(),
            job,
            count,
            0,
            done.clone(),
        ));
    }
}
