//! `/v1/embeddings` answered in-process by a configured embedding model
//! (`[[embedding_models]]`): strings or token arrays in, float or base64
//! vectors out, `usage` counted by the model's own tokenizer.

use std::time::Duration;

use axum::Json;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use switchyard_embedder::{Batcher, EmbedError};

use super::log::RequestLog;
use super::proxy::{BACKEND, fail};
use super::types::{EmbeddingInput, EmbeddingRequest, EncodingFormat};
use crate::error::ApiError;
use crate::providers::Usage;

pub async fn embed(batcher: &Batcher, req: EmbeddingRequest, mut log: RequestLog) -> Response {
    let deployment = format!("local/{}", req.model);
    log.model_group = Some(req.model.clone());
    log.deployment = Some(deployment.clone());
    log.attempts = 1;
    if let Some(d) = req.dimensions
        && d as usize != batcher.dimension()
    {
        let msg = format!(
            "Model `{}` produces {}-dimensional vectors and cannot shorten them; omit `dimensions` or set it to {}.",
            req.model,
            batcher.dimension(),
            batcher.dimension()
        );
        return fail(log, ApiError::invalid(msg, Some("dimensions")));
    }
    let result = match req.input {
        EmbeddingInput::One(text) => batcher.embed(vec![text]).await,
        EmbeddingInput::Many(texts) => batcher.embed(texts).await,
        EmbeddingInput::Tokens(ids) => batcher.embed_ids(vec![ids]).await,
        EmbeddingInput::ManyTokens(ids) => batcher.embed_ids(ids).await,
    };
    let out = match result {
        Ok(out) => out,
        Err(e) => return fail(log, api_error(e)),
    };
    let base64 = req.encoding_format == Some(EncodingFormat::Base64);
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = out.token_counts.iter().map(|&n| n as u64).sum();
    log.usage = Some(Usage {
        prompt_tokens: tokens,
        completion_tokens: 0,
        prompt_tokens_details: None,
    });
    let mut resp = Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&deployment) {
        resp.headers_mut().insert(BACKEND, v);
    }
    resp
}

fn api_error(e: EmbedError) -> ApiError {
    match e {
        EmbedError::InvalidInput(msg) => ApiError::invalid(msg, Some("input")),
        EmbedError::Overloaded => ApiError::Unavailable {
            message: "The embedding model's queue is full; try again shortly.".into(),
            retry_after: Some(Duration::from_secs(1)),
            code: "embedding_queue_full",
        },
        EmbedError::Closed => ApiError::Unavailable {
            message: "The embedding model is shutting down.".into(),
            retry_after: None,
            code: "embedding_unavailable",
        },
        other => ApiError::Internal(format!("Embedding failed: {other}")),
    }
}
