//! A sentence-transformers model folder: `config.json`, `tokenizer.json`,
//! `model.safetensors`, and the sentence-transformers files that say how
//! token vectors become a sentence vector (`modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::EmbedError;

/// How token vectors are pooled into one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the token vectors, padding excluded.
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
}

/// What the model folder says about the model.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub path: PathBuf,
    pub pooling: Pooling,
    /// A `Normalize` module follows pooling: vectors are L2-normalised.
    pub normalize: bool,
    /// `max_seq_length` from `sentence_bert_config.json`, else the model's
    /// `max_position_embeddings`.
    pub max_tokens: usize,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn read_json(path: &Path) -> Result<Value, EmbedError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EmbedError::Model(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| EmbedError::Model(format!("{} is not valid JSON: {e}", path.display())))
}

impl ModelDir {
    /// Read and check a model folder.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, EmbedError> {
        let path = path.into();
        for required in [
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "modules.json",
        ] {
            if !path.join(required).is_file() {
                return Err(EmbedError::Model(format!(
                    "{} has no {required} (run models/fetch.sh)",
                    path.display()
                )));
            }
        }
        let modules = read_json(&path.join("modules.json"))?;
        let modules = modules.as_array().cloned().unwrap_or_default();
        let module_path = |kind: &str| {
            modules.iter().find_map(|m| {
                let t = m.get("type")?.as_str()?;
                t.ends_with(kind).then(|| {
                    m.get("path")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                })
            })
        };
        let pooling_dir = module_path(".Pooling")
            .ok_or_else(|| EmbedError::Model("modules.json has no Pooling module".into()))?;
        let pooling: PoolingConfig =
            serde_json::from_value(read_json(&path.join(&pooling_dir).join("config.json"))?)
                .map_err(|e| EmbedError::Model(format!("pooling config: {e}")))?;
        let pooling = match (
            pooling.pooling_mode_mean_tokens,
            pooling.pooling_mode_cls_token,
            pooling.pooling_mode_max_tokens || pooling.pooling_mode_mean_sqrt_len_tokens,
        ) {
            (true, false, false) => Pooling::Mean,
            (false, true, false) => Pooling::Cls,
            _ => {
                return Err(EmbedError::Model(
                    "unsupported pooling: exactly one of mean or CLS pooling is supported".into(),
                ));
            }
        };
        let normalize = module_path(".Normalize").is_some();
        let config = read_json(&path.join("config.json"))?;
        let positions = config
            .get("max_position_embeddings")
            .and_then(Value::as_u64)
            .unwrap_or(512) as usize;
        let max_seq = std::fs::read_to_string(path.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("max_seq_length").and_then(Value::as_u64))
            .map(|n| n as usize);
        Ok(Self {
            path,
            pooling,
            normalize,
            max_tokens: max_seq.unwrap_or(positions).min(positions),
        })
    }
}
