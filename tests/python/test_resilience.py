"""Injected upstream faults and what the client notices: retries, fallback,
mid-stream failures and the circuit breaker."""

from __future__ import annotations

import time

import openai
import pytest

from harness import (
    MASTER_KEY,
    MASTER_KEY_ENV,
    answer_to,
    fault_status,
    model_group,
    openai_provider,
    section,
)

HI = [{"role": "user", "content": "hi"}]
FAST_RETRY_FIELDS = {"backoff_base_ms": 10, "backoff_max_ms": 50}
FAST_RETRY = section("retry", **FAST_RETRY_FIELDS)


@pytest.fixture
def single(launch):
    """One deployment `only` on its own fake."""
    fake = launch.fake()
    gw = launch.gateway(FAST_RETRY + openai_provider("up", fake)
                        + model_group("m", {"provider": "up", "model": "upstream-model", "id": "only"}))
    return fake, gw


def two_deployments(launch, a_fields: dict | None = None, extra: str = "", env: dict | None = None,
                    retry: dict | None = None):
    a, b = launch.fake(), launch.fake()
    dep_a = {"provider": "pa", "model": "model-a", "id": "A", **(a_fields or {})}
    retry_section = section("retry", **{**FAST_RETRY_FIELDS, **(retry or {})})
    gw = launch.gateway(
        extra + retry_section + openai_provider("pa", a) + openai_provider("pb", b)
        + model_group("m", dep_a, {"provider": "pb", "model": "model-b", "id": "B"}),
        env=env,
    )
    return a, b, gw


def test_single_500_is_retried(single):
    fake, gw = single
    fake.push_faults(fault_status(500))
    raw = gw.client().chat.completions.with_raw_response.create(model="m", messages=HI)
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content == answer_to("hi")
    assert raw.headers["x-switchyard-backend"] == "only"
    assert len(fake.requests()) == 2
    assert gw.request_log(raw.headers["x-request-id"])["attempts"] == 2


def test_429_retry_after_is_honoured(single):
    fake, gw = single
    fake.push_faults(fault_status(429, retry_after_secs=1))
    started = time.monotonic()
    resp = gw.client().chat.completions.create(model="m", messages=HI)
    elapsed = time.monotonic() - started
    assert resp.choices[0].message.content == answer_to("hi")
    assert elapsed >= 1.0, f"retried after {elapsed:.2f}s, before the upstream's retry-after"
    assert elapsed < 4.0
    assert len(fake.requests()) == 2


def test_retry_after_beyond_limit_falls_back_at_once(launch):
    a, b, gw = two_deployments(launch, retry={"max_retry_after_ms": 500})
    a.push_faults(fault_status(429, retry_after_secs=30))
    started = time.monotonic()
    raw = gw.client().chat.completions.with_raw_response.create(model="m", messages=HI)
    assert raw.headers["x-switchyard-backend"] == "B"
    assert time.monotonic() - started < 2.0, "a long retry-after is not waited out"
    assert len(a.requests()) == 1


def test_connection_reset_is_retried(single):
    fake, gw = single
    fake.push_faults({"kind": "reset"})
    raw = gw.client().chat.completions.with_raw_response.create(model="m", messages=HI)
    assert raw.parse().choices[0].message.content == answer_to("hi")
    # The reset attempt never reached the fake's handler, so only the log knows.
    assert gw.request_log(raw.headers["x-request-id"])["attempts"] == 2
    assert len(fake.requests()) == 1


def test_streamed_request_is_retried_before_first_byte(single):
    fake, gw = single
    fake.push_faults(fault_status(503))
    stream = gw.client().chat.completions.create(model="m", messages=HI, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer_to("hi")
    assert len(fake.requests()) == 2


def test_slow_first_byte_falls_back_to_next_deployment(launch):
    a, b, gw = two_deployments(launch, {"timeouts": {"ttft_ms": 400}, "retry": {"max_retries": 0}})
    a.push_faults({"kind": "slow_first_byte", "delay_ms": 3000})
    started = time.monotonic()
    raw = gw.client().chat.completions.with_raw_response.create(model="m", messages=HI)
    elapsed = time.monotonic() - started
    assert raw.headers["x-switchyard-backend"] == "B"
    assert raw.parse().choices[0].message.content == answer_to("hi")
    assert b.last()["body"]["model"] == "model-b"
    assert elapsed < 2.5, f"fell back after {elapsed:.2f}s"
    # Time spent waiting on A is upstream time, not gateway overhead.
    assert float(raw.headers["x-switchyard-overhead-ms"]) < 300


def test_upstream_500s_fall_back_to_next_deployment(launch):
    a, b, gw = two_deployments(launch)
    a.push_faults(*[fault_status(500)] * 3)
    raw = gw.client().chat.completions.with_raw_response.create(model="m", messages=HI)
    assert raw.headers["x-switchyard-backend"] == "B"
    assert len(a.requests()) == 3 and len(b.requests()) == 1


def test_stream_dropped_mid_way_raises_in_the_sdk(single):
    fake, gw = single
    fake.push_faults({"kind": "drop_mid_stream", "after_chunks": 3})
    stream = gw.client().chat.completions.create(model="m", messages=[{"role": "user", "content": "a b c d e"}],
                                                 stream=True)
    received = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert not isinstance(exc.value, openai.APIConnectionError), (
        "the gateway must end the stream with an error event, not a broken connection"
    )
    assert "".join(received) == "Fake answer", "chunks before the failure were delivered"
    assert exc.value.code and exc.value.code.startswith("upstream_")
    assert "only" in exc.value.message
    assert len(fake.requests()) == 1, "no retry once the first byte reached the client"


def test_stream_cut_by_total_timeout_raises_in_the_sdk(launch):
    fake = launch.fake(token_delay_ms=100)
    gw = launch.gateway(openai_provider("up", fake) + model_group(
        "m", {"provider": "up", "model": "x", "id": "slow", "timeouts": {"ttft_ms": 500, "total_ms": 600}}))
    stream = gw.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "a b c d e f g h i j k l"}], stream=True)
    received = []
    started = time.monotonic()
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert not isinstance(exc.value, openai.APIConnectionError)
    assert exc.value.code == "upstream_timeout"
    assert 0 < len("".join(received).split()) < 15, "part of the answer arrived before the cut"
    assert time.monotonic() - started < 3.0


def test_circuit_breaker_opens_and_skips_failing_deployment(launch):
    a, b, gw = two_deployments(
        launch,
        {"retry": {"max_retries": 0}},
        extra=section("auth", master_key={"env": MASTER_KEY_ENV})
        + section("breaker", failure_threshold=2, open_ms=60000),
        env={MASTER_KEY_ENV: MASTER_KEY},
    )
    a.push_faults(*[fault_status(500)] * 10)
    client = gw.client(api_key=MASTER_KEY)

    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="m", messages=HI)
        assert raw.headers["x-switchyard-backend"] == "B"
    assert len(a.requests()) == 2

    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="m", messages=HI)
        assert raw.headers["x-switchyard-backend"] == "B"
        assert gw.request_log(raw.headers["x-request-id"])["attempts"] == 1, "A is not even tried"
    assert len(a.requests()) == 2, "an open breaker keeps requests away from A"
    assert len(b.requests()) == 5

    r = gw.http("GET", "/admin/deployments", headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert r.status == 200
    (group,) = r.json()["model_groups"]
    breakers = {d["id"]: d["breaker"] for d in group["deployments"]}
    assert breakers["A"]["state"] == "open"
    assert breakers["A"]["consecutive_failures"] >= 2
    assert 0 < breakers["A"]["reopens_in_ms"] <= 60000
    assert breakers["B"]["state"] == "closed"


def test_all_breakers_open_is_503_with_retry_after(launch):
    fake = launch.fake()
    gw = launch.gateway(FAST_RETRY + section("breaker", failure_threshold=1, open_ms=60000)
                        + openai_provider("up", fake)
                        + model_group("m", {"provider": "up", "model": "x", "id": "only",
                                            "retry": {"max_retries": 0}}))
    fake.push_faults(fault_status(500))
    client = gw.client()
    with pytest.raises(openai.InternalServerError) as first:
        client.chat.completions.create(model="m", messages=HI)
    assert first.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="m", messages=HI)
    assert exc.value.status_code == 503
    assert exc.value.code == "no_healthy_deployment"
    assert int(exc.value.response.headers["retry-after"]) >= 1
    assert len(fake.requests()) == 1
