//! A linear layer on the CPU: the weights packed once, at load,
//! into panels of 64 output columns, multiplied by a register-blocked kernel
//! through [`pulp`], which picks AVX-512, AVX2 or scalar code at run time.
//!
//! Why: Candle multiplies with the `gemm` crate, which packs the weight on
//! every call; for the handful of rows of a single short text that packing
//! and its small-matrix path cost 3× what this kernel needs (measured by
//! `benches/src/bin/matmul_shapes.rs`, results in `docs/embeddings.md`).
//! For large batches it is level with `gemm` and OpenBLAS, and lets the
//! bias and GELU be applied while each chunk of rows is still in cache.
//!
//! Weights are kept in F32 or, halving what every product reads from
//! memory, in BF16 ([`WeightFormat`]); the arithmetic is F32 either way. A
//! BF16 weight is the top half of an F32, so widening it is one AND or one
//! shift per register: two weights share a `u32`, see [`bf16_slot`].

use std::borrow::Cow;

use rayon::prelude::*;

/// Output columns per panel: 4 AVX-512 or 8 AVX2 registers per row.
pub const PANEL: usize = 64;
/// Columns per strip of an F32 panel: one AVX-512 register, two AVX2 ones.
const STRIP: usize = 16;
/// Rows of the input handled together: 6 rows × 4 AVX-512 registers of
/// accumulators (24 of 32 registers), or 6 rows × 2 AVX2 registers (12 of
/// 16) per 16-column strip of a panel.
pub(crate) const ROWS: usize = 6;

/// How a [`PackedLinear`] stores its weights. The arithmetic is F32 in
/// both; BF16 keeps F32's range with 8 bits of mantissa, rounded to nearest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    Bf16,
}

/// `y = x · Wᵀ + b` for a PyTorch-layout weight `W: [out, in]`.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    inputs: usize,
    outputs: usize,
    panels: Panels,
    bias: Vec<f32>,
}

/// `outputs / PANEL` panels of `inputs × PANEL` weights.
#[derive(Debug, Clone)]
enum Panels {
    /// Each panel as `PANEL / STRIP` strips of `[inputs, STRIP]`, row-major:
    /// every strip is one sequential stream for the prefetcher, read as one
    /// AVX-512 register or two AVX2 registers per step (see [`strips`]).
    F32(Vec<f32>),
    /// Two BF16 weights per `u32`, placed by [`bf16_slot`]: `PANEL / 2`
    /// words per panel row, for 16-lane registers (AVX-512), which read a
    /// panel row as two registers of words.
    Bf16(Vec<u32>),
    /// The same words by strip, for 8-lane registers (AVX2): each panel as
    /// `PANEL / STRIP` strips of `[inputs, 8 words]`, row-major, so a strip
    /// (16 columns, one register of words a step) is one sequential stream,
    /// as an F32 strip is. In the row layout AVX2 would read each strip's
    /// 32 bytes at a 128-byte stride.
    Bf16Strips(Vec<u32>),
}

/// One panel of any layout.
#[derive(Clone, Copy)]
enum Panel<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u32]),
    Bf16Strips(&'a [u32]),
}

/// Where output column `j` (`0..PANEL`) of a BF16 panel row lives: the word
/// (`0..PANEL / 2`) and whether it is the word's high half. Columns
/// `16g..16g + 8` are the high halves of words `8g..8g + 8`, columns
/// `16g + 8..16g + 16` their low halves. In groups of 8 words, so a register
/// of 8 lanes (AVX2) widens to 8 consecutive columns; with 16 lanes
/// (AVX-512) the kernel puts its columns back in order when it stores them
/// (see [`bf16_column`]).
const fn bf16_slot(j: usize) -> (usize, bool) {
    ((j / 16) * 8 + j % 8, j % 16 < 8)
}

/// The inverse of [`bf16_slot`]: the column in `word`'s high or low half.
const fn bf16_column(word: usize, high: bool) -> usize {
    (word / 8) * 16 + if high { 0 } else { 8 } + word % 8
}

/// Where the word of row `k` (of `inputs`) holding `word` (`0..PANEL / 2`)
/// of a BF16 panel row lives, by row or by strip.
#[inline(always)]
const fn bf16_index(k: usize, word: usize, inputs: usize, by_strip: bool) -> usize {
    if by_strip {
        (word / 8) * inputs * 8 + k * 8 + word % 8
    } else {
        k * (PANEL / 2) + word
    }
}

/// The weight at row `k`, column `j` of a BF16 panel of `inputs` rows,
/// widened to F32.
#[inline(always)]
fn bf16_at(panel: &[u32], k: usize, j: usize, inputs: usize, by_strip: bool) -> f32 {
    let (word, high) = bf16_slot(j);
    let w = panel[bf16_index(k, word, inputs, by_strip)];
    f32::from_bits(if high { w & 0xFFFF_0000 } else { w << 16 })
}

/// Lanes of an `f32` register for an instruction set.
struct Lanes;

impl pulp::WithSimd for Lanes {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> usize {
        core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>()
    }
}

impl PackedLinear {
    /// Packs `weight` (`[outputs, inputs]`, row-major) in F32. `None` when
    /// `outputs` is not a multiple of [`PANEL`] or the sizes do not agree.
    pub fn new(weight: &[f32], bias: Vec<f32>, outputs: usize, inputs: usize) -> Option<Self> {
        Self::with_format(weight, bias, outputs, inputs, WeightFormat::F32)
    }

    /// [`new`](Self::new), storing the weights in `format`, laid out for
    /// this machine's best instruction set.
    pub fn with_format(
        weight: &[f32],
        bias: Vec<f32>,
        outputs: usize,
        inputs: usize,
        format: WeightFormat,
    ) -> Option<Self> {
        Self::for_arch(weight, bias, outputs, inputs, format, pulp::Arch::new())
    }

    /// [`with_format`](Self::with_format), laid out for `arch` (any
    /// instruction set runs any layout, the others slowly).
    pub fn for_arch(
        weight: &[f32],
        bias: Vec<f32>,
        outputs: usize,
        inputs: usize,
        format: WeightFormat,
        arch: pulp::Arch,
    ) -> Option<Self> {
        if outputs == 0
            || !outputs.is_multiple_of(PANEL)
            || weight.len() != outputs * inputs
            || bias.len() != outputs
        {
            return None;
        }
        let panels = match format {
            WeightFormat::F32 => {
                let mut panels = vec![0f32; outputs * inputs];
                for (j, row) in weight.chunks_exact(inputs).enumerate() {
                    let panel = &mut panels[(j / PANEL) * inputs * PANEL..][..inputs * PANEL];
                    let strip =
                        &mut panel[(j % PANEL) / STRIP * inputs * STRIP..][..inputs * STRIP];
                    for (k, &w) in row.iter().enumerate() {
                        strip[k * STRIP + j % STRIP] = w;
                    }
                }
                Panels::F32(panels)
            }
            WeightFormat::Bf16 => {
                let by_strip = arch.dispatch(Lanes) == 8;
                let half_panel = PANEL / 2;
                let mut panels = vec![0u32; outputs * inputs / 2];
                for (j, row) in weight.chunks_exact(inputs).enumerate() {
                    let panel =
                        &mut panels[(j / PANEL) * inputs * half_panel..][..inputs * half_panel];
                    let (word, high) = bf16_slot(j % PANEL);
                    for (k, &w) in row.iter().enumerate() {
                        let bits = u32::from(half::bf16::from_f32(w).to_bits());
                        panel[bf16_index(k, word, inputs, by_strip)] |=
                            if high { bits << 16 } else { bits };
                    }
                }
                if by_strip {
                    Panels::Bf16Strips(panels)
                } else {
                    Panels::Bf16(panels)
                }
            }
        };
        Some(Self {
            inputs,
            outputs,
            panels,
            bias,
        })
    }

    /// The packed panels, one per [`PANEL`] output columns.
    fn panels(&self) -> Vec<Panel<'_>> {
        let k = self.inputs;
        match &self.panels {
            Panels::F32(p) => p.chunks_exact(k * PANEL).map(Panel::F32).collect(),
            Panels::Bf16(p) => p.chunks_exact(k * PANEL / 2).map(Panel::Bf16).collect(),
            Panels::Bf16Strips(p) => p
                .chunks_exact(k * PANEL / 2)
                .map(Panel::Bf16Strips)
                .collect(),
        }
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `x`: `rows × inputs`, row-major; returns `rows × outputs`.
    pub fn forward(&self, arch: pulp::Arch, x: &[f32], rows: usize) -> Vec<f32> {
        self.forward_with(arch, x, rows, Activation::None)
    }

    /// [`forward`](Self::forward), then `activation` on every output.
    pub fn forward_with(
        &self,
        arch: pulp::Arch,
        x: &[f32],
        rows: usize,
        activation: Activation,
    ) -> Vec<f32> {
        let mut y = vec![0f32; rows * self.outputs];
        self.forward_into(arch, x, rows, &mut y, activation);
        y
    }

    /// [`forward_with`](Self::forward_with) into `y` (`rows × outputs`), so
    /// a caller can reuse its buffers.
    ///
    /// Work is split over rayon's threads two ways. Few rows: by panel (each
    /// thread streams its share of the weights once). Many rows: by chunks of
    /// rows small enough to stay in a core's L2 cache, each through every
    /// panel, with the bias and activation applied while the chunk is hot.
    pub fn forward_into(
        &self,
        arch: pulp::Arch,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        activation: Activation,
    ) {
        debug_assert_eq!(x.len(), rows * self.inputs);
        debug_assert_eq!(y.len(), rows * self.outputs);
        let (k, n) = (self.inputs, self.outputs);
        let threads = rayon::current_num_threads().max(1);
        let block = arch.dispatch(BlockRows);
        if rows < ROW_SPLIT_MIN.max(threads * ROWS * 2) {
            let xt = regroup(x, rows, k, block);
            let blocks: Vec<Vec<f32>> = self
                .panels()
                .into_par_iter()
                .zip(self.bias.par_chunks_exact(PANEL))
                .map(|(panel, bias)| {
                    let mut out = vec![0f32; rows * PANEL];
                    arch.dispatch(PanelKernel {
                        xt: &xt,
                        block,
                        k,
                        panel,
                        bias,
                        out: &mut out,
                        stride: PANEL,
                    });
                    // While the block is hot, and on every thread.
                    if activation == Activation::GeluErf {
                        arch.dispatch(GeluErf(&mut out));
                    }
                    out
                })
                .collect();
            for (row, y_row) in y.chunks_exact_mut(n).enumerate() {
                for (y, block) in y_row.chunks_exact_mut(PANEL).zip(&blocks) {
                    y.copy_from_slice(&block[row * PANEL..][..PANEL]);
                }
            }
            return;
        }
        // Chunks of rows whose inputs fit in ~256 KiB, as many as a multiple
        // of the threads (so none waits on a last, lone chunk), each a
        // multiple of the kernel's row block.
        let most = (CHUNK_BYTES / (4 * k)).max(ROWS);
        let chunks = rows.div_ceil(most).next_multiple_of(threads);
        let chunk = rows.div_ceil(chunks).next_multiple_of(ROWS);
        let panels = self.panels();
        y.par_chunks_mut(chunk * n)
            .zip(x.par_chunks(chunk * k))
            .for_each(|(y, x)| {
                let xt = regroup(x, x.len() / k, k, block);
                for (p, (&panel, bias)) in
                    panels.iter().zip(self.bias.chunks_exact(PANEL)).enumerate()
                {
                    arch.dispatch(PanelKernel {
                        xt: &xt,
                        block,
                        k,
                        panel,
                        bias,
                        out: &mut y[p * PANEL..],
                        stride: n,
                    });
                }
                if activation == Activation::GeluErf {
                    arch.dispatch(GeluErf(y));
                }
            });
    }
}

/// Rows per kernel block for an instruction set: [`ROWS`] with AVX-512 and
/// AVX2; one for scalar code.
struct BlockRows;

impl pulp::WithSimd for BlockRows {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> usize {
        match core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>() {
            8 | 16 => ROWS,
            _ => 1,
        }
    }
}

/// `x` in blocks of `block` rows: one row per block is `x` as it is.
fn regroup(x: &[f32], rows: usize, k: usize, block: usize) -> Cow<'_, [f32]> {
    if block == 1 {
        Cow::Borrowed(&x[..rows * k])
    } else {
        Cow::Owned(pack_rows(x, rows, k))
    }
}

/// `x` (`rows × k`) regrouped for the kernel: blocks of [`ROWS`] rows (the
/// last may be shorter), each stored column by column (`[k, block rows]`),
/// so the kernel reads one contiguous group of row values per step.
fn pack_rows(x: &[f32], rows: usize, k: usize) -> Vec<f32> {
    let mut xt = Vec::with_capacity(rows * k);
    pack_rows_into(x, rows, k, k, &mut xt);
    xt
}

/// [`pack_rows`] of the first `k` columns of rows `stride` apart, appended
/// to `xt`.
pub(crate) fn pack_rows_into(x: &[f32], rows: usize, k: usize, stride: usize, xt: &mut Vec<f32>) {
    if rows == 0 || k == 0 {
        return;
    }
    let start = xt.len();
    xt.resize(start + rows * k, 0.0);
    for (r0, block) in (0..rows)
        .step_by(ROWS)
        .zip(xt[start..].chunks_mut(ROWS * k))
    {
        // Row by row: each source row is read in order, and a block is
        // small enough (6 rows) that its scattered writes stay in L1.
        let r = block.len() / k;
        for i in 0..r {
            let src = &x[(r0 + i) * stride..][..k];
            for (group, &v) in block.chunks_exact_mut(r).zip(src) {
                group[i] = v;
            }
        }
    }
}

/// Below this many rows the work is split by panel, not by rows.
const ROW_SPLIT_MIN: usize = 32;
/// Input bytes per chunk of rows when the work is split by rows.
const CHUNK_BYTES: usize = 256 * 1024;

/// What to apply to a layer's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `x · Φ(x)` with the exact (erf) normal CDF, as BERT's `gelu`.
    GeluErf,
}

/// `x ← x · ½(1 + erf(x / √2))` in place, vectorised.
struct GeluErf<'a>(&'a mut [f32]);

impl pulp::WithSimd for GeluErf<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let (head, tail) = S::as_mut_simd_f32s(self.0);
        let half = simd.splat_f32s(0.5);
        let one = simd.splat_f32s(1.0);
        let inv_sqrt2 = simd.splat_f32s(std::f32::consts::FRAC_1_SQRT_2);
        for x in head {
            let e = erf(simd, simd.mul_f32s(*x, inv_sqrt2));
            *x = simd.mul_f32s(simd.mul_f32s(half, *x), simd.add_f32s(one, e));
        }
        for x in tail {
            let e = erf(pulp::Scalar, *x * std::f32::consts::FRAC_1_SQRT_2);
            *x = 0.5 * *x * (1.0 + e);
        }
    }
}

/// erf for f32: the rational approximation Eigen uses
/// (`generic_fast_erf_float`), odd numerator of degree 13 over an even
/// denominator of degree 8, on x clamped to [-4, 4] (beyond which erf is ±1
/// in f32). Error within a few ulp; checked against Candle's `erf` in tests.
#[inline(always)]
fn erf<S: pulp::Simd>(simd: S, x: S::f32s) -> S::f32s {
    let x = simd.max_f32s(
        simd.min_f32s(x, simd.splat_f32s(4.0)),
        simd.splat_f32s(-4.0),
    );
    let x2 = simd.mul_f32s(x, x);
    let mut p = simd.splat_f32s(-2.726_142_3e-10);
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ] {
        p = simd.mul_add_e_f32s(x2, p, simd.splat_f32s(c));
    }
    let p = simd.mul_f32s(x, p);
    let mut q = simd.splat_f32s(-1.456_607_2e-5);
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = simd.mul_add_e_f32s(x2, q, simd.splat_f32s(c));
    }
    simd.div_f32s(p, q)
}

/// One panel: `out[r * stride..][..PANEL] = x[r, ..k] · panel[k, PANEL] +
/// bias` for each row `r`, `x` in blocks of `block` rows (see [`BlockRows`]
/// and [`pack_rows`]).
struct PanelKernel<'a> {
    xt: &'a [f32],
    block: usize,
    k: usize,
    panel: Panel<'a>,
    bias: &'a [f32],
    out: &'a mut [f32],
    stride: usize,
}

impl pulp::WithSimd for PanelKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let PanelKernel {
            xt,
            block: block_rows,
            k,
            panel,
            bias,
            out,
            stride,
        } = self;
        let lanes = core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>();
        for (b, block) in xt.chunks(block_rows * k).enumerate() {
            let r = block.len() / k;
            let out = &mut out[b * block_rows * stride..];
            match (lanes, r, panel) {
                (16, _, Panel::F32(_)) => strip_rows(simd, r, block, panel, bias, out, stride),
                (16, _, Panel::Bf16(panel)) => {
                    tile_rows_bf16::<S, 4, 2>(simd, r, block, panel, bias, out, stride)
                }
                // AVX2: the panel in strips of 16 columns.
                (8, _, _) => strip_rows(simd, r, block, panel, bias, out, stride),
                _ => {
                    // No SIMD worth the name (pulp's scalar fallback), or
                    // an AVX-512 run of a layout packed for AVX2.
                    let weight = |kk: usize, j: usize| match panel {
                        Panel::F32(p) => p[(j / STRIP) * k * STRIP + kk * STRIP + j % STRIP],
                        Panel::Bf16(p) => bf16_at(p, kk, j, k, false),
                        Panel::Bf16Strips(p) => bf16_at(p, kk, j, k, true),
                    };
                    for i in 0..r {
                        let out_row = &mut out[i * stride..][..PANEL];
                        for (j, (o, &b)) in out_row.iter_mut().zip(bias).enumerate() {
                            *o = b
                                + (0..k).fold(0f32, |s, kk| {
                                    block[kk * r + i].mul_add(weight(kk, j), s)
                                });
                        }
                    }
                }
            }
        }
    }
}

/// [`tile`] for `r` (1 to [`ROWS`]) rows.
#[inline(always)]
pub(crate) fn tile_rows<S: pulp::Simd, const V: usize>(
    simd: S,
    r: usize,
    xt: &[f32],
    panel: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    stride: usize,
) {
    match r {
        6 => tile::<S, 6, V>(simd, xt, panel, bias, out, stride),
        5 => tile::<S, 5, V>(simd, xt, panel, bias, out, stride),
        4 => tile::<S, 4, V>(simd, xt, panel, bias, out, stride),
        3 => tile::<S, 3, V>(simd, xt, panel, bias, out, stride),
        2 => tile::<S, 2, V>(simd, xt, panel, bias, out, stride),
        _ => tile::<S, 1, V>(simd, xt, panel, bias, out, stride),
    }
}

/// `out[r * stride..][..w] = xt · panel (+ bias)` for `R` rows and one panel
/// `w = V` registers wide, in `R × V` accumulator registers. `xt`: `[k, R]`
/// (see [`pack_rows`]); `panel`: `[k, w]`.
#[inline(always)]
fn tile<S: pulp::Simd, const R: usize, const V: usize>(
    simd: S,
    xt: &[f32],
    panel: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    stride: usize,
) {
    let (w, _) = S::as_simd_f32s(panel);
    let (w, _) = pulp::as_arrays::<V, _>(w);
    let (xs, _) = pulp::as_arrays::<R, _>(xt);
    let mut acc = [[simd.splat_f32s(0.0); V]; R];
    for (w, x) in w.iter().zip(xs) {
        for r in 0..R {
            let a = simd.splat_f32s(x[r]);
            for v in 0..V {
                acc[r][v] = simd.mul_add_e_f32s(a, w[v], acc[r][v]);
            }
        }
    }
    let width = V * core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>();
    for (r, acc) in acc.iter().enumerate() {
        let (o, _) = S::as_mut_simd_f32s(&mut out[r * stride..][..width]);
        match bias {
            Some(bias) => {
                let (b, _) = S::as_simd_f32s(bias);
                for ((o, &acc), &b) in o.iter_mut().zip(acc).zip(b) {
                    *o = simd.add_f32s(acc, b);
                }
            }
            None => o.copy_from_slice(acc),
        }
    }
}

/// [`strips`] for `r` (1 to [`ROWS`]) rows.
#[inline(always)]
fn strip_rows<S: pulp::Simd>(
    simd: S,
    r: usize,
    xt: &[f32],
    panel: Panel<'_>,
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    match r {
        6 => strips::<S, 6>(simd, xt, panel, bias, out, stride),
        5 => strips::<S, 5>(simd, xt, panel, bias, out, stride),
        4 => strips::<S, 4>(simd, xt, panel, bias, out, stride),
        3 => strips::<S, 3>(simd, xt, panel, bias, out, stride),
        2 => strips::<S, 2>(simd, xt, panel, bias, out, stride),
        _ => strips::<S, 1>(simd, xt, panel, bias, out, stride),
    }
}

/// One F32 panel (either instruction set) or a BF16 panel with AVX2, from
/// its strips of 16 columns. AVX-512: the four strips at once, 4 registers
/// per row, 24 accumulators for 6 rows. AVX2 (16 registers): one strip at a
/// time, 2 registers per row; with 6 rows that is 12 accumulators, 2 weight
/// registers and a broadcast, BLIS's 6 × 16 tile. (A whole panel row per
/// row would fit one row of accumulators, so every row would read the
/// panel again.)
#[inline(always)]
fn strips<S: pulp::Simd, const R: usize>(
    simd: S,
    xt: &[f32],
    panel: Panel<'_>,
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    let lanes = core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>();
    match (lanes, panel) {
        (16, Panel::F32(panel)) => {
            let (w, _) = S::as_simd_f32s(panel);
            let k = w.len() / 4;
            let (a, w) = w.split_at(k);
            let (b, w) = w.split_at(k);
            let (c, d) = w.split_at(k);
            let rows = a.iter().zip(b).zip(c).zip(d);
            let rows = rows.map(|(((&a, &b), &c), &d)| [a, b, c, d]);
            strip::<S, R, 4>(simd, xt, rows, bias, out, stride);
        }
        (8, Panel::F32(panel)) => {
            let (w, _) = S::as_simd_f32s(panel);
            let per_strip = w.len() / (PANEL / STRIP);
            for (s, w) in w.chunks_exact(per_strip).enumerate() {
                let rows = w.chunks_exact(2).map(|w| [w[0], w[1]]);
                let (out, bias) = (&mut out[s * STRIP..], &bias[s * STRIP..][..STRIP]);
                strip::<S, R, 2>(simd, xt, rows, bias, out, stride);
            }
        }
        (8, Panel::Bf16(panel)) => {
            // Word register `s` of a panel row holds columns 16s..16s + 8 in
            // its high halves and 16s + 8..16s + 16 in its low ones
            // (`bf16_slot`).
            let (w, _) = S::as_simd_u32s(panel);
            let high = simd.splat_u32s(0xFFFF_0000);
            let sixteen = simd.splat_u32s(16);
            for s in 0..PANEL / STRIP {
                let rows = w.chunks_exact(PANEL / 2 / 8).map(|w| {
                    [
                        simd.transmute_f32s_u32s(simd.and_u32s(w[s], high)),
                        simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(w[s], sixteen)),
                    ]
                });
                let (out, bias) = (&mut out[s * STRIP..], &bias[s * STRIP..][..STRIP]);
                strip::<S, R, 2>(simd, xt, rows, bias, out, stride);
            }
        }
        (8, Panel::Bf16Strips(panel)) => {
            // Strip `s` is `k` word registers in a row: columns
            // 16s..16s + 8 in their high halves, 16s + 8..16s + 16 in their
            // low ones.
            let (w, _) = S::as_simd_u32s(panel);
            let high = simd.splat_u32s(0xFFFF_0000);
            let sixteen = simd.splat_u32s(16);
            let per_strip = w.len() / (PANEL / STRIP);
            for (s, w) in w.chunks_exact(per_strip).enumerate() {
                let rows = w.iter().map(|&w| {
                    [
                        simd.transmute_f32s_u32s(simd.and_u32s(w, high)),
                        simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(w, sixteen)),
                    ]
                });
                let (out, bias) = (&mut out[s * STRIP..], &bias[s * STRIP..][..STRIP]);
                strip::<S, R, 2>(simd, xt, rows, bias, out, stride);
            }
        }
        _ => unreachable!("strips are for 8- and 16-lane registers"),
    }
}

/// `out[r * stride..][..V · lanes] = xt · weights + bias` for `R` rows,
/// `weights` giving `V` registers of one strip row per step of `k`.
#[inline(always)]
fn strip<S: pulp::Simd, const R: usize, const V: usize>(
    simd: S,
    xt: &[f32],
    weights: impl Iterator<Item = [S::f32s; V]>,
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    let (xs, _) = pulp::as_arrays::<R, _>(xt);
    let mut acc = [[simd.splat_f32s(0.0); V]; R];
    for (w, x) in weights.zip(xs) {
        for r in 0..R {
            let a = simd.splat_f32s(x[r]);
            for v in 0..V {
                acc[r][v] = simd.mul_add_e_f32s(a, w[v], acc[r][v]);
            }
        }
    }
    let (b, _) = S::as_simd_f32s(bias);
    for (r, acc) in acc.iter().enumerate() {
        let (o, _) = S::as_mut_simd_f32s(&mut out[r * stride..][..bias.len()]);
        for ((o, &acc), &b) in o.iter_mut().zip(acc).zip(b) {
            *o = simd.add_f32s(acc, b);
        }
    }
}

/// [`tile_bf16`] for `r` (1 to [`ROWS`]) rows.
#[inline(always)]
fn tile_rows_bf16<S: pulp::Simd, const V: usize, const W: usize>(
    simd: S,
    r: usize,
    xt: &[f32],
    panel: &[u32],
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    match r {
        6 => tile_bf16::<S, 6, V, W>(simd, xt, panel, bias, out, stride),
        5 => tile_bf16::<S, 5, V, W>(simd, xt, panel, bias, out, stride),
        4 => tile_bf16::<S, 4, V, W>(simd, xt, panel, bias, out, stride),
        3 => tile_bf16::<S, 3, V, W>(simd, xt, panel, bias, out, stride),
        2 => tile_bf16::<S, 2, V, W>(simd, xt, panel, bias, out, stride),
        _ => tile_bf16::<S, 1, V, W>(simd, xt, panel, bias, out, stride),
    }
}

/// [`tile`] for a BF16 panel (`[k, PANEL / 2]` words, see [`bf16_slot`])
/// `W` registers of words wide, widened to `V = 2W` registers of F32 per
/// step; the bias is always added. Register `2c` holds the high halves of
/// word register `c`, `2c + 1` its low halves; the columns are put back in
/// order on the way out.
#[inline(always)]
fn tile_bf16<S: pulp::Simd, const R: usize, const V: usize, const W: usize>(
    simd: S,
    xt: &[f32],
    panel: &[u32],
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    debug_assert_eq!(V, 2 * W);
    let (w, _) = S::as_simd_u32s(panel);
    let (w, _) = pulp::as_arrays::<W, _>(w);
    let (xs, _) = pulp::as_arrays::<R, _>(xt);
    let high = simd.splat_u32s(0xFFFF_0000);
    let sixteen = simd.splat_u32s(16);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; V]; R];
    for (w, x) in w.iter().zip(xs) {
        let mut widened = [zero; V];
        for c in 0..W {
            widened[2 * c] = simd.transmute_f32s_u32s(simd.and_u32s(w[c], high));
            widened[2 * c + 1] =
                simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(w[c], sixteen));
        }
        for r in 0..R {
            let a = simd.splat_f32s(x[r]);
            for v in 0..V {
                acc[r][v] = simd.mul_add_e_f32s(a, widened[v], acc[r][v]);
            }
        }
    }
    let lanes = core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>();
    let mut flat = [0f32; PANEL];
    for (r, acc) in acc.iter().enumerate() {
        let (f, _) = S::as_mut_simd_f32s(&mut flat);
        f[..V].copy_from_slice(acc);
        let out = &mut out[r * stride..][..PANEL];
        for (i, &value) in flat[..V * lanes].iter().enumerate() {
            let (register, lane) = (i / lanes, i % lanes);
            let j = bf16_column((register / 2) * lanes + lane, register % 2 == 0);
            out[j] = value + bias[j];
        }
    }
}

/// Every instruction set this machine can run: the best, AVX2 (when the
/// best is AVX-512), and scalar, so tests cover each code path.
#[cfg(test)]
pub(crate) fn test_arches() -> Vec<pulp::Arch> {
    let mut arches = vec![pulp::Arch::new()];
    #[cfg(target_arch = "x86_64")]
    if let Some(v3) = pulp::x86::V3::try_new() {
        arches.push(pulp::Arch::V3(v3));
    }
    arches.push(pulp::Arch::Scalar);
    arches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        weight: &[f32],
        bias: &[f32],
        x: &[f32],
        rows: usize,
        outputs: usize,
        inputs: usize,
    ) -> Vec<f32> {
        let mut y = vec![0f32; rows * outputs];
        for r in 0..rows {
            for j in 0..outputs {
                y[r * outputs + j] = bias[j]
                    + (0..inputs)
                        .map(|k| x[r * inputs + k] * weight[j * inputs + k])
                        .sum::<f32>();
            }
        }
        y
    }

    #[test]
    fn regrouped_rows_are_blocks_of_columns() {
        for (rows, k) in [(0, 4), (3, 0), (1, 1), (5, 3), (6, 7), (13, 9)] {
            let stride = k + 2;
            let x: Vec<f32> = (0..rows * stride).map(|v| v as f32).collect();
            // Appends after what is there.
            let mut got = vec![-1.0];
            pack_rows_into(&x, rows, k, stride, &mut got);
            let mut want = vec![-1.0];
            for r0 in (0..rows).step_by(ROWS) {
                let r = ROWS.min(rows - r0);
                for kk in 0..k {
                    want.extend((r0..r0 + r).map(|i| x[i * stride + kk]));
                }
            }
            assert_eq!(got, want, "{rows} rows of {k}");
        }
    }

    #[test]
    fn matches_the_naive_product_for_every_row_count_and_instruction_set() {
        let (outputs, inputs) = (192, 70);
        let weight: Vec<f32> = (0..outputs * inputs)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let bias: Vec<f32> = (0..outputs).map(|i| i as f32 / 100.0).collect();
        let layer = PackedLinear::new(&weight, bias.clone(), outputs, inputs).unwrap();
        for arch in test_arches() {
            for rows in [1, 3, 4, 5, 9, 17, 63, 64, 65, 130, 333] {
                let x: Vec<f32> = (0..rows * inputs)
                    .map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5)
                    .collect();
                let got = layer.forward(arch, &x, rows);
                let want = naive(&weight, &bias, &x, rows, outputs, inputs);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{arch:?} rows {rows}: {g} vs {w}"
                    );
                }
                let got = layer.forward_with(arch, &x, rows, Activation::GeluErf);
                let mut want = want;
                pulp::Arch::Scalar.dispatch(GeluErf(&mut want));
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{arch:?} rows {rows} with GELU: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_weights_give_the_product_of_the_rounded_weights() {
        for j in 0..PANEL {
            let (word, high) = bf16_slot(j);
            assert!(word < PANEL / 2);
            assert_eq!(bf16_column(word, high), j);
        }
        let (outputs, inputs) = (192, 70);
        let weight: Vec<f32> = (0..outputs * inputs)
            .map(|i| ((i * 7919) % 1000) as f32 / 537.0 - 0.93)
            .collect();
        let rounded: Vec<f32> = weight
            .iter()
            .map(|&w| half::bf16::from_f32(w).to_f32())
            .collect();
        assert!(rounded.iter().zip(&weight).any(|(r, w)| r != w));
        let bias: Vec<f32> = (0..outputs).map(|i| i as f32 / 100.0).collect();
        // Each layout (by row for AVX-512 and scalar code, by strip for
        // AVX2), run by every instruction set.
        for (layer, packed_for) in test_arches().into_iter().map(|pack| {
            let layer = PackedLinear::for_arch(
                &weight,
                bias.clone(),
                outputs,
                inputs,
                WeightFormat::Bf16,
                pack,
            )
            .unwrap();
            (layer, pack)
        }) {
            assert_eq!(
                matches!(layer.panels, Panels::Bf16Strips(_)),
                packed_for.dispatch(Lanes) == 8,
                "{packed_for:?}"
            );
            bf16_layer_matches(&layer, &rounded, &bias, outputs, inputs);
        }
    }

    fn bf16_layer_matches(
        layer: &PackedLinear,
        rounded: &[f32],
        bias: &[f32],
        outputs: usize,
        inputs: usize,
    ) {
        for arch in test_arches() {
            for rows in [1, 2, 5, 6, 7, 13, 64, 65, 130] {
                let x: Vec<f32> = (0..rows * inputs)
                    .map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5)
                    .collect();
                let got = layer.forward(arch, &x, rows);
                let want = naive(rounded, bias, &x, rows, outputs, inputs);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{arch:?} rows {rows}, output {i}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn gelu_matches_candles_exact_gelu() {
        let xs: Vec<f32> = (-20_000..=20_000)
            .map(|i| i as f32 / 2_000.0)
            .chain([f32::MAX, f32::MIN, 1e-30, -0.0])
            .collect();
        let want: Vec<f32> = candle_core::Tensor::new(xs.as_slice(), &candle_core::Device::Cpu)
            .and_then(|t| t.gelu_erf())
            .and_then(|t| t.to_vec1())
            .unwrap();
        for arch in test_arches() {
            let mut got = xs.clone();
            arch.dispatch(GeluErf(&mut got));
            for ((x, g), w) in xs.iter().zip(&got).zip(&want) {
                if x.abs() < 1e30 {
                    assert!(
                        (g - w).abs() <= 2e-6 * w.abs().max(1.0),
                        "{arch:?} gelu({x}) = {g}, want {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_shapes_it_cannot_pack() {
        assert!(PackedLinear::new(&[0.0; 100 * 3], vec![0.0; 100], 100, 3).is_none());
        assert!(PackedLinear::new(&[0.0; 64 * 3], vec![0.0; 63], 64, 3).is_none());
    }
}
