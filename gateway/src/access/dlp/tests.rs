use std::collections::BTreeMap;

use super::*;

fn dlp(actions: &[(&str, DlpAction)]) -> Dlp {
    let config = DlpConfig {
        actions: actions.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect(),
        custom: vec![CustomDetectorConfig {
            name: "employee_id".into(),
            pattern: r"\bEMP-[0-9]{6}\b".into(),
            action: DlpAction::Block,
        }],
        ..DlpConfig::default()
    };
    Dlp::build(&config).unwrap().unwrap()
}

fn redact_all() -> Dlp {
    let all: Vec<(&str, DlpAction)> = builtin_names().map(|n| (n, DlpAction::Redact)).collect();
    dlp(&all)
}

fn scan(d: &Dlp, text: &str) -> (String, Outcome) {
    let mut s = text.to_owned();
    let mut out = Outcome::default();
    d.scan(&mut s, &d.defaults, &mut out);
    (s, out)
}

#[test]
fn each_builtin_finds_its_kind_and_names_itself() {
    let d = redact_all();
    let cases = [
        (
            "openai_key",
            "key sk-proj-abcdefghijklmnopqrstuvwxyz012345 end",
        ),
        (
            "openai_key",
            "OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyzABCD",
        ),
        (
            "anthropic_key",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz_0123456789",
        ),
        ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
        (
            "aws_secret_key",
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("github_token", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("slack_token", "xoxb-1234567890-abcdefghij"),
        ("google_api_key", "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234"),
        ("stripe_key", "sk_live_abcdefghijklmnop1234"),
        (
            "private_key",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
        ),
        (
            "private_key",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk (cut off",
        ),
        (
            "jwt",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ),
        ("email", "write to jane.doe+tag@example.co.uk today"),
        ("credit_card", "card 4111 1111 1111 1111 exp"),
        ("credit_card", "5500-0000-0000-0004"),
        ("iban", "IBAN GB82 WEST 1234 5698 7654 32 please"),
        ("iban", "DE89370400440532013000"),
        ("phone", "call +1 415-555-0132 now"),
        ("phone", "call (415) 555-0132"),
        ("phone", "+447911123456"),
    ];
    for (name, text) in cases {
        let (redacted, out) = scan(&d, text);
        assert_eq!(
            out.redacted,
            vec![name.to_owned()],
            "{text:?} → {redacted:?}"
        );
        assert!(
            redacted.contains(&format!("[REDACTED:{name}]")),
            "{redacted:?}"
        );
    }
}

#[test]
fn near_misses_are_left_alone() {
    let d = redact_all();
    for text in [
        "card 4111 1111 1111 1112",            // fails Luhn
        "order 0000000000000000",              // one repeated digit
        "GB82 WEST 1234 5698 7654 33",         // fails mod 97
        "the risk-assessment-document-for-q3", // `sk-` inside a word
        "version 1.2.3 and 10 km",
        "convert 10 km to miles",
        "AKIA short",
    ] {
        let (redacted, out) = scan(&d, text);
        assert_eq!(out, Outcome::default(), "{text:?} → {redacted:?}");
        assert_eq!(redacted, text);
    }
}

#[test]
fn anthropic_key_is_named_as_such_not_as_openai() {
    let d = redact_all();
    let (s, out) = scan(&d, "x sk-ant-admin01-abcdefghijklmnopqrstuvwxyz y");
    assert_eq!(s, "x [REDACTED:anthropic_key] y");
    assert_eq!(out.redacted, ["anthropic_key"]);
}

#[test]
fn defaults_redact_secrets_and_leave_personal_data() {
    let d = dlp(&[]);
    let (s, out) = scan(
        &d,
        "mail a@b.io key sk-abcdefghijklmnopqrstuvwx0123 card 4111111111111111",
    );
    assert_eq!(
        s,
        "mail a@b.io key [REDACTED:openai_key] card 4111111111111111"
    );
    assert_eq!(out.redacted, ["openai_key"]);
}

#[test]
fn block_and_log_never_change_the_text() {
    let d = dlp(&[("email", DlpAction::Log), ("credit_card", DlpAction::Block)]);
    let (s, out) = scan(&d, "a@b.io");
    assert_eq!(
        (s.as_str(), out.logged.as_slice()),
        ("a@b.io", ["email".to_owned()].as_slice())
    );
    let (_, out) = scan(&d, "pay with 4111-1111-1111-1111");
    assert_eq!(out.blocked.as_deref(), Some("credit_card"));
    let (_, out) = scan(&d, "I am EMP-123456");
    assert_eq!(out.blocked.as_deref(), Some("employee_id"));
}

#[test]
fn layered_policies_override_in_order_and_unknown_names_fail() {
    let d = dlp(&[]);
    let group: BTreeMap<String, DlpAction> = [("email".into(), DlpAction::Block)].into();
    let tenant: BTreeMap<String, DlpAction> = [("email".into(), DlpAction::Redact)].into();
    let p = d.policy(&[&group, &tenant]).unwrap();
    let mut s = "to a@b.io".to_owned();
    let mut out = Outcome::default();
    d.scan(&mut s, &p, &mut out);
    assert_eq!(s, "to [REDACTED:email]");
    let bad: BTreeMap<String, DlpAction> = [("emails".into(), DlpAction::Block)].into();
    assert!(
        d.policy(&[&bad])
            .unwrap_err()
            .contains("unknown DLP detector `emails`")
    );
}

#[test]
fn request_bodies_are_scanned_everywhere_a_prompt_lives() {
    let d = dlp(&[("email", DlpAction::Redact)]);
    let p = d.defaults.clone();
    let mut chat = serde_json::json!({"model": "m", "messages": [
        {"role": "system", "content": "ops: ops@corp.example"},
        {"role": "user", "content": [{"type": "text", "text": "key sk-abcdefghijklmnopqrstuvwx0123"},
                                     {"type": "image_url", "image_url": {"url": "https://x/a@b.io"}}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "f", "arguments": "{\"to\":\"bob@corp.example\"}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "sent to bob@corp.example"}]});
    let out = d.scan_request(&mut chat, &p);
    let text = chat.to_string();
    assert!(
        !text.contains("corp.example") && !text.contains("sk-abc"),
        "{text}"
    );
    assert!(
        text.contains("https://x/a@b.io"),
        "image URLs are not prompt text"
    );
    assert_eq!(out.redacted, ["email", "openai_key"]);
    let mut completion = serde_json::json!({"model": "m", "prompt": ["x@y.io", "fine"]});
    d.scan_request(&mut completion, &p);
    assert_eq!(completion["prompt"][0], "[REDACTED:email]");
    let mut embed = serde_json::json!({"model": "m", "input": "x@y.io"});
    d.scan_request(&mut embed, &p);
    assert_eq!(embed["input"], "[REDACTED:email]");
}

#[test]
fn non_ascii_text_around_matches_survives() {
    let d = dlp(&[("email", DlpAction::Redact)]);
    let (s, _) = scan(&d, "Grüße an zoe@example.de — danke, ☎ +49 30 1234567");
    assert_eq!(s, "Grüße an [REDACTED:email] — danke, ☎ +49 30 1234567");
}

#[test]
fn answers_are_masked_even_where_prompts_would_be_blocked() {
    let d = dlp(&[("email", DlpAction::Block), ("phone", DlpAction::Log)]);
    let policy = d.defaults.for_answers();
    let mut chat = serde_json::json!({"choices": [
        {"index": 0, "message": {"role": "assistant", "content": "write to ann@corp.example, call 415-555-0132"}},
        {"index": 1, "message": {"role": "assistant", "content": null, "tool_calls": []}}]});
    let out = d.scan_response(&mut chat, &policy);
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "write to [REDACTED:email], call 415-555-0132"
    );
    assert_eq!(
        (out.redacted, out.logged, out.blocked),
        (vec!["email".to_owned()], vec!["phone".to_owned()], None)
    );
    let mut completion = serde_json::json!({"choices": [{"index": 0, "text": "key sk-abcdefghijklmnopqrstuvwx0123"}]});
    d.scan_response(&mut completion, &policy);
    assert_eq!(
        completion["choices"][0]["text"],
        "key [REDACTED:openai_key]"
    );
}
