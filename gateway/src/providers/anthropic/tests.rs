use serde_json::{Value, json};

use super::request::translate;
use super::response::to_chat_completion;
use super::stream::StreamTranslator;
use crate::api::types::ChatCompletionRequest;

fn chat(v: Value) -> ChatCompletionRequest {
    serde_json::from_value(v).unwrap()
}

#[test]
fn request_moves_system_converts_tools_and_merges_tool_results() {
    let req = chat(json!({
        "model": "m", "max_tokens": 50, "temperature": 1.7, "stop": "END", "user": "u1",
        "parallel_tool_calls": false,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "and kind"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "look", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "call_2", "content": "still a cat"}
        ],
        "tools": [{"type": "function", "function": {"name": "look", "description": "look",
                   "parameters": {"type": "object", "properties": {"q": {"type": "number"}}}}}],
        "tool_choice": "required"
    }));
    let t = translate(&req, "claude-x", 4096, true).unwrap();
    let b = &t.body;
    assert_eq!(b["model"], "claude-x");
    assert_eq!(b["system"], "be brief\n\nand kind");
    assert_eq!(b["max_tokens"], 50);
    assert_eq!(b["temperature"], 1.0, "clamped to Anthropic's range");
    assert_eq!(b["stop_sequences"], json!(["END"]));
    assert_eq!(b["metadata"]["user_id"], "u1");
    assert_eq!(b["stream"], true);
    assert_eq!(
        b["tools"][0]["input_schema"]["properties"]["q"]["type"],
        "number"
    );
    assert_eq!(
        b["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "user, assistant, user(tool results merged)");
    assert_eq!(
        msgs[0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
    );
    assert_eq!(
        msgs[0]["content"][2]["source"],
        json!({"type": "url", "url": "https://example.com/cat.jpg"})
    );
    assert_eq!(
        msgs[1]["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "look", "input": {"q": 1}})
    );
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(msgs[2]["content"][1]["tool_use_id"], "call_2");
}

#[test]
fn request_refuses_what_anthropic_cannot_do() {
    let n2 = chat(json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}));
    assert!(translate(&n2, "c", 10, false).is_err());
    let bad_args = chat(json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}
    ]}));
    let e = translate(&bad_args, "c", 10, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("messages[1].tool_calls[0].function.arguments"),
        "{e}"
    );
    let defaults = chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(
        translate(&defaults, "c", 321, false).unwrap().body["max_tokens"],
        321
    );
}

#[test]
fn json_schema_becomes_a_forced_tool_and_comes_back_as_content() {
    let req = chat(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer",
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}),
    );
    let t = translate(&req, "c", 10, false).unwrap();
    assert_eq!(
        t.body["tool_choice"],
        json!({"type": "tool", "name": "answer"})
    );
    let resp = json!({"id": "msg_1", "model": "c", "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": "t1", "name": "answer", "input": {"a": "b"}}],
        "usage": {"input_tokens": 3, "output_tokens": 4}});
    let (body, usage) = to_chat_completion(&resp, t.json_tool.as_deref(), 0);
    assert_eq!(body["choices"][0]["message"]["content"], "{\"a\":\"b\"}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 4));
}

#[test]
fn response_maps_tool_use_stop_reasons_and_cached_usage() {
    let resp = json!({"id": "msg_1", "model": "c", "stop_reason": "tool_use",
        "content": [{"type": "text", "text": "let me look"},
                    {"type": "tool_use", "id": "t1", "name": "look", "input": {"q": 1}}],
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 5}});
    let (body, usage) = to_chat_completion(&resp, None, 7);
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "let me look");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"q\":1}"
    );
    assert_eq!(body["usage"]["prompt_tokens"], 100);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 90);
    assert_eq!(usage.prompt_tokens, 100);
    let max = json!({"stop_reason": "max_tokens", "content": [{"type": "text", "text": "x"}]});
    assert_eq!(
        to_chat_completion(&max, None, 0).0["choices"][0]["finish_reason"],
        "length"
    );
}

#[test]
fn stream_events_become_openai_chunks() {
    let mut t = StreamTranslator::new(1, true, None);
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_9", "model": "c", "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "look", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"q\":"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
        json!({"type": "message_stop"}),
    ];
    let chunks: Vec<Value> = events
        .iter()
        .flat_map(|e| t.on_event(&e.to_string()).unwrap())
        .collect();
    assert!(t.done);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["id"], "msg_9");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(
        chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "look"
    );
    let args: String = chunks[3..5]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(args, "{\"q\":1}");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(chunks[6]["usage"]["prompt_tokens"], 12);
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 7);
    let err = t.on_event(
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            .to_string(),
    );
    assert!(err.is_err());
}
