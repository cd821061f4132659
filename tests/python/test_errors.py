"""Errors as the SDK sees them: exception class, status, OpenAI-shaped body
(`message`, `type`, `param`, `code`)."""

from __future__ import annotations

import time

import openai
import pytest

from harness import (
    PROVIDER_KEY_ENV,
    fault_status,
    model_group,
    openai_provider,
    section,
)

HI = [{"role": "user", "content": "hi"}]
FAST_RETRY = section("retry", backoff_base_ms=10, backoff_max_ms=50)


def assert_openai_error_body(body: dict, *, type_: str, code: str | None, param: str | None = None):
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == type_
    assert err["code"] == code
    assert err["param"] == param


def one_deployment_gateway(launch, fake, *, extra: str = "", deployment: dict | None = None, env=None):
    dep = {"provider": "up", "model": "upstream-model", "id": "only"}
    dep.update(deployment or {})
    return launch.gateway(extra + openai_provider("up", fake) + model_group("m", dep), env=env)


# ---------------------------------------------------------------- validation


def test_unknown_model_is_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-nope", messages=HI)
    e = exc.value
    assert e.status_code == 404
    assert e.code == "model_not_found"
    assert e.param == "model"
    assert e.type == "invalid_request_error"
    assert "gpt-nope" in e.message
    assert e.request_id, "error responses carry x-request-id too"


def test_malformed_json_is_400_openai_shaped(basic):
    r = basic.gateway.http("POST", "/v1/chat/completions", b'{"model": "gpt-test", "messages": [',
                           headers={"content-type": "application/json"})
    assert r.status == 400
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id")
    assert_openai_error_body(r.json(), type_="invalid_request_error", code=None)
    assert "JSON" in r.json()["error"]["message"]


def test_json_that_is_not_an_object_is_400(basic):
    r = basic.gateway.http("POST", "/v1/chat/completions", [1, 2, 3])
    assert r.status == 400
    assert_openai_error_body(r.json(), type_="invalid_request_error", code=None)


def test_messages_of_wrong_type_names_the_field(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-test", messages=HI, extra_body={"messages": "hello"})
    e = exc.value
    assert e.status_code == 400
    assert e.param == "messages"
    assert e.code == "invalid_value"
    assert "messages" in e.message


def test_wrong_type_of_optional_field_names_the_field(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-test", messages=HI, extra_body={"temperature": "hot"})
    assert exc.value.param == "temperature"


def test_out_of_range_temperature_is_400(client, basic):
    before = len(basic.openai_fake.requests())
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-test", messages=HI, temperature=3.5)
    assert exc.value.param == "temperature"
    assert len(basic.openai_fake.requests()) == before, "invalid requests never reach the upstream"


def test_missing_messages_is_400(basic):
    r = basic.gateway.http("POST", "/v1/chat/completions", {"model": "gpt-test"})
    assert r.status == 400
    assert_openai_error_body(r.json(), type_="invalid_request_error", code="invalid_value", param="messages")


def test_empty_messages_is_400(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-test", messages=[])
    assert exc.value.param == "messages"


def test_unknown_route_and_wrong_method_are_openai_shaped(basic):
    r = basic.gateway.http("GET", "/v1/nope")
    assert r.status == 404
    assert_openai_error_body(r.json(), type_="invalid_request_error", code="unknown_url")
    r = basic.gateway.http("GET", "/v1/chat/completions")
    assert r.status == 405
    assert_openai_error_body(r.json(), type_="invalid_request_error", code="method_not_allowed")


@pytest.fixture
def limited(launch):
    fake = launch.fake()
    gw = one_deployment_gateway(
        launch, fake, extra=section("server", max_body_bytes=2048, max_messages=3, max_n=2)
    )
    return fake, gw


def test_body_too_large_is_413(limited):
    fake, gw = limited
    with pytest.raises(openai.APIStatusError) as exc:
        gw.client().chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 10_000}])
    e = exc.value
    assert e.status_code == 413
    assert e.code == "request_too_large"
    assert e.type == "invalid_request_error"
    assert "2048" in e.message
    # The rest of the body was never read: the connection is closed, and
    # the response says so (test_auth.py explains why it matters).
    assert e.response.headers.get("connection") == "close"
    assert fake.requests() == []


def test_too_many_messages_is_400(limited):
    fake, gw = limited
    msgs = [{"role": "user", "content": f"m{i}"} for i in range(4)]
    with pytest.raises(openai.BadRequestError) as exc:
        gw.client().chat.completions.create(model="m", messages=msgs)
    assert exc.value.code == "too_many_messages"
    assert exc.value.param == "messages"
    # The limit itself is allowed.
    ok = gw.client().chat.completions.create(model="m", messages=msgs[:3])
    assert ok.choices[0].message.content == "Fake answer to: m2"


def test_n_above_limit_is_400(limited):
    _, gw = limited
    with pytest.raises(openai.BadRequestError) as exc:
        gw.client().chat.completions.create(model="m", messages=HI, n=3)
    assert exc.value.param == "n"


# ---------------------------------------------------------------- upstream


def test_upstream_400_message_passes_through_without_retry_or_fallback(launch):
    a, b = launch.fake(), launch.fake()
    gw = launch.gateway(
        FAST_RETRY + openai_provider("a", a) + openai_provider("b", b)
        + model_group("m", {"provider": "a", "model": "ma", "id": "A"}, {"provider": "b", "model": "mb", "id": "B"})
    )
    a.push_faults(fault_status(400, message="Unsupported value: 'frobnicate' is not allowed here"))
    with pytest.raises(openai.BadRequestError) as exc:
        gw.client().chat.completions.create(model="m", messages=HI)
    assert exc.value.status_code == 400
    assert "Unsupported value: 'frobnicate' is not allowed here" in exc.value.message
    assert len(a.requests()) == 1, "a request the upstream rejected is not retried"
    assert b.requests() == [], "... nor sent to a fallback"


def test_upstream_401_is_502_and_never_leaks_the_key(launch):
    wrong_key = "sk-wrong-secret-key-1234567890"
    fake = launch.fake(api_key_env="FAKE_REQUIRED_KEY", env={"FAKE_REQUIRED_KEY": "sk-the-right-key-abcdef"})
    gw = one_deployment_gateway(launch, fake, extra=FAST_RETRY, env={PROVIDER_KEY_ENV: wrong_key})
    with pytest.raises(openai.InternalServerError) as exc:
        gw.client().chat.completions.create(model="m", messages=HI)
    e = exc.value
    assert e.status_code == 502
    assert e.code == "upstream_auth_failed"
    assert e.type == "upstream_error"
    assert wrong_key not in e.message
    assert wrong_key not in e.response.text
    assert fake.last()["headers"]["authorization"] == f"Bearer {wrong_key}", "the fake really saw the wrong key"
    assert len(fake.requests()) == 1, "bad credentials are not retried"
    gw.request_log(e.request_id)
    assert wrong_key not in "\n".join(gw.process.lines), "the key must not appear in the gateway's logs"


def test_upstream_500_on_every_attempt_is_502(launch):
    fake = launch.fake()
    gw = one_deployment_gateway(launch, fake, extra=FAST_RETRY)
    fake.push_faults(*[fault_status(500)] * 3)
    with pytest.raises(openai.InternalServerError) as exc:
        gw.client().chat.completions.create(model="m", messages=HI)
    e = exc.value
    assert e.status_code == 502
    assert e.code == "upstream_error"
    assert "500" in e.message and "only" in e.message, "the message names the status and the deployment"
    assert len(fake.requests()) == 3, "first attempt + 2 retries (the default)"
    assert gw.request_log(e.request_id)["attempts"] == 3


def test_upstream_429_after_retries_is_429(launch):
    fake = launch.fake()
    gw = one_deployment_gateway(launch, fake, extra=FAST_RETRY)
    fake.push_faults(*[fault_status(429)] * 3)
    with pytest.raises(openai.RateLimitError) as exc:
        gw.client().chat.completions.create(model="m", messages=HI)
    e = exc.value
    assert e.status_code == 429
    assert e.code == "upstream_rate_limited"
    assert e.type == "rate_limit_error"
    assert len(fake.requests()) == 3


def test_final_429_carries_the_upstreams_retry_after(launch):
    fake = launch.fake()
    gw = one_deployment_gateway(launch, fake, deployment={"retry": {"max_retries": 0}})
    fake.push_faults(fault_status(429, retry_after_secs=7))
    with pytest.raises(openai.RateLimitError) as exc:
        gw.client().chat.completions.create(model="m", messages=HI)
    assert exc.value.response.headers.get("retry-after") == "7"


def test_time_to_first_token_timeout_is_504(launch):
    fake = launch.fake()
    gw = one_deployment_gateway(
        launch, fake, deployment={"timeouts": {"ttft_ms": 300}, "retry": {"max_retries": 0}}
    )
    fake.push_faults({"kind": "slow_first_byte", "delay_ms": 3000})
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        gw.client().chat.completions.create(model="m", messages=HI)
    elapsed = time.monotonic() - started
    assert exc.value.status_code == 504
    assert exc.value.code == "upstream_timeout"
    assert elapsed < 2.5, f"the gateway gave up after the ttft limit, not the upstream's delay ({elapsed:.2f}s)"
