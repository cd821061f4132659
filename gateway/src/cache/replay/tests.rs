use serde_json::json;

use super::*;

fn completion() -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello there."}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
            ]}, "finish_reason": "tool_calls"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    })
}

fn reassemble(chunks: &[Bytes]) -> Option<Value> {
    let mut a = Assembler::default();
    for c in chunks {
        a.push(c);
    }
    a.finish().map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn a_replayed_answer_reassembles_to_itself() {
    let body = completion().to_string();
    let with_usage = chunks(body.as_bytes(), true).unwrap();
    assert_eq!(reassemble(&with_usage).unwrap(), completion());
    let last: Value = serde_json::from_slice(with_usage.last().unwrap()).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 7);
    let without: Vec<Value> = chunks(body.as_bytes(), false)
        .unwrap()
        .iter()
        .map(|c| serde_json::from_slice(c).unwrap())
        .collect();
    assert!(without.iter().all(|c| c.get("usage").is_none()));
    assert!(
        without
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
}

#[test]
fn split_deltas_are_joined() {
    let chunk = |delta: Value, finish: Value| {
        Bytes::from(
            json!({"id": "x", "created": 1, "model": "m", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        )
    };
    let got = reassemble(&[
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hel"}), Value::Null),
        chunk(json!({"content": "lo"}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}), Value::Null),
        chunk(json!({}), json!("stop")),
    ])
    .unwrap();
    assert_eq!(got["choices"][0]["message"]["content"], "Hello");
    assert_eq!(
        got["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":1}"
    );
    assert!(got.get("usage").is_none());
}

#[test]
fn abnormal_streams_are_not_storable() {
    let body = completion().to_string();
    let mut chunks_ = chunks(body.as_bytes(), false).unwrap();
    // No finish reason for the last choice: cut short.
    chunks_.pop();
    assert_eq!(reassemble(&chunks_), None);
    let filtered = json!({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]});
    assert_eq!(reassemble(&[Bytes::from(filtered.to_string())]), None);
    assert_eq!(
        reassemble(&[Bytes::from_static(b"{\"error\": {\"message\": \"boom\"}}")]),
        None
    );
    assert_eq!(reassemble(&[Bytes::from_static(b"not json")]), None);
    assert_eq!(reassemble(&[]), None);
}
