//! The BERT encoder, for sentence embeddings.
//!
//! Adapted from `candle-transformers` 0.11.1 `models::bert` (Apache-2.0 or
//! MIT, © the Candle authors): same weights, same arithmetic, encoder only.
//! Changed, and checked against sentence-transformers by `tests/model.rs` on
//! the CPU and (once, by hand) on an H100:
//!
//! - the padding mask uses the dtype's lowest finite value: the original's
//!   `f32::MIN` becomes −∞ in F16 and BF16, and 0 × −∞ made every vector NaN;
//! - every linear layer multiplies one 2-D matrix (all tokens of the batch)
//!   instead of one product per text;
//! - on the CPU in F32 the linear layers use [`PackedLinear`] (weights
//!   packed once at load), which is 2–3× faster than Candle's `gemm` for a
//!   single text and level with it for large batches (see
//!   `docs/embeddings.md`); the weights are then held once, packed.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder, embedding, layer_norm};
use candle_transformers::models::bert::{Config, HiddenAct};

use crate::packed::{Activation, PackedLinear};

/// A linear layer: packed for the CPU, a Candle tensor elsewhere (GPU,
/// half precision, or a shape that cannot be packed).
enum Dense {
    Packed(PackedLinear, pulp::Arch),
    Tensor { weight: Tensor, bias: Tensor },
}

impl Dense {
    fn load(inputs: usize, outputs: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((outputs, inputs), "weight")?;
        let bias = vb.get(outputs, "bias")?;
        if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            let packed = PackedLinear::new(
                &weight.flatten_all()?.to_vec1()?,
                bias.to_vec1()?,
                outputs,
                inputs,
            );
            if let Some(packed) = packed {
                return Ok(Self::Packed(packed, pulp::Arch::new()));
            }
        }
        Ok(Self::Tensor { weight, bias })
    }

    /// `xs`: `[.., inputs]` → `[.., outputs]`, as one 2-D product.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_with(xs, None)
    }

    /// `act(forward(xs))`; GELU is fused into the packed layer.
    fn forward_with(&self, xs: &Tensor, act: Option<HiddenAct>) -> Result<Tensor> {
        let mut shape = xs.dims().to_vec();
        let inputs = shape.pop().unwrap_or(0);
        let rows = shape.iter().product::<usize>();
        match self {
            Self::Packed(packed, arch) => {
                shape.push(packed.outputs());
                let x = xs.flatten_all()?.to_vec1::<f32>()?;
                let fused = match act {
                    Some(HiddenAct::Gelu) => Activation::GeluErf,
                    _ => Activation::None,
                };
                let ys = Tensor::from_vec(
                    packed.forward_with(*arch, &x, rows, fused),
                    shape,
                    xs.device(),
                )?;
                match (act, fused) {
                    (Some(act), Activation::None) => activation(&ys, act),
                    _ => Ok(ys),
                }
            }
            Self::Tensor { weight, bias } => {
                shape.push(weight.dim(0)?);
                let ys = xs
                    .reshape((rows, inputs))?
                    .matmul(&weight.t()?)?
                    .broadcast_add(bias)?
                    .reshape(shape)?;
                match act {
                    Some(act) => activation(&ys, act),
                    None => Ok(ys),
                }
            }
        }
    }
}

fn activation(xs: &Tensor, act: HiddenAct) -> Result<Tensor> {
    match act {
        HiddenAct::Gelu => xs.gelu_erf(),
        HiddenAct::GeluApproximate => xs.gelu(),
        HiddenAct::Relu => xs.relu(),
    }
}

struct Embeddings {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, c: &Config) -> Result<Self> {
        Ok(Self {
            words: embedding(c.vocab_size, c.hidden_size, vb.pp("word_embeddings"))?,
            positions: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            token_types: embedding(
                c.type_vocab_size,
                c.hidden_size,
                vb.pp("token_type_embeddings"),
            )?,
            layer_norm: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        let (_, seq_len) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, seq_len as u32, input_ids.device())?;
        let xs = (self.words.forward(input_ids)? + self.token_types.forward(token_type_ids)?)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        self.layer_norm.forward(&xs)
    }
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    act: HiddenAct,
    output: Dense,
    output_norm: LayerNorm,
    heads: usize,
    head_size: usize,
}

impl Layer {
    fn load(vb: VarBuilder, c: &Config) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let attention = vb.pp("attention");
        Ok(Self {
            query: Dense::load(h, h, attention.pp("self").pp("query"))?,
            key: Dense::load(h, h, attention.pp("self").pp("key"))?,
            value: Dense::load(h, h, attention.pp("self").pp("value"))?,
            attention_out: Dense::load(h, h, attention.pp("output").pp("dense"))?,
            attention_norm: layer_norm(
                h,
                c.layer_norm_eps,
                attention.pp("output").pp("LayerNorm"),
            )?,
            intermediate: Dense::load(h, i, vb.pp("intermediate").pp("dense"))?,
            act: c.hidden_act,
            output: Dense::load(i, h, vb.pp("output").pp("dense"))?,
            output_norm: layer_norm(h, c.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
            heads: c.num_attention_heads,
            head_size: h / c.num_attention_heads,
        })
    }

    /// `[batch, seq, hidden]` → `[batch, heads, seq, head_size]`.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        xs.reshape((b, s, self.heads, self.head_size))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let q = self.split_heads(&self.query.forward(xs)?)?;
        let k = self.split_heads(&self.key.forward(xs)?)?;
        let v = self.split_heads(&self.value.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_size as f64).sqrt())?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, h))?;
        let attended = self
            .attention_norm
            .forward(&(self.attention_out.forward(&context)? + xs)?)?;
        let inner = self.intermediate.forward_with(&attended, Some(self.act))?;
        self.output_norm
            .forward(&(self.output.forward(&inner)? + attended)?)
    }
}

/// The lowest finite value of `dtype`, as an f32. (f32::MIN would become
/// -inf in F16 and BF16, and 0 × -inf is NaN.)
fn lowest(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => -65_504.0,
        DType::BF16 => -3.389_531_4e38,
        _ => f32::MIN,
    }
}

/// BERT's embeddings and encoder: token ids → the last hidden states.
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl Bert {
    pub fn load(vb: VarBuilder, c: &Config) -> Result<Self> {
        // Some checkpoints prefix every name with `bert.`.
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), c))
            .collect::<Result<_>>()?;
        Ok(Self {
            embeddings: Embeddings::load(vb.pp("embeddings"), c)?,
            layers,
        })
    }

    /// `input_ids`, `token_type_ids`, `mask`: `[batch, seq]` (mask 1 for
    /// tokens, 0 for padding) → `[batch, seq, hidden]`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let mut xs = self.embeddings.forward(input_ids, token_type_ids)?;
        // 0 where attended, the dtype's lowest finite value where padding
        // (as transformers does).
        let dtype = xs.dtype();
        let mask = mask.to_dtype(dtype)?.unsqueeze(1)?.unsqueeze(1)?;
        let mask = (mask.ones_like()? - &mask)?
            .broadcast_mul(&Tensor::new(lowest(dtype), xs.device())?.to_dtype(dtype)?)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &mask)?;
        }
        Ok(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The GPU path (Candle tensors) runs on the CPU too when asked, so the
    /// suite covers it without a GPU.
    #[test]
    fn packed_and_tensor_layers_agree() {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 1., (128, 48), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1., 128, &dev).unwrap();
        let packed = PackedLinear::new(
            &weight.flatten_all().unwrap().to_vec1().unwrap(),
            bias.to_vec1().unwrap(),
            128,
            48,
        )
        .unwrap();
        let packed = Dense::Packed(packed, pulp::Arch::new());
        let tensor = Dense::Tensor {
            weight: weight.clone(),
            bias: bias.clone(),
        };
        let xs = Tensor::randn(0f32, 1., (3, 5, 48), &dev).unwrap();
        let want = xs
            .broadcast_matmul(&weight.t().unwrap())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        for (name, layer) in [("packed", &packed), ("tensor", &tensor)] {
            for act in [None, Some(HiddenAct::Gelu)] {
                let got = layer.forward_with(&xs, act).unwrap();
                let want = match act {
                    Some(a) => activation(&want, a).unwrap(),
                    None => want.clone(),
                };
                let diff = (got - &want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 1e-4, "{name} {act:?}: {diff}");
            }
        }
    }

    #[test]
    fn the_padding_mask_is_finite_in_every_precision() {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let back = Tensor::new(lowest(dtype), &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_scalar::<f32>())
                .unwrap();
            assert!(back.is_finite() && back < -6e4, "{dtype:?}: {back}");
        }
    }
}
