//! The matrix products of one all-MiniLM-L6-v2 forward pass (6 layers of
//! 384→384 ×4, 384→1536, 1536→384) at a given number of tokens, three ways:
//!
//! - `candle-linear`: Candle's product against the weight as stored,
//!   transposed, which is what `candle_nn::Linear` does;
//! - `candle-contig`: Candle's product against a contiguous `[in, out]` copy;
//! - `packed`: Switchyard's [`PackedLinear`] (weights packed once into
//!   64-column panels, a register-blocked kernel through `pulp`, AVX-512 where
//!   the CPU has it), which the embedder uses for small batches;
//! - `bf16 rows` / `bf16 own`: the same with BF16 weights, in the row layout
//!   (AVX-512's) and in the layout packed for this CPU (by strip on AVX2;
//!   the same as rows on AVX-512);
//! - `numpy` (with `--python`): NumPy's BLAS (OpenBLAS in the PyPI wheels).
//!
//! ```text
//! cargo build --release -p switchyard-benches --bin matmul_shapes
//! target/release/matmul_shapes --python .venv-ref/bin/python
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its report")]

use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::Parser;
use switchyard_embedder::{PackedLinear, WeightFormat};

#[derive(Debug, Parser)]
struct Args {
    /// Token counts (rows) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,9,16,32,49,128,1568")]
    tokens: Vec<usize>,
    /// Python with NumPy, for the BLAS column; omitted: not measured (said so).
    #[arg(long)]
    python: Option<String>,
}

/// (in, out) of the linear layers of one BERT layer; the model has 6.
const SHAPES: [(usize, usize); 6] = [
    (384, 384),
    (384, 384),
    (384, 384),
    (384, 384),
    (384, 1536),
    (1536, 384),
];
const LAYERS: usize = 6;

fn flops(m: usize) -> f64 {
    2.0 * m as f64 * SHAPES.iter().map(|&(k, n)| (k * n) as f64).sum::<f64>() * LAYERS as f64
}

/// Milliseconds per call of `f`, the median of 7 timings after warm-up.
fn time_ms(mut f: impl FnMut() -> anyhow::Result<()>, budget_ms: f64) -> anyhow::Result<f64> {
    let start = Instant::now();
    f()?;
    let once = start.elapsed().as_secs_f64() * 1e3;
    let reps = ((budget_ms / 7.0 / once.max(1e-3)) as usize).clamp(1, 200);
    let mut samples = Vec::with_capacity(7);
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        samples.push(t.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[3])
}

fn numpy_ms(python: &str, m: usize) -> anyhow::Result<f64> {
    let script = format!(
        "import numpy as np, time\n\
         S={SHAPES:?}*{LAYERS}\n\
         W=[np.random.rand(k,n).astype(np.float32) for k,n in S]\n\
         X={{k:np.random.rand({m},k).astype(np.float32) for k in (384,1536)}}\n\
         f=lambda: [X[w.shape[0]]@w for w in W]\n\
         f(); t=[]\n\
         for _ in range(7):\n t0=time.perf_counter(); [f() for _ in range(5)]; t.append((time.perf_counter()-t0)/5)\n\
         print(sorted(t)[3]*1e3)\n"
    );
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .output()
        .context("running python")?;
    anyhow::ensure!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dev = Device::Cpu;
    let arch = pulp::Arch::new();
    // (inputs, outputs, weight as PyTorch stores it: [outputs, inputs]).
    let weights: Vec<(usize, usize, Vec<f32>)> = (0..LAYERS)
        .flat_map(|_| {
            SHAPES.iter().map(|&(k, n)| {
                let w = (0..k * n)
                    .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                    .collect();
                (k, n, w)
            })
        })
        .collect();
    let stored: Vec<Tensor> = weights
        .iter()
        .map(|(k, n, w)| Tensor::from_slice(w, (*n, *k), &dev))
        .collect::<candle_core::Result<_>>()?;
    let contig: Vec<Tensor> = stored
        .iter()
        .map(|w| w.t()?.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let packed: Vec<PackedLinear> = weights
        .iter()
        .map(|(k, n, w)| PackedLinear::new(w, vec![0.0; *n], *n, *k).context("packing"))
        .collect::<anyhow::Result<_>>()?;
    let bf16 = |layout: pulp::Arch| -> anyhow::Result<Vec<PackedLinear>> {
        weights
            .iter()
            .map(|(k, n, w)| {
                PackedLinear::for_arch(w, vec![0.0; *n], *n, *k, WeightFormat::Bf16, layout)
                    .context("packing")
            })
            .collect()
    };
    // Scalar code packs by row, as AVX-512 does.
    let bf16_rows = bf16(pulp::Arch::Scalar)?;
    let bf16_own = bf16(arch)?;
    if args.python.is_none() {
        println!("numpy column: not measured (no --python given)");
    }
    println!(
        "| tokens | candle-linear ms | candle-contig ms | packed ms | bf16 rows ms | bf16 own ms | numpy ms | packed GFLOP/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &m in &args.tokens {
        let x: Vec<f32> = (0..m * 1536)
            .map(|i| ((i * 31) % 97) as f32 / 97.0)
            .collect();
        let xs = [
            Tensor::from_slice(&x[..m * 384], (m, 384), &dev)?,
            Tensor::from_slice(&x, (m, 1536), &dev)?,
        ];
        let pick = |k: usize| if k == 384 { &xs[0] } else { &xs[1] };
        let budget = 1500.0;
        let linear = time_ms(
            || {
                for w in &stored {
                    pick(w.dim(1)?).matmul(&w.t()?)?;
                }
                Ok(())
            },
            budget,
        )?;
        let contiguous = time_ms(
            || {
                for w in &contig {
                    pick(w.dim(0)?).matmul(w)?;
                }
                Ok(())
            },
            budget,
        )?;
        // Check the packed kernel against Candle before timing it.
        let got = packed[4].forward(arch, &x[..m * 384], m);
        let want: Vec<f32> = xs[0].matmul(&contig[4])?.flatten_all()?.to_vec1()?;
        let worst = want
            .iter()
            .zip(&got)
            .map(|(w, g)| (w - g).abs() / w.abs().max(1.0))
            .fold(0f32, f32::max);
        anyhow::ensure!(worst < 1e-4, "packed kernel disagrees with Candle: {worst}");
        let pk = time_ms(
            || {
                for p in &packed {
                    p.forward(arch, &x[..m * p.inputs()], m);
                }
                Ok(())
            },
            budget,
        )?;
        let all = |layers: &[PackedLinear]| {
            time_ms(
                || {
                    for p in layers {
                        p.forward(arch, &x[..m * p.inputs()], m);
                    }
                    Ok(())
                },
                budget,
            )
        };
        let (rows, own) = (all(&bf16_rows)?, all(&bf16_own)?);
        let np = match &args.python {
            Some(py) => format!("{:.2}", numpy_ms(py, m)?),
            None => "–".into(),
        };
        println!(
            "| {m} | {linear:.2} | {contiguous:.2} | {pk:.2} | {rows:.2} | {own:.2} | {np} | {:.0} |",
            flops(m) / pk / 1e6
        );
    }
    Ok(())
}
