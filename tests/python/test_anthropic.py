"""Chat completions through an Anthropic deployment: the client speaks
OpenAI's format, the gateway translates to and from the Messages API. Each
test checks both what the client got and what reached the (fake) upstream."""

from __future__ import annotations

import json

from harness import PROVIDER_KEY, WEATHER_TOOL, answer_to, collect_stream, reassemble_tool_calls, words

SYSTEM = "You are terse."
PROMPT = "Name three rivers in Europe"


def messages(text: str = PROMPT) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def test_chat_translated_both_ways(client, basic):
    resp = client.chat.completions.create(model="claude-test", messages=messages())

    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == answer_to(PROMPT)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == words(SYSTEM) + words(PROMPT)
    assert resp.usage.completion_tokens == words(answer_to(PROMPT))
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

    sent = basic.anthropic_fake.last()
    assert sent["path"] == "/v1/messages"
    assert sent["headers"].get("x-api-key") == PROVIDER_KEY
    assert sent["headers"].get("anthropic-version") == "2023-06-01"
    assert "authorization" not in sent["headers"]
    body = sent["body"]
    assert body["model"] == "fake-claude-upstream"
    assert body["system"] == SYSTEM, "the system message moves to `system`"
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}]
    assert body["max_tokens"] == 4096, "Anthropic requires max_tokens: the provider default is sent"
    assert "stream" not in body or body["stream"] is False


def test_max_tokens_and_stop_reason_translated(client, basic):
    resp = client.chat.completions.create(model="claude-test", messages=messages(), max_tokens=2, stop=["END"],
                                          temperature=1.7)
    assert resp.choices[0].message.content == "Fake answer"
    assert resp.choices[0].finish_reason == "length"
    body = basic.anthropic_fake.last()["body"]
    assert body["max_tokens"] == 2
    assert body["stop_sequences"] == ["END"]
    assert body["temperature"] == 1.0, "OpenAI's 0-2 range is clamped to Anthropic's 0-1"


def test_streaming_translated(client, basic):
    full = client.chat.completions.create(model="claude-test", messages=messages())
    stream = client.chat.completions.create(
        model="claude-test", messages=messages(), stream=True, stream_options={"include_usage": True}
    )
    text, chunks = collect_stream(stream)

    assert text == full.choices[0].message.content == answer_to(PROMPT)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.prompt_tokens == full.usage.prompt_tokens
    assert last.usage.completion_tokens == full.usage.completion_tokens
    assert basic.anthropic_fake.last()["body"]["stream"] is True


def test_tools_translated_non_streamed_and_tool_result_turn(client, basic):
    question = "Weather in Rome"
    resp = client.chat.completions.create(
        model="claude-test", messages=messages(question), tools=[WEATHER_TOOL], tool_choice="required"
    )
    sent = basic.anthropic_fake.last()["body"]
    fn = WEATHER_TOOL["function"]
    assert sent["tools"] == [
        {"name": fn["name"], "description": fn["description"], "input_schema": fn["parameters"]}
    ]
    assert sent["tool_choice"] == {"type": "any"}

    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": question, "unit": question}
    assert call.id

    follow_up = client.chat.completions.create(
        model="claude-test",
        messages=messages(question)
        + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "Cloudy, 18 C"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert follow_up.choices[0].finish_reason == "stop"
    assert follow_up.choices[0].message.content == answer_to("tool result Cloudy, 18 C")

    body = basic.anthropic_fake.last()["body"]
    assert body["system"] == SYSTEM
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": question}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": call.id, "name": "get_weather",
             "input": {"city": question, "unit": question}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "Cloudy, 18 C"}]},
    ]


def test_tools_translated_streamed(client, basic):
    question = "Weather in Lima"
    stream = client.chat.completions.create(
        model="claude-test", messages=messages(question), tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True,
    )
    _, chunks = collect_stream(stream)
    assert basic.anthropic_fake.last()["body"]["tool_choice"] == {"type": "tool", "name": "get_weather"}
    calls = reassemble_tool_calls(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": question, "unit": question}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


def test_image_data_url_becomes_base64_image_block(client, basic):
    content = [
        {"type": "text", "text": "Describe this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    resp = client.chat.completions.create(model="claude-test", messages=[{"role": "user", "content": content}])
    assert resp.choices[0].message.content == answer_to("Describe this [image]")
    assert basic.anthropic_fake.last()["body"]["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Describe this"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        ]}
    ]
