//! The client's SSE body for a streamed answer: each upstream chunk as a
//! `data:` event, `data: [DONE]` only after the upstream finished properly.
//! An upstream failure after streaming has begun ends the stream with an
//! explicit error event (`data: {"error": {...}}`, which the OpenAI SDKs
//! raise as an exception) and no `[DONE]`, never a clean end.

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;

use super::log::RequestLog;
use super::proxy::CacheWrite;
use crate::cache::replay::Assembler;
use crate::error::ApiError;
use crate::providers::{ChunkStream, Usage};

struct State {
    first: Option<Bytes>,
    rest: ChunkStream,
    log: RequestLog,
    deployment: String,
    /// A cache miss to fill once the stream has ended normally.
    cache: Option<(CacheWrite, Assembler)>,
    /// The local backend's hold, released when the stream ends or is
    /// dropped.
    _ticket: Option<crate::fleet::Ticket>,
    /// When the last chunk was sent (none yet: the first is already here).
    last: Option<tokio::time::Instant>,
    /// The client did not ask for the usage chunk (the gateway did): drop it.
    strip_usage: bool,
}

pub fn frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    b.put_slice(b"data: ");
    b.put_slice(payload);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// Usage carried by a chunk, if any (checked cheaply before parsing).
fn chunk_usage(chunk: &[u8]) -> Option<Usage> {
    const NEEDLE: &[u8] = b"\"usage\":{";
    if !chunk.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct U {
        usage: Option<Usage>,
    }
    serde_json::from_slice::<U>(chunk).ok()?.usage
}

/// The usage of a chunk that carries nothing else (`"choices": []`).
fn usage_only(chunk: &[u8]) -> Option<Usage> {
    const EMPTY: &[u8] = b"\"choices\":[]";
    if !chunk.windows(EMPTY.len()).any(|w| w == EMPTY) {
        return None;
    }
    chunk_usage(chunk)
}

pub fn body(
    first: Bytes,
    rest: ChunkStream,
    mut log: RequestLog,
    deployment: String,
    cache: Option<CacheWrite>,
    ticket: Option<crate::fleet::Ticket>,
    strip_usage: bool,
) -> Body {
    // Until the stream ends one way or another, a dropped body means the
    // client went away.
    log.outcome = "client_disconnected";
    let state = State {
        first: Some(first),
        rest,
        log,
        deployment,
        cache: cache.map(|w| (w, Assembler::default())),
        _ticket: ticket,
        last: None,
        strip_usage,
    };
    let stream = futures_util::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        let mut next = match st.first.take() {
            Some(first) => Some(Ok(first)),
            None => st.rest.next().await,
        };
        // The usage chunk the client did not ask for is recorded, not sent.
        while let Some(Ok(chunk)) = &next
            && st.strip_usage
            && let Some(u) = usage_only(chunk)
        {
            st.log.usage = Some(u);
            if let Some((_, assembler)) = &mut st.cache {
                assembler.push(chunk);
            }
            next = st.rest.next().await;
        }
        match next {
            Some(Ok(chunk)) => {
                let now = tokio::time::Instant::now();
                if let Some(last) = st.last.replace(now) {
                    crate::metrics::inter_chunk(&st.deployment, now - last);
                }
                if let Some(u) = chunk_usage(&chunk) {
                    st.log.usage = Some(u);
                }
                if let Some((_, assembler)) = &mut st.cache {
                    assembler.push(&chunk);
                }
                Some((Ok::<_, std::io::Error>(frame(&chunk)), Some(st)))
            }
            Some(Err(error)) => {
                tracing::warn!(request_id = %st.log.request_id, deployment = %st.deployment,
                               error = %error, "upstream failed mid-stream");
                st.log.outcome = "upstream_error_mid_stream";
                let err = ApiError::Upstream {
                    deployment: st.deployment.clone(),
                    error,
                };
                Some((Ok(frame(err.body().to_string().as_bytes())), None))
            }
            None => {
                st.log.outcome = "ok";
                // Stored only now: the upstream finished properly and the
                // client took every chunk so far.
                if let Some((write, assembler)) = st.cache.take()
                    && let Some(body) = assembler.finish()
                {
                    super::proxy::store(write, &body);
                }
                Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), None))
            }
        }
    });
    Body::from_stream(stream)
}
