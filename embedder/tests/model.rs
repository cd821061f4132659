//! The real all-MiniLM-L6-v2 on Candle: shape, normalisation, batching,
//! truncation, and agreement with sentence-transformers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use switchyard_embedder::{CandleEmbedder, DeviceSpec, Embedder, ModelDir, Pooling, Precision};

fn model_path() -> PathBuf {
    std::env::var_os("SWITCHYARD_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2")
        })
}

/// Where the model runs: `SWITCHYARD_TEST_DEVICE` (`cpu` by default, or
/// `cuda:N` in a build with the `cuda` feature) and
/// `SWITCHYARD_TEST_PRECISION` (`f32` by default; `f16`, `bf16` on GPUs).
fn device() -> (DeviceSpec, Precision) {
    let device = std::env::var("SWITCHYARD_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let precision = std::env::var("SWITCHYARD_TEST_PRECISION").unwrap_or_else(|_| "f32".into());
    (device.parse().unwrap(), precision.parse().unwrap())
}

/// One loaded model shared by the tests of this binary.
fn model() -> Arc<CandleEmbedder> {
    static MODEL: OnceLock<Arc<CandleEmbedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = ModelDir::open(model_path()).unwrap_or_else(|e| {
                panic!("{e}: run models/fetch.sh first (it fetches and verifies the model)")
            });
            let (device, precision) = device();
            Arc::new(CandleEmbedder::load(&dir, device, precision).unwrap())
        })
        .clone()
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn embed(texts: &[&str]) -> Vec<Vec<f32>> {
    let texts: Vec<String> = texts.iter().map(|s| (*s).to_owned()).collect();
    model().embed(&texts).unwrap().vectors
}

#[test]
fn model_folder_settings_come_from_its_files() {
    let dir = ModelDir::open(model_path()).unwrap();
    assert_eq!(dir.pooling, Pooling::Mean);
    assert!(dir.normalize);
    assert_eq!(dir.max_tokens, 256);
}

#[test]
fn vectors_are_unit_length_and_deterministic() {
    let m = model();
    assert_eq!(m.dimension(), 384);
    let a = embed(&["The cat sat on the mat."]);
    let b = embed(&["The cat sat on the mat."]);
    assert_eq!(a, b);
    let norm: f32 = a[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
}

#[test]
fn padding_in_a_batch_does_not_change_a_vector() {
    let alone = embed(&["short"]);
    let batched = embed(&[
        "short",
        "a much longer sentence that forces padding of the short one in the batch",
    ]);
    assert!(
        cos(&alone[0], &batched[0]) > 0.99999,
        "{}",
        cos(&alone[0], &batched[0])
    );
}

#[test]
fn meaning_is_captured() {
    let v = embed(&[
        "How do I reset my password?",
        "I forgot my password, how can I change it?",
        "The weather in Paris is sunny.",
    ]);
    assert!(cos(&v[0], &v[1]) > cos(&v[0], &v[2]) + 0.3);
}

#[test]
fn long_texts_are_truncated_to_max_tokens() {
    let long = "word ".repeat(1_000);
    let out = model().embed(&[long.clone(), "two words".into()]).unwrap();
    assert_eq!(
        out.token_counts,
        vec![254, 2],
        "256 minus [CLS] and [SEP]; then the real count"
    );
    // Anything past the limit is ignored.
    let longer = format!("{long} completely different ending about submarines");
    let out2 = model().embed(&[longer]).unwrap();
    assert!(cos(&out.vectors[0], &out2.vectors[0]) > 0.99999);
}

#[test]
fn empty_and_whitespace_texts_embed_without_error() {
    let out = model().embed(&["".into(), "   ".into()]).unwrap();
    assert_eq!(out.vectors.len(), 2);
    assert_eq!(out.token_counts, vec![0, 0]);
}

/// The reference fixture's texts and the vectors under `key`.
fn fixture(key: &str) -> (Vec<String>, Vec<Vec<f32>>) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/all-MiniLM-L6-v2.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let texts: Vec<String> = fixture["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let vectors: Vec<Vec<f32>> = fixture[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    assert_eq!(texts.len(), vectors.len());
    (texts, vectors)
}

/// The lowest cosine between `ours` and `reference`, and its text.
fn worst_cosine(texts: &[String], ours: &[Vec<f32>], reference: &[Vec<f32>]) -> (f32, String) {
    let mut worst = (1.0f32, String::new());
    for ((text, a), b) in texts.iter().zip(ours).zip(reference) {
        let c = cos(a, b);
        if c < worst.0 {
            worst = (c, text.chars().take(40).collect());
        }
    }
    worst
}

#[test]
fn matches_sentence_transformers_on_every_reference_text() {
    let (texts, reference) = fixture("vectors");
    assert!(texts.len() >= 50);
    let ours = model().embed(&texts).unwrap().vectors;
    let worst = worst_cosine(&texts, &ours, &reference);
    eprintln!("{:?}: lowest cosine {} ({:?})", device(), worst.0, worst.1);
    assert!(
        worst.0 >= 0.999,
        "lowest cosine {} for {:?}",
        worst.0,
        worst.1
    );
}

/// BF16 weights on the CPU (F32 arithmetic) still agree with
/// sentence-transformers' F32 run, whatever `SWITCHYARD_TEST_PRECISION` says.
#[test]
fn bf16_weights_on_the_cpu_match_sentence_transformers() {
    let dir = ModelDir::open(model_path()).unwrap();
    let bf16 = CandleEmbedder::load(&dir, DeviceSpec::Cpu, Precision::Bf16).unwrap();
    let f32 = CandleEmbedder::load(&dir, DeviceSpec::Cpu, Precision::F32).unwrap();
    let (texts, reference) = fixture("vectors");
    let ours = bf16.embed(&texts).unwrap().vectors;
    let worst = worst_cosine(&texts, &ours, &reference);
    eprintln!("cpu bf16: lowest cosine {} ({:?})", worst.0, worst.1);
    assert!(
        worst.0 >= 0.999,
        "lowest cosine {} for {:?}",
        worst.0,
        worst.1
    );
    // It is a different encoder, not the F32 one under another name.
    let exact = f32.embed(&texts[..1]).unwrap().vectors;
    assert!(cos(&exact[0], &ours[0]) < 0.999_999_9);
    assert!(
        CandleEmbedder::load(&dir, DeviceSpec::Cpu, Precision::F16)
            .unwrap_err()
            .to_string()
            .contains("F16 is for GPUs")
    );
}

/// bge-small pools the `[CLS]` token where all-MiniLM-L6-v2 averages: a
/// copy of the model folder that says `pooling_mode_cls_token` must match
/// sentence-transformers run with CLS pooling on the same weights.
#[cfg(unix)]
#[test]
fn cls_pooling_from_the_folder_matches_sentence_transformers() {
    let source = model_path();
    let dir = std::env::temp_dir().join(format!("switchyard-cls-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for name in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
    ] {
        let _ = std::fs::remove_file(dir.join(name));
        std::os::unix::fs::symlink(source.join(name).canonicalize().unwrap(), dir.join(name))
            .unwrap();
    }
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true,
            "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    let (device, precision) = device();
    let loaded = ModelDir::open(&dir).and_then(|opened| {
        assert_eq!(opened.pooling, Pooling::Cls);
        CandleEmbedder::load(&opened, device, precision)
    });
    let _ = std::fs::remove_dir_all(&dir);
    let cls_model = loaded.unwrap();
    let (texts, reference) = fixture("cls_vectors");
    let ours = cls_model.embed(&texts).unwrap().vectors;
    let worst = worst_cosine(&texts, &ours, &reference);
    assert!(
        worst.0 >= 0.999,
        "CLS pooling: lowest cosine {} for {:?}",
        worst.0,
        worst.1
    );
    // And it is not the mean-pooled vector under another name.
    let mean = model().embed(&texts[..1]).unwrap().vectors;
    assert!(cos(&mean[0], &ours[0]) < 0.99);
}

#[test]
fn token_ids_embed_like_their_text_and_bad_ids_are_refused() {
    let m = model();
    let text = "token ids are the model's own".to_owned();
    let seq = m.tokenize(std::slice::from_ref(&text)).unwrap().remove(0);
    let inner = seq[1..seq.len() - 1].to_vec(); // without [CLS]/[SEP]
    let via_ids = m.embed_ids(&[m.wrap_ids(&inner).unwrap()]).unwrap();
    let via_text = m.embed(&[text]).unwrap();
    assert!(cos(&via_ids.vectors[0], &via_text.vectors[0]) > 0.99999);
    assert_eq!(via_ids.token_counts, via_text.token_counts);
    let err = m.wrap_ids(&[5, 10_000_000]).unwrap_err().to_string();
    assert!(
        err.contains("10000000") && err.contains("position 1"),
        "{err}"
    );
}
