"""The response cache's exact tier through the official SDK and raw HTTP:
a repeated request is answered from the cache without reaching the
upstream; field order does not matter; anything that changes the answer
misses; the request controls and TTL work; streams, hot temperatures and
failed answers are never served from it. (The fake upstream answers each
prompt the same way every time, so a hit is told apart by the upstream's
request count and the `x-switchyard-cache` header, not by the text.)
Streamed answers are stored once complete and replayed as streams."""

from __future__ import annotations

import signal
import time

import openai
import pytest

from harness import answer_to, fault_status, model_group, openai_provider, section

Q = [{"role": "user", "content": "What is the boiling point of water?"}]


@pytest.fixture
def env(launch):
    fake = launch.fake()
    config = (
        section("retry", max_retries=0, backoff_base_ms=1, backoff_max_ms=2)
        + section("cache", enabled=True, ttl_secs=60)
        + openai_provider("oai", fake)
        + model_group("gpt-test", {"provider": "oai", "model": "fake-gpt-upstream"})
    )
    gw = launch.gateway(config)
    return gw, fake, gw.client()


def ask(client, headers=None, **kw):
    kw.setdefault("messages", Q)
    return client.chat.completions.with_raw_response.create(model="gpt-test", extra_headers=headers, **kw)


def test_a_repeat_is_answered_from_the_exact_tier(env):
    gw, fake, client = env
    first = ask(client)
    assert first.headers["x-switchyard-cache"] == "miss"
    assert first.headers["x-switchyard-backend"] == "oai/fake-gpt-upstream"
    second = ask(client)
    assert second.headers["x-switchyard-cache"] == "hit-exact"
    assert second.headers["x-switchyard-backend"] == "cache"
    assert len(fake.requests()) == 1, "the hit never reached the upstream"
    a, b = first.parse(), second.parse()
    assert b.choices[0].message.content == answer_to(Q[0]["content"])
    assert b.model_dump() == a.model_dump(), "the stored answer, usage included, unchanged"
    log = gw.request_log(second.headers["x-request-id"])
    assert log["cache"] == "hit-exact" and log["deployment"] == "cache"


def test_field_order_and_whitespace_do_not_matter(env):
    gw, fake, client = env
    ask(client, temperature=0.2, max_tokens=50)
    body = {"max_tokens": 50, "temperature": 0.2, "messages": [{"content": Q[0]["content"], "role": "user"}],
            "model": "gpt-test"}
    r = gw.http("POST", "/v1/chat/completions", body)
    assert r.status == 200
    assert r.headers["x-switchyard-cache"] == "hit-exact"
    assert len(fake.requests()) == 1


def test_whatever_changes_the_answer_misses(env):
    _, fake, client = env
    ask(client)
    variants = [
        dict(messages=[{"role": "user", "content": "What is the boiling point of ethanol?"}]),
        dict(messages=[{"role": "system", "content": "Answer in French."}] + Q),
        dict(temperature=0.5),
        dict(seed=7),
        dict(max_tokens=1000),
        dict(response_format={"type": "json_object"}),
    ]
    for kw in variants:
        assert ask(client, **kw).headers["x-switchyard-cache"] == "miss", kw
    assert len(fake.requests()) == 1 + len(variants)


def test_no_store_and_no_cache_controls(env):
    _, fake, client = env
    assert ask(client, {"x-switchyard-cache": "no-store"}).headers["x-switchyard-cache"] == "bypass"
    assert ask(client).headers["x-switchyard-cache"] == "miss", "no-store stored nothing"
    assert ask(client, {"Cache-Control": "no-cache"}).headers["x-switchyard-cache"] == "miss"
    assert ask(client, {"x-switchyard-cache": "refresh"}).headers["x-switchyard-cache"] == "miss"
    assert ask(client).headers["x-switchyard-cache"] == "hit-exact"
    assert len(fake.requests()) == 4


def test_ttl_header_bounds_how_long_an_answer_is_kept(env):
    _, fake, client = env
    assert ask(client, {"x-switchyard-cache-ttl": "0"}).headers["x-switchyard-cache"] == "miss"
    assert ask(client, {"x-switchyard-cache-ttl": "1"}).headers["x-switchyard-cache"] == "miss"
    assert ask(client).headers["x-switchyard-cache"] == "hit-exact"
    time.sleep(2.1)
    assert ask(client).headers["x-switchyard-cache"] == "miss", "expired"
    assert len(fake.requests()) == 3


def test_streamed_answers_are_stored_and_replayed(env):
    _, fake, client = env
    streamed = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=Q, stream=True, stream_options={"include_usage": True})
    assert streamed.headers["x-switchyard-cache"] == "miss"
    text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    assert text == answer_to(Q[0]["content"])
    # Stored once the stream ended: a plain request now hits...
    plain = ask(client)
    assert plain.headers["x-switchyard-cache"] == "hit-exact"
    assert plain.parse().choices[0].message.content == text
    assert plain.parse().choices[0].finish_reason == "stop"
    assert plain.parse().usage.completion_tokens > 0
    # ...and a streamed one is replayed as a stream the SDK parses, usage
    # included when asked for.
    replay = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=Q, stream=True, stream_options={"include_usage": True})
    assert replay.headers["x-switchyard-cache"] == "hit-exact"
    assert replay.headers["content-type"].startswith("text/event-stream")
    chunks = list(replay.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len(fake.requests()) == 1


def test_an_abandoned_stream_is_not_stored(launch):
    slow = launch.fake(token_delay_ms=50)
    gw = launch.gateway(
        section("cache", enabled=True, ttl_secs=60)
        + openai_provider("oai", slow)
        + model_group("gpt-test", {"provider": "oai", "model": "fake-gpt-upstream"})
    )
    client = gw.client()
    stream = client.chat.completions.create(model="gpt-test", messages=Q, stream=True)
    next(iter(stream))
    stream.close()
    time.sleep(0.5)
    assert ask(client).headers["x-switchyard-cache"] == "miss"


def test_hot_temperatures_bypass(env):
    _, fake, client = env
    for _ in range(2):
        assert ask(client, temperature=1.5).headers["x-switchyard-cache"] == "bypass"
    assert len(fake.requests()) == 2


def test_failed_answers_are_not_stored(env):
    _, fake, client = env
    fake.push_faults(fault_status(500))
    with pytest.raises(openai.InternalServerError):
        ask(client)
    assert ask(client).headers["x-switchyard-cache"] == "miss"
    assert ask(client).headers["x-switchyard-cache"] == "hit-exact"


def test_bad_control_headers_are_400(env):
    _, fake, client = env
    for headers in ({"x-switchyard-cache": "sometimes"}, {"x-switchyard-cache-ttl": "forever"}):
        with pytest.raises(openai.BadRequestError) as e:
            ask(client, headers)
        assert "x-switchyard-cache" in str(e.value)
    assert fake.requests() == []


def test_off_unless_enabled(client):
    raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=Q)
    assert "x-switchyard-cache" not in raw.headers


# --------------------------------------------------------------------------
# The semantic tier: the real embedding model and the real qdrant-edge store
# --------------------------------------------------------------------------

from test_local_embeddings import MODEL, local_model  # noqa: E402


def semantic_config(fake, cache_dir, **cache) -> str:
    fields = dict(enabled=True, ttl_secs=600, embedding_model=MODEL, dir=str(cache_dir),
                  lookup_budget_ms=5000)
    fields.update(cache)
    return (
        section("retry", max_retries=0, backoff_base_ms=1, backoff_max_ms=2)
        + section("cache", **fields)
        + local_model()
        + openai_provider("oai", fake)
        + model_group("gpt-test", {"provider": "oai", "model": "fake-gpt-upstream"})
    )


def until_cache(client, status: str, messages, headers=None, timeout: float = 10.0):
    """Ask until the answer's x-switchyard-cache is `status` (answers are
    stored in the vector store in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        raw = ask(client, headers, messages=messages)
        if raw.headers["x-switchyard-cache"] == status or time.monotonic() > deadline:
            return raw
        time.sleep(0.05)


def user(text):
    return [{"role": "user", "content": text}]


@pytest.fixture
def sem(launch, tmp_path):
    fake = launch.fake()
    gw = launch.gateway(semantic_config(fake, tmp_path / "cache"))
    return gw, fake, gw.client()


def test_a_paraphrase_is_answered_by_the_semantic_tier(sem):
    gw, fake, client = sem
    first = ask(client, messages=user("What is the boiling point of water?"))
    assert first.headers["x-switchyard-cache"] == "miss"
    hit = until_cache(client, "hit-semantic", user("what's the boiling point of water"))
    assert hit.headers["x-switchyard-cache"] == "hit-semantic"
    assert hit.headers["x-switchyard-backend"] == "cache"
    assert float(hit.headers["x-switchyard-cache-similarity"]) >= 0.6
    assert hit.parse().choices[0].message.content == answer_to("What is the boiling point of water?")
    log = gw.request_log(hit.headers["x-request-id"])
    assert log["cache"] == "hit-semantic"


def test_a_changed_specific_is_not_a_hit(sem):
    _, fake, client = sem
    ask(client, messages=user("Convert 10 km to miles"))
    until_cache(client, "hit-semantic", user("convert 10 km to miles please"))
    for other in ("Convert 10 miles to km", "Convert 12 km to miles", "Convert 10 km to meters"):
        raw = ask(client, messages=user(other))
        assert raw.headers["x-switchyard-cache"] == "miss", other
        assert raw.parse().choices[0].message.content == answer_to(other)


def test_another_scope_is_never_searched(sem):
    _, fake, client = sem
    ask(client, messages=user("What is the boiling point of water?"))
    until_cache(client, "hit-semantic", user("what's the boiling point of water"))
    other_system = [{"role": "system", "content": "Answer like a pirate."}] + user("What is the boiling point of water?")
    assert ask(client, messages=other_system).headers["x-switchyard-cache"] == "miss"
    assert ask(client, messages=user("What is the boiling point of water?"), temperature=0.3).headers[
        "x-switchyard-cache"] == "miss"


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_entries_survive_a_restart(launch, tmp_path, stop):
    fake = launch.fake()
    config = semantic_config(fake, tmp_path / "cache")
    first = launch.gateway(config)
    c1 = first.client()
    ask(c1, messages=user("How do I reverse a list in Python?"))
    until_cache(c1, "hit-semantic", user("how do i reverse a list in python"))
    if stop == "sigterm":
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait_exit(10) == 0
    else:
        time.sleep(1.5)  # one flush interval (a crash loses at most one)
        first.process.kill()
    second = launch.gateway(config)
    c2 = second.client()
    again = ask(c2, messages=user("How do I reverse a list in Python?"))
    assert again.headers["x-switchyard-cache"] == "hit-exact", "the same request, from the store"
    para = ask(c2, messages=user("how do i reverse a list in python"))
    assert para.headers["x-switchyard-cache"] == "hit-semantic"
    assert len(fake.requests()) == 1


def test_a_lookup_over_budget_fails_open(launch, tmp_path):
    fake = launch.fake()
    gw = launch.gateway(semantic_config(fake, tmp_path / "cache", lookup_budget_ms=0))
    client = gw.client()
    for _ in range(3):
        raw = ask(client, messages=user("What is the boiling point of water?"))
        assert raw.status_code == 200
        # The exact tier still answers; only the semantic lookup is skipped.
        assert raw.headers["x-switchyard-cache"] in ("miss", "hit-exact")
    raw = ask(client, messages=user("what's the boiling point of water"))
    assert raw.headers["x-switchyard-cache"] == "miss"
    assert raw.parse().choices[0].message.content == answer_to("what's the boiling point of water")
