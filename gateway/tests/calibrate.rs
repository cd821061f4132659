//! `switchyard cache calibrate` with the real binary and the real embedding
//! model on the cache-eval development pairs: the default semantic-tier
//! setting must keep issue #4's accuracy target on them (≥ 60% of
//! same-answer pairs hit, ≤ 1% of different-answer pairs hit).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_default_setting_meets_the_accuracy_target_on_the_dev_pairs() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["cache", "calibrate", "--pairs"])
        .arg(root().join("gateway/tests/data/cache-eval/dev_pairs.tsv"))
        .arg("--model")
        .arg(root().join("models/all-MiniLM-L6-v2"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("default: "))
        .unwrap_or_else(|| panic!("no default line in:\n{stdout}"));
    let number = |key: &str| -> f64 {
        let rest = &line[line.find(key).unwrap() + key.len()..];
        rest.split([',', ')'])
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (hit, false_hit) = (number("hit rate "), number("false-hit rate "));
    assert!(hit >= 0.60, "hit rate {hit}: {line}");
    assert!(false_hit <= 0.01, "false-hit rate {false_hit}: {line}");
    // The plain-cosine rows are there for comparison, and they are worse.
    assert!(stdout.contains("| cosine ≥ 0.60, no verifier |"));
}

#[test]
fn bad_arguments_are_clear_errors() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = run(&["cache", "calibrate", "--pairs", "/nonexistent/pairs.tsv"]);
    assert!(missing.contains("/nonexistent/pairs.tsv"), "{missing}");
    let pairs = root().join("gateway/tests/data/cache-eval/dev_pairs.tsv");
    let target = run(&[
        "cache",
        "calibrate",
        "--pairs",
        pairs.to_str().unwrap(),
        "--target",
        "2",
    ]);
    assert!(target.contains("--target"), "{target}");
}
