use axum::http::{HeaderMap, HeaderValue};

use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn reads_every_control() {
    let c = |p: &[(&'static str, &'static str)]| controls(&headers(p)).unwrap();
    assert_eq!(c(&[]), Controls::default());
    assert_eq!(
        c(&[(CACHE_HEADER, "no-cache")]).directive,
        Directive::NoCache
    );
    assert_eq!(
        c(&[(CACHE_HEADER, "Refresh")]).directive,
        Directive::NoCache
    );
    assert_eq!(
        c(&[(CACHE_HEADER, "no-store")]).directive,
        Directive::NoStore
    );
    assert_eq!(
        c(&[("cache-control", "max-age=0, no-cache")]).directive,
        Directive::NoCache
    );
    assert_eq!(
        c(&[("cache-control", "no-store")]).directive,
        Directive::NoStore
    );
    // The strictest wins.
    assert_eq!(
        c(&[("cache-control", "no-store"), (CACHE_HEADER, "no-cache")]).directive,
        Directive::NoStore
    );
    assert_eq!(c(&[(TTL_HEADER, " 60 ")]).ttl, Some(60));
}

#[test]
fn refuses_what_it_does_not_understand() {
    for h in [
        &[(CACHE_HEADER, "sometimes")][..],
        &[(TTL_HEADER, "-1")],
        &[(TTL_HEADER, "1.5")],
        &[(TTL_HEADER, "forever")],
    ] {
        let e = controls(&headers(h)).unwrap_err();
        assert_eq!(e.status_code().as_u16(), 400, "{h:?}");
    }
}

#[test]
fn only_normal_endings_are_stored() {
    let body = |reasons: &[&str]| {
        let choices: Vec<_> = reasons
            .iter()
            .map(|r| serde_json::json!({"index": 0, "finish_reason": r}))
            .collect();
        serde_json::json!({"choices": choices}).to_string()
    };
    for ok in [
        &["stop"][..],
        &["length"],
        &["tool_calls"],
        &["stop", "length"],
    ] {
        assert!(finished_normally(body(ok).as_bytes()), "{ok:?}");
    }
    for bad in [&["content_filter"][..], &["stop", "content_filter"], &[]] {
        assert!(!finished_normally(body(bad).as_bytes()), "{bad:?}");
    }
    assert!(!finished_normally(b"not json"));
}
