use super::*;

fn settings(target: f64) -> AuditSettings {
    AuditSettings {
        rate: 1.0,
        target_error_rate: target,
        agreement: 0.9,
    }
}

#[test]
fn wilson_lower_bounds_match_the_formula() {
    assert_eq!(wilson_lower(0, 0), 0.0);
    assert_eq!(wilson_lower(0, 50), 0.0);
    assert!((wilson_lower(1, 1) - 0.2065).abs() < 1e-3);
    // docs/cache.md's figures: one of 18 is within 1%, one of 17 is not.
    assert!(wilson_lower(1, 18) <= 0.01 && wilson_lower(1, 17) > 0.01);
    assert!((wilson_lower(5, 100) - 0.0215).abs() < 1e-3);
    assert!((wilson_lower(50, 100) - 0.4038).abs() < 1e-3);
}

#[test]
fn one_disagreement_lifts_the_threshold_past_it_and_agreements_bring_it_back() {
    let a = Auditor::new(settings(0.01), 0.6);
    assert_eq!(a.threshold(), 0.6);
    // Agreements alone never move it.
    for _ in 0..5 {
        assert_eq!(a.record(0.7, true), 0.6);
    }
    // A disagreement at 0.8: every threshold up to 0.8 is refuted (1 error
    // in 1 above 0.75..0.8; 1 in 6 above 0.6..0.7, lower bound 0.03).
    let t = a.record(0.8, false);
    assert!(t > 0.8 && t < 0.82, "{t}");
    // Enough agreeing outcomes above 0.6 outweigh it.
    for _ in 0..600 {
        a.record(0.9, true);
    }
    assert_eq!(a.threshold(), 0.6);
    let s = a.stats();
    assert_eq!((s.agreed, s.disagreed), (605, 1));
    assert_eq!(s.configured_similarity, 0.6);
}

#[test]
fn a_disagreement_at_the_top_turns_semantic_hits_off_and_the_window_is_bounded() {
    let a = Auditor::new(settings(0.01), 0.6);
    assert!(a.record(1.0, false) > 1.0);
    for _ in 0..WINDOW + 10 {
        a.record(0.95, true);
    }
    assert_eq!(a.state().outcomes.len(), WINDOW);
    // The old disagreement left the window: back to the configured value.
    assert_eq!(a.threshold(), 0.6);
}

#[test]
fn a_looser_target_tolerates_what_a_strict_one_does_not() {
    let loose = Auditor::new(settings(0.3), 0.6);
    let strict = Auditor::new(settings(0.01), 0.6);
    for (i, a) in [&loose, &strict].into_iter().enumerate() {
        for k in 0..40 {
            a.record(0.7, k % 10 != 0);
        }
        let t = a.threshold();
        if i == 0 {
            assert_eq!(t, 0.6, "10% errors are within 30%");
        } else {
            assert!(t > 0.7, "10% errors break 1%: {t}");
        }
    }
    // Auditing off: never drawn.
    let off = Auditor::new(
        AuditSettings {
            rate: 0.0,
            ..settings(0.01)
        },
        0.6,
    );
    assert!((0..1000).all(|_| !off.draw()));
    assert!((0..1000).all(|_| strict.draw()));
}

#[test]
fn answer_text_reads_contents_and_tool_calls() {
    let body = serde_json::json!({
        "choices": [
            {"message": {"role": "assistant", "content": "Paris."}},
            {"message": {"role": "assistant", "content": null,
                         "tool_calls": [{"type": "function",
                                         "function": {"name": "f", "arguments": "{\"x\":1}"}}]}}
        ]
    });
    let text = answer_text(body.to_string().as_bytes()).unwrap();
    assert!(text.starts_with("Paris.\n"));
    assert!(text.contains("\"name\":\"f\""));
    assert_eq!(answer_text(b"not json"), None);
    assert_eq!(answer_text(b"{\"choices\": 3}"), None);
}

#[tokio::test]
async fn answers_agree_only_when_equal_or_close_and_verified() {
    let v = Verifier::default();
    let never = || async { panic!("no embedding needed") };
    // Case, punctuation and spacing aside, equal: no embedding needed.
    let equal = text_check("The answer is  Paris.", "the answer is paris", v);
    assert_eq!(equal, Some(true));
    assert_eq!(agree(equal, 0.9, never).await, Some(true));
    // A changed number is a disagreement whatever the cosine.
    let changed = text_check("10 km is 6.2 miles", "10 km is 16.1 miles", v);
    assert_eq!(changed, Some(false));
    assert_eq!(agree(changed, 0.9, never).await, Some(false));
    // Otherwise the embeddings decide.
    let (a, b) = (
        "Use reversed() on the list",
        "Simply use reversed() on the list",
    );
    let open = text_check(a, b, v);
    assert_eq!(open, None);
    assert_eq!(agree(open, 0.9, || async { Some(0.95) }).await, Some(true));
    assert_eq!(agree(open, 0.9, || async { Some(0.5) }).await, Some(false));
    assert_eq!(
        agree(open, 0.96, || async { Some(0.95) }).await,
        Some(false)
    );
    // An embedder failure is no outcome, not a disagreement.
    assert_eq!(agree(open, 0.9, || async { None }).await, None);
}

#[test]
fn long_answers_are_compared_on_a_bounded_prefix() {
    let long = "word ".repeat(10_000);
    assert_eq!(bounded(&long).chars().count(), COMPARED_CHARS);
    assert_eq!(bounded("short"), "short");
    let multibyte = "é".repeat(COMPARED_CHARS + 5);
    assert_eq!(bounded(&multibyte).chars().count(), COMPARED_CHARS);
}

#[test]
fn the_threshold_grid_has_no_drift_and_ends_at_one() {
    let mut outcomes = VecDeque::new();
    outcomes.push_back((0.9625, false));
    assert_eq!(threshold(&outcomes, 0.6, 0.01), 0.6 + 37.0 * STEP);
    outcomes.push_back((0.995, false));
    assert_eq!(threshold(&outcomes, 0.6, 0.01), 1.0);
    outcomes.push_back((1.0, false));
    assert!(threshold(&outcomes, 0.6, 0.01) > 1.0);
    assert_eq!(threshold(&VecDeque::new(), 1.0, 0.01), 1.0);
}

fn journal(dir: &tempfile::TempDir, model: &str) -> Arc<Journal> {
    Arc::new(Journal::open(&dir.path().join("audits.sqlite3"), model).unwrap())
}

#[test]
fn a_restored_auditor_has_the_saved_window_threshold_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let a = Auditor::restore(settings(0.01), 0.6, "g", journal(&dir, "minilm")).unwrap();
    for _ in 0..5 {
        a.record(0.7, true);
    }
    let raised = a.record(0.8, false);
    assert!(raised > 0.8, "{raised}");
    let before = a.stats();
    drop(a);
    // Reopened from the file, as a restarted gateway would.
    let b = Auditor::restore(settings(0.01), 0.6, "g", journal(&dir, "minilm")).unwrap();
    assert_eq!(b.threshold(), raised);
    let after = b.stats();
    assert_eq!(
        (after.agreed, after.disagreed),
        (before.agreed, before.disagreed)
    );
    // Another group, or another embedding model (whose similarities mean
    // something else), starts afresh.
    let other = Auditor::restore(settings(0.01), 0.6, "h", journal(&dir, "minilm")).unwrap();
    assert_eq!(other.threshold(), 0.6);
    let remodelled = Auditor::restore(settings(0.01), 0.6, "g", journal(&dir, "mpnet")).unwrap();
    assert_eq!(remodelled.threshold(), 0.6);
    assert_eq!(remodelled.stats().disagreed, 0);
    // The saved outcomes are facts, not a threshold: a restart with a
    // looser target reads them afresh.
    let looser = Auditor::restore(settings(0.5), 0.6, "g", journal(&dir, "minilm")).unwrap();
    assert_eq!(looser.threshold(), 0.6);
}

#[test]
fn the_journal_keeps_the_last_window_of_each_group() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(&dir, "m");
    // Interleaved with another group's, so ids are not contiguous.
    for i in 0..WINDOW + 7 {
        j.append(
            "g",
            0.5 + (i % 100) as f32 / 1000.0,
            !i.is_multiple_of(3),
            1,
        )
        .unwrap();
        if i.is_multiple_of(10) {
            j.append("h", 0.9, false, 1).unwrap();
        }
    }
    let g = j.load("g").unwrap();
    assert_eq!(g.outcomes.len(), WINDOW);
    // Oldest first: the first seven are gone.
    assert_eq!(
        g.outcomes[0],
        (0.5 + 7.0 / 1000.0, !7usize.is_multiple_of(3))
    );
    assert_eq!(
        g.outcomes[WINDOW - 1],
        (0.5 + 6.0 / 1000.0, !(WINDOW + 6).is_multiple_of(3))
    );
    // Totals count every outcome, not only the window's.
    let disagreed = (0..WINDOW + 7).filter(|i| i.is_multiple_of(3)).count() as u64;
    assert_eq!(
        (g.agreed + g.disagreed, g.disagreed),
        ((WINDOW + 7) as u64, disagreed)
    );
    let h = j.load("h").unwrap();
    assert_eq!((h.outcomes.len(), h.disagreed), (101, 101));
    // Resetting one group leaves the other.
    assert_eq!(j.reset(Some("g")).unwrap(), WINDOW);
    assert_eq!(j.load("g").unwrap(), Saved::default());
    assert_eq!(j.load("h").unwrap().outcomes.len(), 101);
    assert_eq!(j.reset(None).unwrap(), 101);
    assert_eq!(j.load("h").unwrap(), Saved::default());
}

#[test]
fn forgetting_returns_to_the_configured_similarity_and_damaged_rows_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(&dir, "m");
    let a = Auditor::restore(settings(0.01), 0.6, "g", j.clone()).unwrap();
    assert!(a.record(0.9, false) > 0.9);
    a.forget();
    assert_eq!(a.threshold(), 0.6);
    assert_eq!((a.stats().agreed, a.stats().disagreed), (0, 0));
    // A similarity outside [-1, 1] (a damaged or hand-edited file) is not
    // read back.
    j.reset(None).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("audits.sqlite3")).unwrap();
    conn.execute(
        "INSERT INTO outcomes (model_group, embedding_model, similarity, agreed, at)
         VALUES ('g', 'm', 7.0, 0, 1), ('g', 'm', 0.95, 0, 1)",
        [],
    )
    .unwrap();
    let saved = j.load("g").unwrap();
    assert_eq!(saved.outcomes, VecDeque::from([(0.95, false)]));
}

#[test]
fn an_audit_begun_before_a_reset_is_not_recorded_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(&dir, "m");
    let a = Auditor::restore(settings(0.01), 0.6, "g", j.clone()).unwrap();
    let begun = a.generation();
    a.forget();
    assert_eq!(a.record_since(begun, 0.9, false), None);
    assert_eq!(a.threshold(), 0.6);
    assert_eq!(a.stats().disagreed, 0);
    assert_eq!(
        j.load("g").unwrap(),
        Saved::default(),
        "nothing saved either"
    );
    // An audit begun after the reset counts.
    let begun = a.generation();
    assert!(a.record_since(begun, 0.9, false).unwrap() > 0.9);
    assert_eq!(j.load("g").unwrap().disagreed, 1);
}
