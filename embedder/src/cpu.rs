//! The BERT encoder on the CPU in F32, as plain slices instead of Candle
//! tensors: what makes large batches fast. The linear layers' weights can
//! be kept in BF16 (`precision = "bf16"`), which halves the memory a
//! forward pass reads; all arithmetic stays F32.
//!
//! Same weights and arithmetic as [`crate::bert::Bert`] (Candle's BERT), with
//! these differences, each measured in `docs/embeddings.md`:
//!
//! - **No padding.** The texts of a batch are laid end to end: the linear
//!   layers multiply every real token once and attention runs per text over
//!   its own length, so a short text next to a long one costs nothing extra
//!   and no mask is needed.
//! - **Few buffers.** One forward pass allocates five buffers and reuses them
//!   through every layer, where Candle allocates each op's output (about ten
//!   per layer).
//! - **Fused and vectorised.** Query, key and value are one packed product
//!   with the attention scale folded into the query's weights; bias and GELU
//!   are applied inside the packed layers; residual add and layer norm are
//!   one pass; softmax uses a vectorised `exp`. All SIMD goes through
//!   [`pulp`] (AVX-512, AVX2 or scalar, chosen at run time).
//!
//! Used for F32 on the CPU when every linear layer can be packed and the
//! activation is GELU (erf); otherwise the embedder uses Candle's path.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_transformers::models::bert::{Config, HiddenAct};
use rayon::prelude::*;

use crate::EmbedError;
use crate::packed::{Activation, PackedLinear, ROWS, WeightFormat, pack_rows_into, tile_rows};

/// Rows per rayon task in the element-wise passes (layer norm).
const NORM_ROWS: usize = 32;
/// Fewest multiply-adds (both attention products) per rayon task: a few
/// microseconds of work, above what handing a task to another thread costs.
const ATTENTION_TASK_MACS: usize = 256 * 1024;

/// A layer norm's scale and shift.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// Query (pre-scaled by 1/√head_size), key and value: `hidden → 3·hidden`.
    qkv: PackedLinear,
    attention_out: PackedLinear,
    attention_norm: Norm,
    intermediate: PackedLinear,
    output: PackedLinear,
    output_norm: Norm,
}

/// BERT's embeddings and encoder for the CPU in F32.
pub struct CpuBert {
    arch: pulp::Arch,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    eps: f32,
    vocab: usize,
    max_positions: usize,
    words: Vec<f32>,
    positions: Vec<f32>,
    /// Row 0 of the token-type table (every token is type 0 here).
    token_type: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
}

/// Reads the named F32 tensors of one checkpoint.
struct Weights<'a> {
    tensors: &'a HashMap<String, Tensor>,
    prefix: &'static str,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        let full = format!("{}{name}", self.prefix);
        let tensor = self
            .tensors
            .get(&full)
            .ok_or_else(|| EmbedError::Model(format!("model.safetensors has no `{full}`")))?;
        if tensor.dims() != shape {
            return Err(EmbedError::Model(format!(
                "`{full}` has shape {:?}, expected {shape:?}",
                tensor.dims()
            )));
        }
        tensor
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(|e| EmbedError::Model(format!("`{full}`: {e}")))
    }

    fn norm(&self, name: &str, size: usize) -> Result<Norm, EmbedError> {
        Ok(Norm {
            weight: self.get(&format!("{name}.weight"), &[size])?,
            bias: self.get(&format!("{name}.bias"), &[size])?,
        })
    }

    /// A linear layer's weight (`[outputs, inputs]`) and bias.
    fn linear(
        &self,
        name: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), EmbedError> {
        Ok((
            self.get(&format!("{name}.weight"), &[outputs, inputs])?,
            self.get(&format!("{name}.bias"), &[outputs])?,
        ))
    }
}

/// Packs a layer; `None` when its shape cannot be packed.
fn pack(
    (weight, bias): (Vec<f32>, Vec<f32>),
    inputs: usize,
    format: WeightFormat,
) -> Option<PackedLinear> {
    let outputs = bias.len();
    PackedLinear::with_format(&weight, bias, outputs, inputs, format)
}

impl CpuBert {
    /// Builds the encoder from a checkpoint's tensors. `Ok(None)` when this
    /// path does not apply (an activation other than GELU, or a layer size
    /// that is not a multiple of the packed panel width): use Candle's.
    /// The linear layers' weights are stored in `format`.
    pub fn load(
        tensors: &HashMap<String, Tensor>,
        c: &Config,
        format: WeightFormat,
    ) -> Result<Option<Self>, EmbedError> {
        if c.hidden_act != HiddenAct::Gelu
            || c.num_attention_heads == 0
            || !c.hidden_size.is_multiple_of(c.num_attention_heads)
        {
            return Ok(None);
        }
        // Some checkpoints prefix every name with `bert.`.
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let w = Weights { tensors, prefix };
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let scale = 1.0 / ((h / c.num_attention_heads) as f32).sqrt();
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let name = |n: &str| format!("encoder.layer.{l}.{n}");
            let (mut weight, mut bias) = w.linear(&name("attention.self.query"), h, h)?;
            weight.iter_mut().for_each(|v| *v *= scale);
            bias.iter_mut().for_each(|v| *v *= scale);
            for part in ["key", "value"] {
                let (pw, pb) = w.linear(&name(&format!("attention.self.{part}")), h, h)?;
                weight.extend(pw);
                bias.extend(pb);
            }
            let (Some(qkv), Some(attention_out), Some(intermediate), Some(output)) = (
                pack((weight, bias), h, format),
                pack(w.linear(&name("attention.output.dense"), h, h)?, h, format),
                pack(w.linear(&name("intermediate.dense"), h, i)?, h, format),
                pack(w.linear(&name("output.dense"), i, h)?, i, format),
            ) else {
                return Ok(None);
            };
            layers.push(Layer {
                qkv,
                attention_out,
                attention_norm: w.norm(&name("attention.output.LayerNorm"), h)?,
                intermediate,
                output,
                output_norm: w.norm(&name("output.LayerNorm"), h)?,
            });
        }
        let token_types = w.get(
            "embeddings.token_type_embeddings.weight",
            &[c.type_vocab_size, h],
        )?;
        Ok(Some(Self {
            arch: pulp::Arch::new(),
            hidden: h,
            intermediate: i,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps as f32,
            vocab: c.vocab_size,
            max_positions: c.max_position_embeddings,
            words: w.get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            positions: w.get(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            token_type: token_types
                .get(..h)
                .map(<[f32]>::to_vec)
                .ok_or_else(|| EmbedError::Model("the model has no token types".into()))?,
            norm: w.norm("embeddings.LayerNorm", h)?,
            layers,
        }))
    }

    /// The last hidden states of every token of every sequence, end to end:
    /// `[Σ len, hidden]`, row-major. Sequences must not be empty.
    pub fn forward(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>, EmbedError> {
        let h = self.hidden;
        let lens: Vec<usize> = sequences.iter().map(Vec::len).collect();
        if let Some(&n) = lens.iter().find(|&&n| n == 0 || n > self.max_positions) {
            return Err(EmbedError::InvalidInput(format!(
                "a sequence of {n} tokens (the model takes 1 to {})",
                self.max_positions
            )));
        }
        let tokens: usize = lens.iter().sum();
        let mut x = vec![0f32; tokens * h];
        for (seq, rows) in sequences.iter().zip(split_rows(&mut x, &lens, h)) {
            for (pos, (&id, row)) in seq.iter().zip(rows.chunks_exact_mut(h)).enumerate() {
                let word = self
                    .words
                    .get(id as usize * h..)
                    .and_then(|w| w.get(..h))
                    .ok_or_else(|| {
                        EmbedError::InvalidInput(format!(
                            "token {id} is not in the model's vocabulary of {} tokens",
                            self.vocab
                        ))
                    })?;
                let position = &self.positions[pos * h..][..h];
                for (((r, &w), &p), &t) in
                    row.iter_mut().zip(word).zip(position).zip(&self.token_type)
                {
                    *r = w + p + t;
                }
            }
        }
        add_norm(self.arch, &mut x, None, &self.norm, self.eps, h);

        let mut qkv = vec![0f32; tokens * 3 * h];
        let mut heads = vec![0f32; tokens * h];
        let mut context = vec![0f32; tokens * h];
        let mut attended = vec![0f32; tokens * h];
        let mut inner = vec![0f32; tokens * self.intermediate];
        for layer in &self.layers {
            layer
                .qkv
                .forward_into(self.arch, &x, tokens, &mut qkv, Activation::None);
            self.attention(&qkv, &lens, &mut heads, &mut context);
            layer.attention_out.forward_into(
                self.arch,
                &context,
                tokens,
                &mut attended,
                Activation::None,
            );
            add_norm(
                self.arch,
                &mut attended,
                Some(&x),
                &layer.attention_norm,
                self.eps,
                h,
            );
            layer.intermediate.forward_into(
                self.arch,
                &attended,
                tokens,
                &mut inner,
                Activation::GeluErf,
            );
            layer
                .output
                .forward_into(self.arch, &inner, tokens, &mut x, Activation::None);
            add_norm(
                self.arch,
                &mut x,
                Some(&attended),
                &layer.output_norm,
                self.eps,
                h,
            );
        }
        Ok(x)
    }

    /// Self-attention of each sequence over itself, one rayon task per
    /// sequence and head. `qkv`: `[tokens, 3·hidden]`; `heads`: scratch of
    /// `[tokens, hidden]`, filled sequence by sequence, head-major; the
    /// result goes to `context` (`[tokens, hidden]`).
    fn attention(&self, qkv: &[f32], lens: &[usize], heads: &mut [f32], context: &mut [f32]) {
        let (h, n_heads) = (self.hidden, self.heads);
        let d = h / n_heads;
        let mut tasks = Vec::with_capacity(lens.len() * n_heads);
        let mut start = 0;
        for (&n, seq_heads) in lens.iter().zip(split_rows(heads, lens, h)) {
            let rows = &qkv[start * 3 * h..(start + n) * 3 * h];
            for (head, out) in seq_heads.chunks_exact_mut(n * d).enumerate() {
                tasks.push((rows, n, head, out));
            }
            start += n;
        }
        // A short text's heads are too small to be a task each (splitting
        // costs more than the work): at least ATTENTION_TASK_MACS per task.
        let macs = 2 * d * n_heads * lens.iter().map(|&n| n * n).sum::<usize>();
        let per_task = (tasks.len() * ATTENTION_TASK_MACS).div_ceil(macs.max(1));
        tasks
            .into_par_iter()
            .with_min_len(per_task.max(1))
            .for_each_init(Scratch::default, |scratch, (rows, n, head, out)| {
                self.arch.dispatch(AttentionHead {
                    rows,
                    n,
                    hidden: h,
                    d,
                    head,
                    scratch,
                    out,
                });
            });
        // Head-major → token-major.
        let mut start = 0;
        for &n in lens {
            let seq_heads = &heads[start * h..(start + n) * h];
            let seq_context = &mut context[start * h..(start + n) * h];
            for (head, block) in seq_heads.chunks_exact(n * d).enumerate() {
                for (row, src) in seq_context.chunks_exact_mut(h).zip(block.chunks_exact(d)) {
                    row[head * d..(head + 1) * d].copy_from_slice(src);
                }
            }
            start += n;
        }
    }
}

/// Splits `buf` (`[Σ lens, width]`) into one mutable slice per sequence.
fn split_rows<'a>(mut buf: &'a mut [f32], lens: &[usize], width: usize) -> Vec<&'a mut [f32]> {
    let mut parts = Vec::with_capacity(lens.len());
    for &n in lens {
        let (part, rest) = std::mem::take(&mut buf).split_at_mut(n * width);
        parts.push(part);
        buf = rest;
    }
    parts
}

/// `x ← layer_norm(x + residual)` row by row (`width` per row), on all
/// cores.
fn add_norm(
    arch: pulp::Arch,
    x: &mut [f32],
    residual: Option<&[f32]>,
    norm: &Norm,
    eps: f32,
    width: usize,
) {
    let rows = NORM_ROWS * width;
    match residual {
        Some(residual) => x
            .par_chunks_mut(rows)
            .zip(residual.par_chunks(rows))
            .for_each(|(x, r)| {
                for (x, r) in x.chunks_exact_mut(width).zip(r.chunks_exact(width)) {
                    arch.dispatch(AddNorm {
                        x,
                        residual: Some(r),
                        norm,
                        eps,
                    });
                }
            }),
        None => x.par_chunks_mut(rows).for_each(|x| {
            for x in x.chunks_exact_mut(width) {
                arch.dispatch(AddNorm {
                    x,
                    residual: None,
                    norm,
                    eps,
                });
            }
        }),
    }
}

/// One row: `x ← (x + r − mean) / √(var + eps) · weight + bias`.
struct AddNorm<'a> {
    x: &'a mut [f32],
    residual: Option<&'a [f32]>,
    norm: &'a Norm,
    eps: f32,
}

impl pulp::WithSimd for AddNorm<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let AddNorm {
            x,
            residual,
            norm,
            eps,
        } = self;
        if let Some(r) = residual {
            axpy(simd, x, 1.0, r);
        }
        let width = x.len() as f32;
        let mean = sum(simd, x) / width;
        let (head, tail) = S::as_mut_simd_f32s(x);
        let m = simd.splat_f32s(mean);
        let mut acc = simd.splat_f32s(0.0);
        for v in head.iter() {
            let c = simd.sub_f32s(*v, m);
            acc = simd.mul_add_e_f32s(c, c, acc);
        }
        let mut var = simd.reduce_sum_f32s(acc);
        for v in tail.iter() {
            var += (v - mean) * (v - mean);
        }
        let inv = 1.0 / (var / width + eps).sqrt();
        let (w, wt) = S::as_simd_f32s(&norm.weight);
        let (b, bt) = S::as_simd_f32s(&norm.bias);
        let inv_v = simd.splat_f32s(inv);
        for ((v, &w), &b) in head.iter_mut().zip(w).zip(b) {
            let c = simd.mul_f32s(simd.sub_f32s(*v, m), inv_v);
            *v = simd.mul_add_e_f32s(c, w, b);
        }
        for ((v, &w), &b) in tail.iter_mut().zip(wt).zip(bt) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

/// `y ← y + a·x`.
#[inline(always)]
fn axpy<S: pulp::Simd>(simd: S, y: &mut [f32], a: f32, x: &[f32]) {
    let (yh, yt) = S::as_mut_simd_f32s(y);
    let (xh, xt) = S::as_simd_f32s(x);
    let av = simd.splat_f32s(a);
    for (y, &x) in yh.iter_mut().zip(xh) {
        *y = simd.mul_add_e_f32s(av, x, *y);
    }
    for (y, &x) in yt.iter_mut().zip(xt) {
        *y = a.mul_add(x, *y);
    }
}

#[inline(always)]
fn sum<S: pulp::Simd>(simd: S, x: &[f32]) -> f32 {
    let (head, tail) = S::as_simd_f32s(x);
    let mut acc = simd.splat_f32s(0.0);
    for &v in head {
        acc = simd.add_f32s(acc, v);
    }
    simd.reduce_sum_f32s(acc) + tail.iter().sum::<f32>()
}

/// Per-thread scratch buffers for [`AttentionHead`].
#[derive(Default)]
struct Scratch {
    queries: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    scores: Vec<f32>,
    probs: Vec<f32>,
}

/// One head of one sequence: `out = softmax(q·kᵀ) · v` (the query is already
/// scaled), `[n, d]`.
struct AttentionHead<'a> {
    /// The sequence's rows of `[tokens, 3·hidden]` (query, key, value).
    rows: &'a [f32],
    n: usize,
    hidden: usize,
    d: usize,
    head: usize,
    scratch: &'a mut Scratch,
    out: &'a mut [f32],
}

impl pulp::WithSimd for AttentionHead<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let lanes = core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>();
        match (lanes, self.d) {
            (16, 16) => self.tiled::<S, 4, 1>(simd),
            (16, 32) => self.tiled::<S, 4, 2>(simd),
            (16, 64) => self.tiled::<S, 4, 4>(simd),
            (8, d) if d.is_multiple_of(16) => self.tiled::<S, 2, 2>(simd),
            _ => self.row_by_row(simd),
        }
    }
}

impl AttentionHead<'_> {
    /// The row stride of `rows` and where this head's query, key and value
    /// start in a row.
    fn columns(&self) -> (usize, usize, usize, usize) {
        let (h, at) = (self.hidden, self.head * self.d);
        (3 * h, at, h + at, 2 * h + at)
    }

    /// Both products as register tiles (the packed layer's kernel): scores
    /// `[n, n]` = queries · keysᵀ in panels of `K` registers' worth of keys,
    /// then probabilities · values in strips of `V` registers' worth of
    /// head columns. AVX-512: `K` = 4 (64 keys) and one strip of the whole
    /// head (d = 16·V). AVX2 (16 registers): `K` = `V` = 2, 6 × 16 tiles,
    /// as the packed layers run there.
    #[inline(always)]
    fn tiled<S: pulp::Simd, const K: usize, const V: usize>(self, simd: S) {
        let (stride, q_at, k_at, v_at) = self.columns();
        let AttentionHead {
            rows,
            n,
            d,
            scratch,
            out,
            ..
        } = self;
        let Scratch {
            queries,
            keys,
            values,
            scores,
            probs,
        } = scratch;
        let lanes = core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>();
        let (panel_width, strip_width) = (K * lanes, V * lanes);
        let padded = n.next_multiple_of(panel_width);
        // Keys as panels: [padded / panel_width][d][panel_width], zero past n.
        keys.clear();
        keys.resize(padded * d, 0.0);
        for (j, row) in rows.chunks_exact(stride).enumerate() {
            let panel = &mut keys[(j / panel_width) * d * panel_width..][..d * panel_width];
            for (c, &k) in row[k_at..k_at + d].iter().enumerate() {
                panel[c * panel_width + j % panel_width] = k;
            }
        }
        // Values as strips of head columns: [d / strip_width][n][strip_width].
        values.clear();
        for s in (0..d).step_by(strip_width) {
            for row in rows.chunks_exact(stride) {
                values.extend_from_slice(&row[v_at + s..][..strip_width]);
            }
        }
        queries.clear();
        pack_rows_into(&rows[q_at..], n, d, stride, queries);
        scores.clear();
        scores.resize(ROWS * padded, 0.0);
        for (b, r0) in (0..n).step_by(ROWS).enumerate() {
            let r = ROWS.min(n - r0);
            let qt = &queries[b * ROWS * d..][..r * d];
            for (p, panel) in keys.chunks_exact(d * panel_width).enumerate() {
                let scores = &mut scores[p * panel_width..];
                tile_rows::<S, K>(simd, r, qt, panel, None, scores, padded);
            }
            // Softmax over whole registers, not a scalar tail: the padding
            // keys' scores set to −∞ come out of `exp` as e^-80 at most, too
            // small to move a sum that holds the largest term's 1, and are
            // not read after.
            let whole = n.next_multiple_of(lanes);
            for row in scores.chunks_exact_mut(padded).take(r) {
                row[n..whole].fill(f32::NEG_INFINITY);
                softmax(simd, &mut row[..whole]);
            }
            probs.clear();
            pack_rows_into(scores, r, n, padded, probs);
            for (s, strip) in values.chunks_exact(n * strip_width).enumerate() {
                let out = &mut out[r0 * d + s * strip_width..];
                tile_rows::<S, V>(simd, r, probs, strip, None, out, d);
            }
        }
    }

    /// Any width or instruction set: one query row at a time, as axpys.
    #[inline(always)]
    fn row_by_row<S: pulp::Simd>(self, simd: S) {
        let (stride, q_at, k_at, v_at) = self.columns();
        let AttentionHead {
            rows,
            n,
            d,
            scratch,
            out,
            ..
        } = self;
        let keys_t = &mut scratch.keys;
        keys_t.clear();
        keys_t.resize(n * d, 0.0);
        for (j, row) in rows.chunks_exact(stride).enumerate() {
            for (c, &k) in row[k_at..k_at + d].iter().enumerate() {
                keys_t[c * n + j] = k;
            }
        }
        let scores = &mut scratch.scores;
        scores.clear();
        scores.resize(n, 0.0);
        for (row, o) in rows.chunks_exact(stride).zip(out.chunks_exact_mut(d)) {
            scores.fill(0.0);
            for (c, &q) in row[q_at..q_at + d].iter().enumerate() {
                axpy(simd, scores, q, &keys_t[c * n..(c + 1) * n]);
            }
            softmax(simd, scores);
            o.fill(0.0);
            for (&p, v_row) in scores.iter().zip(rows.chunks_exact(stride)) {
                axpy(simd, o, p, &v_row[v_at..v_at + d]);
            }
        }
    }
}

/// `x ← softmax(x)`, in place.
#[inline(always)]
fn softmax<S: pulp::Simd>(simd: S, x: &mut [f32]) {
    let (head, tail) = S::as_mut_simd_f32s(x);
    let mut max_v = simd.splat_f32s(f32::MIN);
    for &v in head.iter() {
        max_v = simd.max_f32s(max_v, v);
    }
    let max = tail
        .iter()
        .fold(simd.reduce_max_f32s(max_v), |m, &v| m.max(v));
    let m = simd.splat_f32s(max);
    let mut acc = simd.splat_f32s(0.0);
    for v in head.iter_mut() {
        *v = exp(simd, simd.sub_f32s(*v, m));
        acc = simd.add_f32s(acc, *v);
    }
    let mut total = simd.reduce_sum_f32s(acc);
    for v in tail.iter_mut() {
        *v = exp(pulp::Scalar, *v - max);
        total += *v;
    }
    let inv = 1.0 / total;
    let inv_v = simd.splat_f32s(inv);
    for v in head.iter_mut() {
        *v = simd.mul_f32s(*v, inv_v);
    }
    for v in tail.iter_mut() {
        *v *= inv;
    }
}

/// e^x for x in [-80, 80] (clamped; softmax only needs x ≤ 0, and e^-80 is
/// nothing next to its largest term, 1): x = k·ln2 + r with |r| ≤ ln2/2,
/// Cephes' degree-7 polynomial for e^r, and 2^k put into the exponent bits.
/// Relative error within 2 ulp; checked against `f32::exp` in tests.
#[inline(always)]
pub(crate) fn exp<S: pulp::Simd>(simd: S, x: S::f32s) -> S::f32s {
    let x = simd.max_f32s(
        simd.min_f32s(x, simd.splat_f32s(80.0)),
        simd.splat_f32s(-80.0),
    );
    // Round x·log2(e) to an integer k by adding 1.5·2^23: k lands in the low
    // mantissa bits.
    let magic = simd.splat_f32s(12_582_912.0);
    let shifted = simd.mul_add_e_f32s(x, simd.splat_f32s(std::f32::consts::LOG2_E), magic);
    let k = simd.sub_f32s(shifted, magic);
    let r = simd.mul_add_e_f32s(k, simd.splat_f32s(-0.693_359_4), x);
    let r = simd.mul_add_e_f32s(k, simd.splat_f32s(2.121_944_4e-4), r);
    let mut p = simd.splat_f32s(1.987_569_1e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = simd.mul_add_e_f32s(p, r, simd.splat_f32s(c));
    }
    let p = simd.mul_add_e_f32s(
        simd.mul_f32s(p, r),
        r,
        simd.add_f32s(r, simd.splat_f32s(1.0)),
    );
    // 2^k: k's integer bits (two's complement, wrapping) shifted into the
    // exponent field and added to p's.
    let k_bits = simd.sub_u32s(
        simd.transmute_u32s_f32s(shifted),
        simd.transmute_u32s_f32s(magic),
    );
    let scale = simd.mul_u32s(k_bits, simd.splat_u32s(1 << 23));
    simd.transmute_f32s_u32s(simd.add_u32s(simd.transmute_u32s_f32s(p), scale))
}

#[cfg(test)]
mod tests;
