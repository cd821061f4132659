use super::*;

const HEADER: &str = "id\tcategory\tlabel\tprompt_a\tprompt_b\n";

fn pairs() -> Vec<Pair> {
    parse_pairs(&format!(
        "{HEADER}\
         p1\treword\t1\tHow do I sort a list?\tWhat's the way to sort a list?\n\
         p2\tnumber\t0\tConvert 5 kg to pounds\tConvert 8 kg to pounds\n\
         p3\tunrelated\t0\tWhat is Rust?\tHow tall is a giraffe?\n\
         \n\
         p4\ttypo\t1\tHow do I sort a list?\thow do i srot a list\n"
    ))
    .unwrap()
}

#[test]
fn reads_the_cache_eval_format() {
    let p = pairs();
    assert_eq!(p.len(), 4);
    assert_eq!(p[1].category, "number");
    assert!(p[0].same_answer && !p[1].same_answer);
    assert_eq!(p[3].incoming, "how do i srot a list");
}

#[test]
fn refuses_malformed_files_with_the_line() {
    for (text, want) in [
        ("", "line 1"),
        ("id\tlabel\n", "line 1"),
        (&format!("{HEADER}x\ty\t2\ta\tb\n") as &str, "line 2: label"),
        (&format!("{HEADER}x\ty\t1\ta\n"), "line 2: expected 5"),
        (HEADER, "no pairs"),
    ] {
        let err = parse_pairs(text).unwrap_err();
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

#[test]
fn rates_count_what_they_say() {
    let p = pairs();
    let sims = [0.9, 0.99, 0.2, 0.7];
    let cosine = evaluate(
        Setting {
            threshold: 0.8,
            verifier: None,
        },
        &p,
        &sims,
    );
    assert_eq!(cosine.hit_rate, 0.5); // p1 hits, p4 is below 0.8
    assert_eq!(cosine.false_hits, 1); // p2
    assert_eq!(cosine.false_hit_rate, 0.5);
    assert_eq!(cosine.hard_false_hit_rate, 1.0); // p2 is the only hard negative
    assert_eq!(cosine.precision, 0.5);
    let verified = evaluate(
        Setting {
            threshold: 0.6,
            verifier: Some(Verifier::default()),
        },
        &p,
        &sims,
    );
    assert_eq!(verified.hit_rate, 1.0);
    assert_eq!(verified.false_hits, 0); // the changed number is refused
    assert_eq!(verified.precision, 1.0);
}

#[test]
fn recommends_the_most_hits_within_the_target() {
    let p = pairs();
    let sims = [0.9, 0.99, 0.2, 0.7];
    let outcomes: Vec<Outcome> = settings(true)
        .into_iter()
        .map(|s| evaluate(s, &p, &sims))
        .collect();
    let best = recommend(&outcomes, 0.0).unwrap();
    assert_eq!(best.false_hits, 0);
    assert_eq!(best.hit_rate, 1.0);
    assert!(best.setting.verifier.is_some());
    let report = report(&p, &sims, outcomes[0].setting, 0.01);
    assert!(report.contains("| number | no | 1 | "), "{report}");
}

#[test]
fn misjudged_lists_false_hits_first_then_misses_with_why() {
    let p = pairs();
    let sims = [0.9, 0.99, 0.2, 0.7];
    let cosine = Setting {
        threshold: 0.8,
        verifier: None,
    };
    let list = misjudged(&p, &sims, cosine);
    let rows: Vec<&str> = list.lines().filter(|l| l.starts_with("| ")).collect();
    // Header, then p2 (a false hit), then p4 (under the threshold); p1 and
    // p3 are right.
    assert_eq!(rows.len(), 3, "{list}");
    assert!(
        rows[1].starts_with("| false hit | p2 | number | 0.990 |"),
        "{list}"
    );
    assert!(
        rows[2].starts_with("| missed | p4 | typo | 0.700 | below the threshold |"),
        "{list}"
    );
    // With the verifier: nothing wrong but what it refuses, with its reason.
    let verified = Setting {
        threshold: 0.6,
        verifier: Some(Verifier::default()),
    };
    let mut p = p;
    p[0].cached = "How do I sort an array?".into();
    p[0].incoming = "How do I sort a tuple?".into();
    let list = misjudged(&p, &sims, verified);
    assert!(
        list.contains("| missed | p1 | reword | 0.900 | substitution | How do I sort an array? | How do I sort a tuple? |"),
        "{list}"
    );
    assert!(!list.contains("p2") && !list.contains("p4"), "{list}");
}

#[test]
fn decisions_list_every_pair_in_file_order() {
    let p = pairs();
    let sims = [0.9, 0.99, 0.2, 0.7];
    let verified = Setting {
        threshold: 0.6,
        verifier: Some(Verifier::default()),
    };
    let list = decisions(&p, &sims, verified);
    let rows: Vec<&str> = list.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 5, "{list}");
    assert!(rows[0].starts_with("| decision | id |"), "{list}");
    assert!(
        rows[1].starts_with("| hit | p1 | reword | 0.900 |  |"),
        "{list}"
    );
    assert!(
        rows[2].starts_with("| refused | p2 | number | 0.990 | number |"),
        "{list}"
    );
    assert!(
        rows[3].starts_with("| refused | p3 | unrelated | 0.200 | below the threshold |"),
        "{list}"
    );
    assert!(
        rows[4].starts_with("| hit | p4 | typo | 0.700 |  |"),
        "{list}"
    );
}

#[test]
fn a_prompt_the_semantic_tier_does_not_take_never_hits() {
    let mut p = pairs();
    let cosine = Setting {
        threshold: 0.5,
        verifier: None,
    };
    assert!(hits(&cosine, &p[0], 0.9));
    p[0].incoming = "sort ".repeat(500);
    assert!(!hits(&cosine, &p[0], 0.99));
}
