use super::*;

fn entry(body: &str, tenant: &str, group: &str, expires_at: u64) -> CachedResponse {
    CachedResponse {
        body: Bytes::from(body.to_owned()),
        tenant: tenant.into(),
        group: group.into(),
        created_at: 0,
        expires_at,
    }
}

#[test]
fn serves_until_expiry_then_forgets() {
    let tier = ExactTier::new(10, 1 << 20);
    assert!(tier.insert("k".into(), entry("answer", "t", "g", 100)));
    assert_eq!(
        tier.get("k", 99).map(|e| e.body),
        Some(Bytes::from("answer"))
    );
    assert_eq!(tier.get("k", 100), None);
    let s = tier.stats();
    assert_eq!(
        (s.entries, s.bytes, s.hits, s.misses, s.expirations),
        (0, 0, 1, 1, 1)
    );
}

#[test]
fn evicts_the_least_recently_used_past_max_entries() {
    let tier = ExactTier::new(2, 1 << 20);
    tier.insert("a".into(), entry("1", "t", "g", 10));
    tier.insert("b".into(), entry("2", "t", "g", 10));
    assert!(tier.get("a", 0).is_some()); // a is now more recent than b
    tier.insert("c".into(), entry("3", "t", "g", 10));
    assert!(tier.get("b", 0).is_none());
    assert!(tier.get("a", 0).is_some() && tier.get("c", 0).is_some());
    assert_eq!(tier.stats().evictions, 1);
}

#[test]
fn evicts_past_max_bytes_and_refuses_what_can_never_fit() {
    let body = "x".repeat(1_000);
    let one = charge("k0", &entry(&body, "t", "g", 10));
    let tier = ExactTier::new(100, 3 * one);
    for i in 0..5 {
        assert!(tier.insert(format!("k{i}"), entry(&body, "t", "g", 10)));
    }
    let s = tier.stats();
    assert_eq!(s.entries, 3);
    assert!(s.bytes <= 3 * one);
    assert!(tier.get("k0", 0).is_none() && tier.get("k4", 0).is_some());
    assert!(!tier.insert("huge".into(), entry(&"y".repeat(4 * one), "t", "g", 10)));
    assert!(tier.get("huge", 0).is_none());
}

#[test]
fn replacing_an_entry_keeps_the_byte_count_right() {
    let tier = ExactTier::new(10, 1 << 20);
    tier.insert("k".into(), entry("short", "t", "g", 10));
    tier.insert("k".into(), entry("a longer answer", "t", "g", 10));
    assert_eq!(
        tier.stats().bytes,
        charge("k", &entry("a longer answer", "t", "g", 10))
    );
    assert_eq!(tier.stats().entries, 1);
}

#[test]
fn purges_by_tenant_and_group() {
    let tier = ExactTier::new(10, 1 << 20);
    tier.insert("1".into(), entry("a", "t1", "g1", 10));
    tier.insert("2".into(), entry("b", "t1", "g2", 10));
    tier.insert("3".into(), entry("c", "t2", "g1", 10));
    assert_eq!(tier.purge(Some("t1"), Some("g1")), 1);
    assert_eq!(tier.purge(None, Some("g1")), 1);
    assert_eq!(tier.purge(Some("t1"), None), 1);
    assert_eq!(tier.purge(None, None), 0);
    assert_eq!(tier.stats().bytes, 0);
}
