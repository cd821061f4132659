use serde_json::json;

use super::*;

fn key_of(tenant: &str, group: &str, body: Value) -> Result<CacheKey, NotCacheable> {
    let chat: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
    chat_key(tenant, group, body.as_object().unwrap(), &chat, 1.0)
}

fn base() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of Peru?"}
        ],
        "temperature": 0.2,
        "max_tokens": 100
    })
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

#[test]
fn field_order_whitespace_and_transport_fields_do_not_matter() {
    let reordered: Value = serde_json::from_str(
        r#"{ "max_tokens": 100, "temperature": 0.2,
             "messages": [ {"content": "You are terse.", "role": "system"},
                           {"content": "What is the capital of Peru?", "role": "user"} ],
             "model": "gpt-4o-mini" }"#,
    )
    .unwrap();
    let a = key_of("t1", "g", base()).unwrap();
    assert_eq!(a, key_of("t1", "g", reordered).unwrap());
    for (k, v) in [
        ("stream", json!(true)),
        ("stream_options", json!({"include_usage": true})),
        ("user", json!("end-user-42")),
        ("model", json!("an-alias")),
        ("max_tokens", json!(128)), // same bucket as 100
    ] {
        assert_eq!(a, key_of("t1", "g", with(base(), k, v)).unwrap(), "{k}");
    }
    assert_eq!(a.text, "What is the capital of Peru?");
}

#[test]
fn tenants_and_groups_never_share_a_scope() {
    let a = key_of("tenant-a", "g", base()).unwrap();
    let b = key_of("tenant-b", "g", base()).unwrap();
    assert_ne!(a.scope, b.scope);
    assert_ne!(a.exact, b.exact);
    assert_ne!(
        a.scope,
        key_of("tenant-a", "other-group", base()).unwrap().scope
    );
    // Length-prefixed hashing: moving a character between tenant and group
    // is a different scope.
    assert_ne!(
        key_of("ab", "c", base()).unwrap().scope,
        key_of("a", "bc", base()).unwrap().scope
    );
}

#[test]
fn everything_that_changes_the_answer_changes_the_scope() {
    let a = key_of("t", "g", base()).unwrap();
    let mut other_system = base();
    other_system["messages"][0]["content"] = json!("You are verbose.");
    let mut longer_conversation = base();
    longer_conversation["messages"] = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "What is the capital of Peru?"}
    ]);
    let tool = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    for (name, body) in [
        ("system prompt", other_system),
        ("conversation", longer_conversation),
        ("tools", with(base(), "tools", tool)),
        (
            "response_format",
            with(base(), "response_format", json!({"type": "json_object"})),
        ),
        ("temperature", with(base(), "temperature", json!(0.3))),
        ("seed", with(base(), "seed", json!(7))),
        ("n", with(base(), "n", json!(2))),
        ("stop", with(base(), "stop", json!(["\n"]))),
        ("max_tokens bucket", with(base(), "max_tokens", json!(300))),
        (
            "unknown field",
            with(base(), "logit_bias", json!({"50256": -100})),
        ),
    ] {
        let k = key_of("t", "g", body).unwrap();
        assert_ne!(a.scope, k.scope, "{name}");
        assert_eq!(a.text, k.text, "{name}");
    }
    let mut other_question = base();
    other_question["messages"][1]["content"] = json!("What is the capital of Chile?");
    let k = key_of("t", "g", other_question).unwrap();
    assert_eq!(a.scope, k.scope);
    assert_ne!(a.exact, k.exact);
}

#[test]
fn what_is_not_cacheable_says_why() {
    assert_eq!(
        key_of("t", "g", with(base(), "temperature", json!(1.5))),
        Err(NotCacheable::Temperature(1.5, 1.0))
    );
    let mut assistant_last = base();
    assistant_last["messages"][1] = json!({"role": "assistant", "content": "Lima"});
    assert_eq!(
        key_of("t", "g", assistant_last),
        Err(NotCacheable::LastTurnNotUser)
    );
    let mut image = base();
    image["messages"][1]["content"] = json!([
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    ]);
    assert_eq!(key_of("t", "g", image), Err(NotCacheable::NonTextContent));
    let mut blank = base();
    blank["messages"][1]["content"] = json!("   ");
    assert_eq!(key_of("t", "g", blank), Err(NotCacheable::EmptyText));
}

#[test]
fn canonical_json_sorts_keys_at_every_depth() {
    let a: Value = serde_json::from_str(r#"{"b": [{"y": 1, "x": 2}], "a": null}"#).unwrap();
    assert_eq!(canonical_json(&a), r#"{"a":null,"b":[{"x":2,"y":1}]}"#);
}
