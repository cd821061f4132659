//! A linear layer for few rows on the CPU: the weights packed once, at load,
//! into panels of 64 output columns, multiplied by a register-blocked kernel
//! through [`pulp`], which picks AVX-512, AVX2 or scalar code at run time.
//!
//! Why: Candle multiplies with the `gemm` crate, which packs the weight on
//! every call; for the handful of rows of a single short text that packing
//! and its small-matrix path cost 3× what this kernel needs (measured by
//! `benches/src/bin/matmul_shapes.rs`, results in `docs/embeddings.md`).
//! From about a hundred rows up, `gemm` is faster, and Candle keeps those.

use rayon::prelude::*;

/// Output columns per panel: 4 AVX-512 or 8 AVX2 registers per row.
pub const PANEL: usize = 64;
/// Rows of the input handled together.
const ROWS: usize = 4;
/// Vector registers per row of accumulators: a panel row is 4 AVX-512 or 8
/// AVX2 registers, so `ROWS × 8` accumulators at most.
const MAX_REGISTERS: usize = 8;

/// `y = x · Wᵀ + b` for a PyTorch-layout weight `W: [out, in]`.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    inputs: usize,
    outputs: usize,
    /// `outputs / PANEL` panels, each `[inputs, PANEL]`, row-major.
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedLinear {
    /// Packs `weight` (`[outputs, inputs]`, row-major). `None` when `outputs`
    /// is not a multiple of [`PANEL`] or the sizes do not agree.
    pub fn new(weight: &[f32], bias: Vec<f32>, outputs: usize, inputs: usize) -> Option<Self> {
        if outputs == 0
            || !outputs.is_multiple_of(PANEL)
            || weight.len() != outputs * inputs
            || bias.len() != outputs
        {
            return None;
        }
        let mut panels = vec![0f32; outputs * inputs];
        for (j, row) in weight.chunks_exact(inputs).enumerate() {
            let panel = &mut panels[(j / PANEL) * inputs * PANEL..][..inputs * PANEL];
            for (k, &w) in row.iter().enumerate() {
                panel[k * PANEL + j % PANEL] = w;
            }
        }
        Some(Self {
            inputs,
            outputs,
            panels,
            bias,
        })
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
        debug_assert_eq!(x.len(), rows * self.inputs);
        let k = self.inputs;
        let blocks: Vec<Vec<f32>> = self
            .panels
            .par_chunks_exact(k * PANEL)
            .map(|panel| {
                let mut out = vec![0f32; rows * PANEL];
                arch.dispatch(PanelKernel {
                    x,
                    rows,
                    k,
                    panel,
                    out: &mut out,
                });
                out
            })
            .collect();
        let mut y = vec![0f32; rows * self.outputs];
        for (row, y_row) in y.chunks_exact_mut(self.outputs).enumerate() {
            for (p, block) in blocks.iter().enumerate() {
                let cols = p * PANEL..(p + 1) * PANEL;
                for ((y, &v), &b) in y_row[cols.clone()]
                    .iter_mut()
                    .zip(&block[row * PANEL..][..PANEL])
                    .zip(&self.bias[cols])
                {
                    *y = v + b;
                }
            }
        }
        if activation == Activation::GeluErf {
            gelu_erf_in_place(arch, &mut y);
        }
        y
    }
}

/// What to apply to a layer's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `x · Φ(x)` with the exact (erf) normal CDF, as BERT's `gelu`.
    GeluErf,
}

/// `x ← x · ½(1 + erf(x / √2))`, vectorised and on all cores.
pub fn gelu_erf_in_place(arch: pulp::Arch, xs: &mut [f32]) {
    xs.par_chunks_mut(16 * 1024)
        .for_each(|chunk| arch.dispatch(GeluErf(chunk)));
}

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

/// One panel: `out[rows, PANEL] = x[rows, k] · panel[k, PANEL]`.
struct PanelKernel<'a> {
    x: &'a [f32],
    rows: usize,
    k: usize,
    panel: &'a [f32],
    out: &'a mut [f32],
}

impl pulp::WithSimd for PanelKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let PanelKernel {
            x,
            rows,
            k,
            panel,
            out,
        } = self;
        let lanes = core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>();
        if lanes * MAX_REGISTERS < PANEL {
            // No SIMD worth the name (pulp's scalar fallback): plain loops.
            for (r, out_row) in out.chunks_exact_mut(PANEL).enumerate().take(rows) {
                for (j, o) in out_row.iter_mut().enumerate() {
                    *o = (0..k).fold(0f32, |s, kk| {
                        x[r * k + kk].mul_add(panel[kk * PANEL + j], s)
                    });
                }
            }
            return;
        }
        let zero = simd.splat_f32s(0.0);
        let mut r0 = 0;
        while r0 < rows {
            let n = ROWS.min(rows - r0);
            let mut acc = [[zero; MAX_REGISTERS]; ROWS];
            for kk in 0..k {
                let (w, _) = S::as_simd_f32s(&panel[kk * PANEL..(kk + 1) * PANEL]);
                for (r, acc) in acc.iter_mut().enumerate().take(n) {
                    let a = simd.splat_f32s(x[(r0 + r) * k + kk]);
                    for (acc, &w) in acc.iter_mut().zip(w) {
                        *acc = simd.mul_add_e_f32s(a, w, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(n) {
                let (o, _) = S::as_mut_simd_f32s(&mut out[(r0 + r) * PANEL..(r0 + r + 1) * PANEL]);
                for (o, &acc) in o.iter_mut().zip(acc) {
                    *o = acc;
                }
            }
            r0 += ROWS;
        }
    }
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
    fn matches_the_naive_product_for_every_row_count_and_instruction_set() {
        let (outputs, inputs) = (192, 70);
        let weight: Vec<f32> = (0..outputs * inputs)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let bias: Vec<f32> = (0..outputs).map(|i| i as f32 / 100.0).collect();
        let layer = PackedLinear::new(&weight, bias.clone(), outputs, inputs).unwrap();
        for arch in [pulp::Arch::new(), pulp::Arch::Scalar] {
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
        for arch in [pulp::Arch::new(), pulp::Arch::Scalar] {
            let mut got = xs.clone();
            gelu_erf_in_place(arch, &mut got);
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
