"""Chat completions through an OpenAI-compatible deployment (and Azure):
plain, streamed, tools, pass-through of unknown fields, multi-part content,
and Switchyard's response headers."""

from __future__ import annotations

import json
import re

from harness import (
    AZURE_API_VERSION,
    PROVIDER_KEY,
    WEATHER_TOOL,
    answer_to,
    collect_stream,
    reassemble_tool_calls,
    words,
)

PROMPT = "What is the capital of France?"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_chat_non_streaming_content_finish_reason_and_usage(client):
    resp = client.chat.completions.create(model="gpt-test", messages=user(PROMPT))

    assert resp.object == "chat.completion"
    assert len(resp.choices) == 1
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == answer_to(PROMPT)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == words(PROMPT)
    assert resp.usage.completion_tokens == words(answer_to(PROMPT))
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_max_tokens_cuts_answer_with_length_finish_reason(client):
    resp = client.chat.completions.create(model="gpt-test", messages=user(PROMPT), max_tokens=3)
    assert resp.choices[0].message.content == "Fake answer to:"
    assert resp.choices[0].finish_reason == "length"


def test_response_headers_request_id_backend_and_overhead(client, basic):
    raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=user("hi"))
    assert raw.status_code == 200
    generated = raw.headers.get("x-request-id")
    assert generated and re.fullmatch(r"[\x21-\x7e]{1,128}", generated)
    assert raw.headers.get("x-switchyard-backend") == "oai/fake-gpt-upstream"
    overhead = float(raw.headers["x-switchyard-overhead-ms"])
    assert overhead >= 0.0
    assert raw.parse().choices[0].message.content == answer_to("hi")
    # The id is forwarded upstream, so upstream logs can be correlated.
    assert basic.openai_fake.last()["headers"].get("x-request-id") == generated

    second = client.chat.completions.with_raw_response.create(model="gpt-test", messages=user("hi"))
    assert second.headers["x-request-id"] != generated, "each request gets its own id"


def test_client_request_id_is_echoed_and_forwarded(client, basic):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=user("hi"), extra_headers={"x-request-id": "e2e-req-42"}
    )
    assert raw.headers["x-request-id"] == "e2e-req-42"
    assert basic.openai_fake.last()["headers"]["x-request-id"] == "e2e-req-42"


def test_unusable_client_request_id_is_replaced(client):
    too_long = "x" * 200
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=user("hi"), extra_headers={"x-request-id": too_long}
    )
    assert raw.headers["x-request-id"] not in ("", too_long)


def test_streaming_matches_non_streamed_text_and_ends_with_usage(client):
    full = client.chat.completions.create(model="gpt-test", messages=user(PROMPT))
    stream = client.chat.completions.create(
        model="gpt-test",
        messages=user(PROMPT),
        stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = collect_stream(stream)

    assert text == full.choices[0].message.content == answer_to(PROMPT)
    assert len(chunks) > words(text), "one chunk per token, plus role/finish/usage chunks"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == full.usage.prompt_tokens
    assert last.usage.completion_tokens == full.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_response_headers(client):
    with client.chat.completions.with_streaming_response.create(
        model="gpt-test", messages=user("hi"), stream=True
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["x-switchyard-backend"] == "oai/fake-gpt-upstream"
        assert float(raw.headers["x-switchyard-overhead-ms"]) >= 0
        text, _ = collect_stream(raw.parse())
    assert text == answer_to("hi")


def test_tool_call_non_streamed_then_tool_result_turn(client):
    question = "Weather in Paris please"
    resp = client.chat.completions.create(
        model="gpt-test", messages=user(question), tools=[WEATHER_TOOL], tool_choice="auto"
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": question, "unit": question}

    follow_up = client.chat.completions.create(
        model="gpt-test",
        messages=user(question)
        + [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call.id, "type": "function",
                     "function": {"name": call.function.name, "arguments": call.function.arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert follow_up.choices[0].finish_reason == "stop"
    assert follow_up.choices[0].message.content == answer_to("tool result Sunny, 21 C")
    assert not follow_up.choices[0].message.tool_calls


def test_named_tool_choice_picks_that_tool(client):
    other = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}
    resp = client.chat.completions.create(
        model="gpt-test", messages=user("find it"), tools=[WEATHER_TOOL, other],
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    (call,) = resp.choices[0].message.tool_calls
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"q": "find it"}


def test_tool_call_streamed_deltas_reassemble(client):
    question = "Weather in Oslo"
    full = client.chat.completions.create(model="gpt-test", messages=user(question), tools=[WEATHER_TOOL])
    stream = client.chat.completions.create(
        model="gpt-test", messages=user(question), tools=[WEATHER_TOOL], stream=True
    )
    _, chunks = collect_stream(stream)
    calls = reassemble_tool_calls(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == json.loads(full.choices[0].message.tool_calls[0].function.arguments)
    assert sum(1 for c in chunks for ch in c.choices if ch.delta.tool_calls) > 2, "arguments arrive in pieces"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


def test_unknown_fields_pass_through_and_model_is_replaced(client, basic):
    resp = client.chat.completions.create(
        model="gpt-test",
        messages=user("hi"),
        seed=7,
        extra_body={"foo_custom": {"a": 1}, "top_k": 5},
    )
    assert resp.choices[0].message.content == answer_to("hi")
    sent = basic.openai_fake.last()
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["model"] == "fake-gpt-upstream"
    assert sent["body"]["foo_custom"] == {"a": 1}
    assert sent["body"]["top_k"] == 5
    assert sent["body"]["seed"] == 7
    assert sent["body"]["messages"] == user("hi")
    assert sent["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"


def test_multipart_content_passes_through_to_openai_compat(client, basic):
    content = [
        {"type": "text", "text": "Describe this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
    ]
    resp = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": content}])
    assert resp.choices[0].message.content == answer_to("Describe this [image]")
    assert basic.openai_fake.last()["body"]["messages"] == [{"role": "user", "content": content}]


def test_azure_deployment_addressing_and_api_key(client, basic):
    resp = client.chat.completions.create(model="azure-test", messages=user(PROMPT))
    assert resp.choices[0].message.content == answer_to(PROMPT)
    sent = basic.azure_fake.last()
    assert sent["path"] == "/openai/deployments/my-azure-deployment/chat/completions"
    assert f"api-version={AZURE_API_VERSION}" in (sent["query"] or "").split("&")
    assert sent["headers"].get("api-key") == PROVIDER_KEY
    assert "authorization" not in sent["headers"], "Azure takes the key in `api-key`, not as a bearer token"


def test_azure_streaming(client):
    stream = client.chat.completions.create(
        model="azure-test", messages=user(PROMPT), stream=True, stream_options={"include_usage": True}
    )
    text, chunks = collect_stream(stream)
    assert text == answer_to(PROMPT)
    assert chunks[-1].usage.completion_tokens == words(answer_to(PROMPT))
