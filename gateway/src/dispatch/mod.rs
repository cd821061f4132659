//! Dispatch: try a model group's deployments in order, retrying retryable
//! failures with backoff on each, until one has produced its first byte.
//!
//! Nothing reaches the client before an attempt has succeeded (a complete
//! body, or a stream's first chunk), so every retry and fallback happens
//! before the first byte; failures after that are the stream's to report
//! (see [`crate::api::sse`]).

mod backoff;
pub mod breaker;

use std::time::Duration;
use tracing::Instrument as _;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::{Instant, timeout_at};

use crate::error::ApiError;
use crate::providers::{
    ChunkStream, Deadlines, Provider, ProviderError, TimeoutPhase, UpstreamReply, UpstreamRequest,
    Usage,
};
use crate::routing::{Deployment, ModelGroup};
use breaker::{Admission, Transition};

/// A successful attempt, ready to be sent to the client.
pub enum Committed {
    Complete { body: Bytes, usage: Option<Usage> },
    Stream { first: Bytes, rest: ChunkStream },
}

/// The result of dispatching one request.
pub struct Dispatched<'g> {
    pub deployment: &'g Deployment,
    /// Its index in the group.
    pub index: usize,
    pub reply: Committed,
    /// Time spent waiting on upstreams (all attempts, and the backoff
    /// between them), excluded from the gateway's overhead.
    pub upstream_time: Duration,
    /// Time of the attempt that answered: to its first chunk when
    /// streamed, to the whole answer otherwise.
    pub answer_time: Duration,
    pub attempts: u32,
}

/// A request every deployment failed.
#[derive(Debug)]
pub struct Failed {
    pub error: ApiError,
    pub deployment: Option<String>,
    pub upstream_time: Duration,
    pub attempts: u32,
}

/// Try `group`'s deployments for `req`, in `order` (deployment indices;
/// `None`: the group's own order).
pub async fn dispatch<'g>(
    group: &'g ModelGroup,
    order: Option<&[usize]>,
    req: &UpstreamRequest<'_>,
) -> Result<Dispatched<'g>, Failed> {
    let mut last: Option<(&Deployment, ProviderError)> = None;
    let mut soonest_probe: Option<Duration> = None;
    let mut upstream_time = Duration::ZERO;
    let mut attempts = 0;
    let order = order.map_or_else(|| group.attempt_order(), <[usize]>::to_vec);
    'deployments: for i in order {
        let dep = &group.deployments[i];
        if !dep.provider.supports(req.endpoint) {
            last.get_or_insert((
                dep,
                ProviderError::Unsupported(format!(
                    "model `{}` cannot serve {}",
                    group.name,
                    req.endpoint.path()
                )),
            ));
            continue;
        }
        for retry in 0..=dep.retry.max_retries {
            if let Admission::Rejected { retry_in } = dep.breaker.admit(Instant::now()) {
                soonest_probe = Some(soonest_probe.map_or(retry_in, |s| s.min(retry_in)));
                continue 'deployments;
            }
            attempts += 1;
            let started = Instant::now();
            let result = attempt(dep, req)
                .instrument(tracing::info_span!(
                    "upstream",
                    deployment = %dep.id,
                    attempt = retry + 1,
                    otel.kind = "client"
                ))
                .await;
            let answer_time = started.elapsed();
            upstream_time += answer_time;
            let error = match result {
                Ok(reply) => {
                    if dep.breaker.on_success() == Some(Transition::Closed) {
                        tracing::info!(deployment = %dep.id, "circuit breaker closed");
                    }
                    return Ok(Dispatched {
                        deployment: dep,
                        index: i,
                        reply,
                        upstream_time,
                        answer_time,
                        attempts,
                    });
                }
                Err(e) => e,
            };
            if error.trips_breaker()
                && dep.breaker.on_failure(Instant::now()) == Some(Transition::Opened)
            {
                tracing::warn!(deployment = %dep.id, "circuit breaker opened");
            }
            tracing::warn!(
                request_id = req.request_id,
                deployment = %dep.id,
                attempt = retry + 1,
                error = %error,
                "upstream attempt failed"
            );
            let wait = if error.is_retryable() && retry < dep.retry.max_retries {
                let after = match &error {
                    ProviderError::Status { retry_after, .. } => *retry_after,
                    _ => None,
                };
                backoff::delay(&dep.retry, retry + 1, after)
            } else {
                None
            };
            let falls_back = error.falls_back();
            last = Some((dep, error));
            match wait {
                Some(d) => {
                    tokio::time::sleep(d).await;
                    upstream_time += d;
                }
                None if falls_back => continue 'deployments,
                None => break 'deployments,
            }
        }
    }
    let failed = |error, deployment| Failed {
        error,
        deployment,
        upstream_time,
        attempts,
    };
    match last {
        Some((dep, error)) => Err(failed(
            ApiError::Upstream {
                deployment: dep.id.clone(),
                error,
            },
            Some(dep.id.clone()),
        )),
        None => Err(failed(
            ApiError::Unavailable {
                message: format!(
                    "Every deployment of model `{}` is unavailable (circuit breaker open); try again later.",
                    group.name
                ),
                retry_after: soonest_probe,
                code: "no_healthy_deployment",
            },
            None,
        )),
    }
}

/// One attempt on one deployment; for streams, up to the first chunk.
async fn attempt(dep: &Deployment, req: &UpstreamRequest<'_>) -> Result<Committed, ProviderError> {
    let deadlines = Deadlines::from_now(&dep.timeouts);
    match dep.provider.send(req, &dep.model, deadlines).await? {
        UpstreamReply::Complete { body, usage } => Ok(Committed::Complete { body, usage }),
        UpstreamReply::Stream(mut rest) => {
            match timeout_at(deadlines.first_byte, rest.next()).await {
                Err(_) => Err(ProviderError::Timeout(TimeoutPhase::FirstByte)),
                Ok(None) => Err(ProviderError::Protocol(
                    "upstream stream ended before its first chunk".into(),
                )),
                Ok(Some(Err(e))) => Err(e),
                Ok(Some(Ok(first))) => Ok(Committed::Stream { first, rest }),
            }
        }
    }
}
