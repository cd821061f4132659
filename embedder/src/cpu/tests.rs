use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;

use super::*;
use crate::bert::Bert;

/// A small random BERT: 2 layers, hidden 128, 4 heads, intermediate 256.
fn config(hidden_act: &str, hidden: usize) -> Config {
    config_with_heads(hidden_act, hidden, 4)
}

fn config_with_heads(hidden_act: &str, hidden: usize, heads: usize) -> Config {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 50,
        "hidden_size": hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "intermediate_size": 256,
        "hidden_act": hidden_act,
        "max_position_embeddings": 80,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "pad_token_id": 0,
    }))
    .unwrap()
}

fn weights(c: &Config, prefix: &str) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut t = HashMap::new();
    let mut add = |name: String, shape: &[usize], mean: f32| {
        let v = Tensor::randn(mean, 0.2, shape, &dev).unwrap();
        t.insert(format!("{prefix}{name}"), v);
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        &[c.vocab_size, h],
        0.0,
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        &[c.max_position_embeddings, h],
        0.0,
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        &[c.type_vocab_size, h],
        0.0,
    );
    add("embeddings.LayerNorm.weight".into(), &[h], 1.0);
    add("embeddings.LayerNorm.bias".into(), &[h], 0.0);
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}.");
        for (name, outputs, inputs) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            add(format!("{p}{name}.weight"), &[outputs, inputs], 0.0);
            add(format!("{p}{name}.bias"), &[outputs], 0.0);
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{p}{name}.weight"), &[h], 1.0);
            add(format!("{p}{name}.bias"), &[h], 0.0);
        }
    }
    t
}

/// Candle's BERT on a padded batch, the padding rows dropped.
fn candle_hidden(tensors: &HashMap<String, Tensor>, c: &Config, seqs: &[Vec<u32>]) -> Vec<f32> {
    let dev = Device::Cpu;
    let model = Bert::load(
        VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev),
        c,
    )
    .unwrap();
    let cols = seqs.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for s in seqs {
        ids.extend(
            s.iter()
                .copied()
                .chain(std::iter::repeat_n(0, cols - s.len())),
        );
        mask.extend((0..cols).map(|j| u32::from(j < s.len())));
    }
    let ids = Tensor::from_vec(ids, (seqs.len(), cols), &dev).unwrap();
    let mask = Tensor::from_vec(mask, (seqs.len(), cols), &dev).unwrap();
    let hidden = model
        .forward(&ids, &ids.zeros_like().unwrap(), &mask)
        .unwrap();
    let mut out = Vec::new();
    for (b, s) in seqs.iter().enumerate() {
        let rows: Vec<Vec<f32>> = hidden.i((b, ..s.len())).unwrap().to_vec2().unwrap();
        out.extend(rows.into_iter().flatten());
    }
    out
}

/// Lengths around the SIMD widths and the key panels, one text, and enough
/// rows to take the packed layer's split-by-rows path.
fn ragged_batch() -> Vec<Vec<u32>> {
    [1usize, 2, 7, 16, 17, 33, 40, 5, 64, 65, 80, 12]
        .iter()
        .enumerate()
        .map(|(k, &n)| (0..n).map(|j| ((j * 7 + k * 3) % 50) as u32).collect())
        .collect()
}

/// `model` against Candle's BERT on one text, a 16-token text and the whole
/// ragged batch, with every instruction set this machine runs.
fn assert_matches_candle(
    model: &mut CpuBert,
    tensors: &HashMap<String, Tensor>,
    c: &Config,
    what: &str,
) {
    let seqs = ragged_batch();
    for (arch, batch) in crate::packed::test_arches()
        .into_iter()
        .flat_map(|arch| [(arch, &seqs[..1]), (arch, &seqs[3..4]), (arch, &seqs[..])])
    {
        model.arch = arch;
        let got = model.forward(batch).unwrap();
        let want = candle_hidden(tensors, c, batch);
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4,
            "{arch:?}, {what}, {} texts: {worst}",
            batch.len()
        );
    }
}

#[test]
fn matches_candles_bert_on_a_ragged_batch() {
    for prefix in ["", "bert."] {
        let c = config("gelu", 128);
        let tensors = weights(&c, prefix);
        let mut model = CpuBert::load(&tensors, &c, WeightFormat::F32)
            .unwrap()
            .expect("this config is packable");
        assert_matches_candle(&mut model, &tensors, &c, &format!("prefix {prefix:?}"));
    }
}

/// Heads of 64, 16 and 8 columns: the tiled attention's widths on AVX-512
/// and AVX2, and a width only the row-by-row attention takes.
#[test]
fn matches_candles_bert_for_every_head_width() {
    for heads in [2, 8, 16] {
        let c = config_with_heads("gelu", 128, heads);
        let tensors = weights(&c, "");
        let mut model = CpuBert::load(&tensors, &c, WeightFormat::F32)
            .unwrap()
            .expect("this config is packable");
        assert_matches_candle(&mut model, &tensors, &c, &format!("{heads} heads"));
    }
}

#[test]
fn bf16_weights_stay_close_to_candles_f32_bert() {
    let c = config("gelu", 128);
    let tensors = weights(&c, "");
    let mut model = CpuBert::load(&tensors, &c, WeightFormat::Bf16)
        .unwrap()
        .expect("this config is packable");
    let seqs: Vec<Vec<u32>> = [3usize, 17, 40, 64]
        .iter()
        .enumerate()
        .map(|(k, &n)| (0..n).map(|j| ((j * 5 + k) % 50) as u32).collect())
        .collect();
    let want = candle_hidden(&tensors, &c, &seqs);
    for arch in crate::packed::test_arches() {
        model.arch = arch;
        let got = model.forward(&seqs).unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        // Rounded weights: not F32's answer, but close to it.
        assert!(worst > 1e-5, "{arch:?}: were the weights rounded? {worst}");
        for (token, (g, w)) in got.chunks(128).zip(want.chunks(128)).enumerate() {
            let dot: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
            let cosine = dot / (norm(g) * norm(w));
            assert!(cosine > 0.999, "{arch:?}, token {token}: cosine {cosine}");
        }
    }
}

#[test]
fn declines_what_it_cannot_run() {
    let c = config("relu", 128);
    assert!(
        CpuBert::load(&weights(&c, ""), &c, WeightFormat::F32)
            .unwrap()
            .is_none()
    );
    // 96 output columns do not fill whole 64-column panels.
    let c = config("gelu", 96);
    assert!(
        CpuBert::load(&weights(&c, ""), &c, WeightFormat::F32)
            .unwrap()
            .is_none()
    );
}

#[test]
fn refuses_bad_sequences_without_panicking() {
    let c = config("gelu", 128);
    let model = CpuBert::load(&weights(&c, ""), &c, WeightFormat::F32)
        .unwrap()
        .unwrap();
    for bad in [vec![], vec![50], vec![u32::MAX], vec![1; 81]] {
        assert!(
            matches!(
                model.forward(&[vec![1, 2], bad.clone()]),
                Err(EmbedError::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn missing_or_misshapen_weights_are_model_errors() {
    let c = config("gelu", 128);
    let mut tensors = weights(&c, "");
    tensors.remove("encoder.layer.1.output.LayerNorm.bias");
    assert!(matches!(
        CpuBert::load(&tensors, &c, WeightFormat::F32),
        Err(EmbedError::Model(_))
    ));
    let mut tensors = weights(&c, "");
    tensors.insert(
        "embeddings.LayerNorm.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(matches!(
        CpuBert::load(&tensors, &c, WeightFormat::F32),
        Err(EmbedError::Model(_))
    ));
}

#[test]
fn exp_matches_the_standard_library() {
    let xs: Vec<f32> = (-80_000..=80_000).map(|i| i as f32 / 1_000.0).collect();
    struct Exp<'a>(&'a mut [f32]);
    impl pulp::WithSimd for Exp<'_> {
        type Output = ();
        fn with_simd<S: pulp::Simd>(self, simd: S) {
            let (head, tail) = S::as_mut_simd_f32s(self.0);
            for x in head {
                *x = exp(simd, *x);
            }
            for x in tail {
                *x = exp(pulp::Scalar, *x);
            }
        }
    }
    for arch in crate::packed::test_arches() {
        let mut got = xs.clone();
        arch.dispatch(Exp(&mut got));
        for (x, g) in xs.iter().zip(&got) {
            let want = x.exp();
            assert!(
                (g - want).abs() <= 3e-7 * want,
                "{arch:?}: exp({x}) = {g}, want {want}"
            );
        }
    }
}
