//! `switchyard cache calibrate` with the real binary and the real embedding
//! model on the cache-eval development pairs: the default semantic-tier
//! setting must keep issue #4's accuracy target on them (≥ 60% of
//! same-answer pairs hit, ≤ 1% of different-answer pairs hit), and the
//! false-hit bound on the two second sets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The default setting's hit rate and false-hit rate on a pairs file.
fn default_rates(pairs: &str) -> (f64, f64, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["cache", "calibrate", "--pairs"])
        .arg(root().join("gateway/tests/data/cache-eval").join(pairs))
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
        .unwrap_or_else(|| panic!("no default line in:\n{stdout}"))
        .to_owned();
    let number = |key: &str| -> f64 {
        let rest = &line[line.find(key).unwrap() + key.len()..];
        rest.split([',', ')'])
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (
        number("hit rate "),
        number("false-hit rate "),
        stdout.into_owned(),
    )
}

#[test]
fn the_default_setting_meets_the_accuracy_target_on_the_dev_pairs() {
    let (hit, false_hit, stdout) = default_rates("dev_pairs.tsv");
    assert!(hit >= 0.60, "hit rate {hit}:\n{stdout}");
    assert!(false_hit <= 0.01, "false-hit rate {false_hit}:\n{stdout}");
    // The plain-cosine rows are there for comparison, and they are worse.
    assert!(stdout.contains("| cosine ≥ 0.60, no verifier |"));
}

/// The second sets were written apart from the dev pairs and the
/// verifier (`gateway/tests/data/cache-eval/README.md`). The false-hit
/// bound holds on them; their hit rates are recorded in `docs/cache.md`
/// (B's, C's, D's, F's, H's, I's and L's are below 60%; J's backstories
/// are kept by design when they name a number or a name), and kept from
/// falling back here.
#[test]
fn the_default_setting_keeps_false_hits_under_one_percent_on_the_second_sets() {
    for (pairs, floor) in [
        ("second_pairs_a.tsv", 0.65),
        ("second_pairs_b.tsv", 0.55),
        ("second_pairs_c.tsv", 0.50),
        ("second_pairs_d.tsv", 0.50),
        ("second_pairs_e.tsv", 0.60),
        ("second_pairs_f.tsv", 0.50),
        ("second_pairs_g.tsv", 0.50),
        ("second_pairs_h.tsv", 0.50),
        ("second_pairs_i.tsv", 0.50),
        ("backstory_pairs_j.tsv", 0.20),
        ("second_pairs_k.tsv", 0.55),
        ("second_pairs_l.tsv", 0.50),
    ] {
        let (hit, false_hit, stdout) = default_rates(pairs);
        assert!(
            false_hit <= 0.01,
            "{pairs}: false-hit rate {false_hit}:\n{stdout}"
        );
        assert!(hit >= floor, "{pairs}: hit rate {hit}:\n{stdout}");
    }
}

/// One word swapped for two, sharing a single word ("cancel my
/// subscription" against "cancel my gym membership"): the verifier of
/// 2901fde served 6 of these 30 as hits (`docs/cache.md`, "Substitution").
#[test]
fn the_default_setting_serves_no_swapped_thing() {
    let (_, false_hit, stdout) = default_rates("thing_swaps.tsv");
    assert_eq!(false_hit, 0.0, "{stdout}");
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
