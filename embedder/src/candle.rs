//! The Candle implementation of [`Embedder`] for BERT-family models.
//!
//! Truncation policy: each text keeps its first `max_tokens` tokens,
//! `[CLS]` and `[SEP]` included (as sentence-transformers does); the rest is
//! ignored. Padding is per batch, to its longest text; the attention mask
//! keeps padding out of attention and out of mean pooling.

use std::str::FromStr;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::Bert;
use crate::cpu::CpuBert;
use crate::model_dir::{ModelDir, Pooling};
use crate::packed::WeightFormat;
use crate::{EmbedError, Embedder, Embeddings};

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// `cuda:N`; needs the `cuda` feature.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device `{s}` (expected `cpu` or `cuda:N`)")),
        }
    }
}

/// Weight precision. On GPUs it is also the arithmetic's; on the CPU, F16
/// is refused and BF16 means BF16 weights in the packed linear layers with
/// F32 arithmetic (half the memory traffic per forward pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!(
                "unknown precision `{s}` (expected `f32`, `f16` or `bf16`)"
            )),
        }
    }
}

impl Precision {
    fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

fn inference(e: candle_core::Error) -> EmbedError {
    EmbedError::Inference(e.to_string())
}

/// The encoder: plain slices on the CPU in F32 where the model allows
/// (see `cpu.rs`), Candle tensors otherwise (GPUs, half precision).
enum Encoder {
    Cpu(CpuBert),
    Candle(Bert),
}

/// A loaded model.
pub struct CandleEmbedder {
    model: Encoder,
    tokenizer: Tokenizer,
    device: Device,
    dtype: DType,
    pooling: Pooling,
    normalize: bool,
    max_tokens: usize,
    dimension: usize,
    vocab_size: usize,
    pad_id: u32,
    cls_id: u32,
    sep_id: u32,
    /// The threads a forward pass runs on. The whole pass is one job on
    /// this pool, so its dozens of parallel steps split among the pool's
    /// own workers instead of each being handed over from the caller's
    /// thread and waited for (see `docs/embeddings.md`, Speed).
    workers: rayon::ThreadPool,
}

/// A pool of `threads` workers (0: one per available core) for forward
/// passes.
fn inference_pool(threads: usize) -> Result<rayon::ThreadPool, EmbedError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("embed-{i}"))
        .build()
        .map_err(|e| EmbedError::Model(format!("embedding threads: {e}")))
}

impl std::fmt::Debug for CandleEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleEmbedder")
            .field("device", &self.device)
            .field("pooling", &self.pooling)
            .field("dimension", &self.dimension)
            .field("max_tokens", &self.max_tokens)
            .field("threads", &self.workers.current_num_threads())
            .finish()
    }
}

impl CandleEmbedder {
    /// Load the model in `dir` onto `device`.
    pub fn load(
        dir: &ModelDir,
        device: DeviceSpec,
        precision: Precision,
    ) -> Result<Self, EmbedError> {
        let device = match device {
            DeviceSpec::Cpu => Device::Cpu,
            DeviceSpec::Cuda(n) => Device::new_cuda(n).map_err(|e| {
                EmbedError::Model(format!("cuda:{n}: {e} (built without the `cuda` feature?)"))
            })?,
        };
        if device.is_cpu() && precision == Precision::F16 {
            return Err(EmbedError::Model(
                "F16 is for GPUs; use F32 or BF16 (BF16 weights, F32 arithmetic) on the CPU".into(),
            ));
        }
        let config_text = std::fs::read_to_string(dir.path.join("config.json"))
            .map_err(|e| EmbedError::Model(format!("config.json: {e}")))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| EmbedError::Model(format!("config.json: {e}")))?;
        let dtype = precision.dtype();
        // Read the weights into tensors (no memory map: no unsafe code).
        let tensors = candle_core::safetensors::load(dir.path.join("model.safetensors"), &device)
            .map_err(|e| EmbedError::Model(format!("model.safetensors: {e}")))?;
        let cpu = match (device.is_cpu(), precision) {
            (true, Precision::F32) => CpuBert::load(&tensors, &config, WeightFormat::F32)?,
            (true, Precision::Bf16) => Some(
                CpuBert::load(&tensors, &config, WeightFormat::Bf16)?.ok_or_else(|| {
                    EmbedError::Model(
                        "BF16 on the CPU needs a BERT the packed path can run \
                         (GELU, layer sizes multiples of 64); use F32"
                            .into(),
                    )
                })?,
            ),
            _ => None,
        };
        let model = match cpu {
            Some(model) => Encoder::Cpu(model),
            None => {
                let vb = VarBuilder::from_tensors(tensors, dtype, &device);
                Encoder::Candle(
                    Bert::load(vb, &config).map_err(|e| EmbedError::Model(e.to_string()))?,
                )
            }
        };
        let mut tokenizer = Tokenizer::from_file(dir.path.join("tokenizer.json"))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let special = |name: &str| {
            tokenizer
                .token_to_id(name)
                .ok_or_else(|| EmbedError::Tokenizer(format!("the vocabulary has no {name} token")))
        };
        let (pad_id, cls_id, sep_id) = (special("[PAD]")?, special("[CLS]")?, special("[SEP]")?);
        // Padding is done per batch in `embed_ids`.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: dir.max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(Self {
            model,
            tokenizer,
            device,
            dtype,
            pooling: dir.pooling,
            normalize: dir.normalize,
            max_tokens: dir.max_tokens,
            dimension: config.hidden_size,
            vocab_size: config.vocab_size,
            pad_id,
            cls_id,
            sep_id,
            workers: inference_pool(0)?,
        })
    }

    /// Runs forward passes on `threads` threads (0: one per available core,
    /// the default).
    pub fn with_threads(mut self, threads: usize) -> Result<Self, EmbedError> {
        self.workers = inference_pool(threads)?;
        Ok(self)
    }

    /// The threads forward passes run on.
    pub fn threads(&self) -> usize {
        self.workers.current_num_threads()
    }

    /// Pooled (and, if the model says so, normalised) vectors, from the
    /// CPU encoder's `[Σ len, hidden]` states.
    fn pool(&self, hidden: &[f32], sequences: &[Vec<u32>]) -> Vec<Vec<f32>> {
        let h = self.dimension;
        let mut rows = hidden.chunks_exact(h);
        sequences
            .iter()
            .map(|seq| {
                let mut pooled = vec![0f32; h];
                for (k, row) in rows.by_ref().take(seq.len()).enumerate() {
                    if self.pooling == Pooling::Mean || k == 0 {
                        pooled.iter_mut().zip(row).for_each(|(p, &v)| *p += v);
                    }
                }
                if self.pooling == Pooling::Mean {
                    let n = seq.len().max(1) as f32;
                    pooled.iter_mut().for_each(|p| *p /= n);
                }
                if self.normalize {
                    let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    pooled.iter_mut().for_each(|p| *p /= norm);
                }
                pooled
            })
            .collect()
    }

    /// Candle's path: a padded batch with an attention mask.
    fn forward_padded(
        &self,
        model: &Bert,
        ids: Vec<u32>,
        mask: Vec<u32>,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<Vec<f32>>, candle_core::Error> {
        let input_ids = Tensor::from_vec(ids, (rows, cols), &self.device)?;
        let token_type_ids = input_ids.zeros_like()?;
        let mask = Tensor::from_vec(mask, (rows, cols), &self.device)?;
        let hidden = model.forward(&input_ids, &token_type_ids, &mask)?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.i((.., 0))?,
            Pooling::Mean => {
                let m = mask.to_dtype(self.dtype)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&m)?.sum(1)?;
                summed.broadcast_div(&m.sum(1)?)?
            }
        };
        let pooled = pooled.to_dtype(DType::F32)?;
        let pooled = if self.normalize {
            let norm = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f32::MAX)?;
            pooled.broadcast_div(&norm)?
        } else {
            pooled
        };
        pooled.to_vec2::<f32>()
    }
}

impl Embedder for CandleEmbedder {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    fn wrap_ids(&self, ids: &[u32]) -> Result<Vec<u32>, EmbedError> {
        if let Some((i, id)) = ids
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= self.vocab_size)
        {
            return Err(EmbedError::InvalidInput(format!(
                "token {id} at position {i} is not in the model's vocabulary of {} tokens",
                self.vocab_size
            )));
        }
        let keep = ids.len().min(self.max_tokens.saturating_sub(2));
        let mut seq = Vec::with_capacity(keep + 2);
        seq.push(self.cls_id);
        seq.extend_from_slice(&ids[..keep]);
        seq.push(self.sep_id);
        Ok(seq)
    }

    fn embed_ids(&self, sequences: &[Vec<u32>]) -> Result<Embeddings, EmbedError> {
        if sequences.is_empty() {
            return Ok(Embeddings {
                vectors: Vec::new(),
                token_counts: Vec::new(),
            });
        }
        // [CLS] and [SEP] are not counted as the caller's tokens.
        let token_counts = sequences
            .iter()
            .map(|seq| seq.len().saturating_sub(2))
            .collect();
        let model = match &self.model {
            Encoder::Cpu(model) => {
                let hidden = self.workers.install(|| model.forward(sequences))?;
                return Ok(Embeddings {
                    vectors: self.pool(&hidden, sequences),
                    token_counts,
                });
            }
            Encoder::Candle(model) => model,
        };
        let rows = sequences.len();
        let cols = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * cols);
        let mut mask = Vec::with_capacity(rows * cols);
        for seq in sequences {
            ids.extend_from_slice(seq);
            ids.extend(std::iter::repeat_n(self.pad_id, cols - seq.len()));
            mask.extend(std::iter::repeat_n(1u32, seq.len()));
            mask.extend(std::iter::repeat_n(0u32, cols - seq.len()));
        }
        let vectors = self
            .workers
            .install(|| self.forward_padded(model, ids, mask, rows, cols))
            .map_err(inference)?;
        Ok(Embeddings {
            vectors,
            token_counts,
        })
    }
}
