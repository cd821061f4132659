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

import json
import subprocess

from harness import (MASTER_KEY, MASTER_KEY_ENV, answer_to, child_env, fault_status, model_group,
                     openai_provider, section, switchyard_bin)

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
    kw.setdefault("model", "gpt-test")
    return client.chat.completions.with_raw_response.create(extra_headers=headers, **kw)


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
    # Expiry is kept in whole seconds: start early in a second so the
    # repeat lands in the same one.
    time.sleep((1.15 - time.time() % 1.0) % 1.0)
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


def semantic_config(fake, cache_dir, groups: dict[str, dict | None] | None = None, auth: bool = False,
                    **cache) -> str:
    """A gateway with the semantic tier; `groups` maps each model group to
    its `[model_groups.cache]` overrides (default: one plain `gpt-test`)."""
    fields = dict(enabled=True, ttl_secs=600, embedding_model=MODEL, dir=str(cache_dir),
                  lookup_budget_ms=5000)
    fields.update(cache)
    groups = groups or {"gpt-test": None}
    return (
        (section("auth", master_key={"env": MASTER_KEY_ENV}) if auth else "")
        + section("retry", max_retries=0, backoff_base_ms=1, backoff_max_ms=2)
        + section("cache", **fields)
        + local_model()
        + openai_provider("oai", fake)
        + "".join(model_group(name, {"provider": "oai", "model": "fake-gpt-upstream"}, cache=overrides)
                  for name, overrides in groups.items())
    )


def until_semantic_hit(client, messages, headers=None, timeout: float = 10.0, model="gpt-test"):
    """Ask until the answer is a semantic hit. The earlier answer reaches
    the vector store in the background, so a probe can arrive first; the
    probes carry `x-switchyard-cache-ttl: 0` (look up, store nothing), or
    such a probe's own answer would be stored and every later probe would
    be an exact hit."""
    probe = {**(headers or {}), "x-switchyard-cache-ttl": "0"}
    deadline = time.monotonic() + timeout
    while True:
        raw = ask(client, probe, messages=messages, model=model)
        if raw.headers["x-switchyard-cache"] == "hit-semantic" or time.monotonic() > deadline:
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
    hit = until_semantic_hit(client, user("what's the boiling point of water"))
    assert hit.headers["x-switchyard-cache"] == "hit-semantic"
    assert hit.headers["x-switchyard-backend"] == "cache"
    assert float(hit.headers["x-switchyard-cache-similarity"]) >= 0.6
    assert hit.parse().choices[0].message.content == answer_to("What is the boiling point of water?")
    log = gw.request_log(hit.headers["x-request-id"])
    assert log["cache"] == "hit-semantic"
    # Each phase of every semantic lookup (the miss's and the hit's) is timed.
    from test_metrics import families, scrape, value
    fams = families(scrape(gw))
    for phase in ("embed", "search", "verify"):
        count = value(fams, "switchyard_cache_lookup_seconds", "switchyard_cache_lookup_seconds_count",
                      phase=phase)
        total = value(fams, "switchyard_cache_lookup_seconds", "switchyard_cache_lookup_seconds_sum",
                      phase=phase)
        assert count >= 2 and 0 < total < count * 5.0, (phase, count, total)


def test_a_changed_specific_is_not_a_hit(sem):
    _, fake, client = sem
    ask(client, messages=user("Convert 10 km to miles"))
    until_semantic_hit(client, user("convert 10 km to miles please"))
    for other in ("Convert 10 miles to km", "Convert 12 km to miles", "Convert 10 km to meters"):
        raw = ask(client, messages=user(other))
        assert raw.headers["x-switchyard-cache"] == "miss", other
        assert raw.parse().choices[0].message.content == answer_to(other)


def test_another_scope_is_never_searched(sem):
    _, fake, client = sem
    ask(client, messages=user("What is the boiling point of water?"))
    until_semantic_hit(client, user("what's the boiling point of water"))
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
    until_semantic_hit(c1, user("how do i reverse a list in python"))
    if stop == "sigterm":
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait_exit(10) == 0
    else:
        # The store is flushed every second and a crash loses what came
        # after the last flush: wait past two flushes, with room for a slow one.
        time.sleep(3.0)
        first.process.kill()
    second = launch.gateway(config)
    c2 = second.client()
    again = ask(c2, messages=user("How do I reverse a list in Python?"))
    assert again.headers["x-switchyard-cache"] == "hit-exact", "the same request, from the store"
    para = ask(c2, messages=user("how do i reverse a list in python"))
    assert para.headers["x-switchyard-cache"] == "hit-semantic"
    assert len(fake.requests()) == 1


def test_long_prompts_use_the_exact_tier_only(sem):
    """Past 2,048 bytes the embedding model cannot see the whole text
    (256 tokens), so a long prompt's near-copy is no semantic hit."""
    gw, fake, client = sem
    long = "Please review the following deployment notes carefully. " * 38
    assert len(long.encode()) > 2048
    assert ask(client, messages=user(long)).headers["x-switchyard-cache"] == "miss"
    time.sleep(0.5)  # the store write is in the background
    assert ask(client, messages=user(long.lower())).headers["x-switchyard-cache"] == "miss"
    assert ask(client, messages=user(long)).headers["x-switchyard-cache"] == "hit-exact"
    # The same near-copy of a short prompt does hit.
    short = "Please review the following deployment notes carefully."
    ask(client, messages=user(short))
    assert until_semantic_hit(client, user(short.lower())).headers[
        "x-switchyard-cache"] == "hit-semantic"


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


# --------------------------------------------------------------------------
# Per-group settings, admin API and CLI, vector-store eviction
# --------------------------------------------------------------------------


def test_group_settings_override_the_cache_section(launch, tmp_path):
    fake = launch.fake()
    gw = launch.gateway(semantic_config(fake, tmp_path / "cache", groups={
        "gpt-test": None,
        "uncached": {"enabled": False},
        "exact-only": {"semantic": False},
        "short-lived": {"ttl_secs": 1},
        "strict": {"similarity": 0.99},
        "no-backstory": {"backstory": False},
    }))
    client = gw.client()
    water, paraphrase = user("What is the boiling point of water?"), user("what's the boiling point of water")
    for _ in range(2):
        assert ask(client, messages=water, model="uncached").headers["x-switchyard-cache"] == "bypass"
    assert ask(client, messages=water, model="exact-only").headers["x-switchyard-cache"] == "miss"
    assert ask(client, messages=water, model="exact-only").headers["x-switchyard-cache"] == "hit-exact"
    assert ask(client, messages=water, model="strict").headers["x-switchyard-cache"] == "miss"
    assert ask(client, messages=water, model="gpt-test").headers["x-switchyard-cache"] == "miss"
    # The default group's paraphrase hits once stored; the others' never do.
    until_semantic_hit(client, paraphrase)
    assert ask(client, messages=paraphrase, model="exact-only").headers["x-switchyard-cache"] == "miss"
    assert ask(client, messages=paraphrase, model="strict").headers["x-switchyard-cache"] == "miss"
    # A question after a backstory is the bare question, unless the group
    # compares prompts whole only.
    story = user("My neighbour gave me a jar of starter last weekend and I have never baked bread, "
                 "so I don't want to kill it. How do I feed a sourdough starter?")
    for model in ("gpt-test", "no-backstory"):
        assert ask(client, messages=story, model=model).headers["x-switchyard-cache"] == "miss"
    bare = user("How do I feed a sourdough starter?")
    hit = until_semantic_hit(client, bare)
    assert hit.parse().choices[0].message.content == answer_to(story[0]["content"])
    # (The story is in that group's store: its own rewording hits.)
    reworded = user(story[0]["content"].lower().replace(",", ""))
    assert until_semantic_hit(client, reworded, model="no-backstory").headers[
        "x-switchyard-cache"] == "hit-semantic"
    assert ask(client, messages=bare, model="no-backstory").headers["x-switchyard-cache"] == "miss"
    # Expiry is kept in whole seconds: a one-second TTL stored just before a
    # second ticks over has expired by the next request. Start early in a
    # second so the repeat lands in the same one.
    time.sleep((1.15 - time.time() % 1.0) % 1.0)
    assert ask(client, messages=water, model="short-lived").headers["x-switchyard-cache"] == "miss"
    assert ask(client, messages=water, model="short-lived").headers["x-switchyard-cache"] == "hit-exact"
    time.sleep(2.1)
    assert ask(client, messages=water, model="short-lived").headers["x-switchyard-cache"] == "miss"
    assert ask(client, messages=water, model="gpt-test").headers["x-switchyard-cache"] == "hit-exact"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(switchyard_bin()), "cache", *args], capture_output=True, text=True,
                          timeout=60, env=child_env({MASTER_KEY_ENV: MASTER_KEY}))


def test_stats_and_purge_through_the_admin_api_and_cli(launch, tmp_path):
    fake = launch.fake()
    gw = launch.gateway(semantic_config(fake, tmp_path / "cache", auth=True,
                                        groups={"gpt-test": None, "gpt-other": None}),
                        env={MASTER_KEY_ENV: MASTER_KEY})
    client = gw.client(api_key=MASTER_KEY)
    water, paraphrase = user("What is the boiling point of water?"), user("what's the boiling point of water")
    for model in ("gpt-test", "gpt-other"):
        ask(client, messages=water, model=model)
        until_semantic_hit(client, paraphrase, model=model)
        ask(client, messages=water, model=model)
    auth = {"authorization": f"Bearer {MASTER_KEY}"}
    r = gw.http("GET", "/admin/cache/stats", headers=auth)
    assert r.status == 200, r
    stats = r.json()
    assert stats["enabled"] is True
    assert stats["hits_semantic"] == 2 and stats["hits_exact"] == 2
    assert stats["misses"] >= 2 and stats["fail_open"] == 0
    assert stats["memory"]["entries"] == 2 and stats["memory"]["bytes"] > 0
    assert stats["store"]["entries"] == 2 and stats["store"]["disk_bytes"] > 0
    # The CLI reads the same endpoint.
    out = cli("stats", "--url", gw.url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["store"]["entries"] == 2
    # Purge one model group: its answers go from both tiers, the other's stay.
    out = cli("purge", "--model", "gpt-test", "--url", gw.url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"purged": {"memory": 1, "store": 1}}
    assert ask(client, messages=water, model="gpt-other").headers["x-switchyard-cache"] == "hit-exact"
    assert ask(client, messages=paraphrase, model="gpt-other").headers["x-switchyard-cache"] == "hit-semantic"
    assert ask(client, messages=paraphrase, model="gpt-test").headers["x-switchyard-cache"] == "miss"
    # By tenant (everything is the default tenant until virtual keys).
    r = gw.http("POST", "/admin/cache/purge", {"tenant": "default"}, headers=auth)
    assert r.status == 200 and r.json()["purged"]["memory"] >= 1 and r.json()["purged"]["store"] >= 1
    assert ask(client, messages=water, model="gpt-other").headers["x-switchyard-cache"] == "miss"
    # Bad requests and missing keys.
    r = gw.http("POST", "/admin/cache/purge", {"group": "x"}, headers=auth)
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert gw.http("GET", "/admin/cache/stats").status == 401
    out = subprocess.run([str(switchyard_bin()), "cache", "stats", "--url", gw.url], capture_output=True,
                         text=True, timeout=60, env=child_env({MASTER_KEY_ENV: "sk-wrong"}))
    assert out.returncode != 0 and "401" in out.stderr


def test_the_vector_store_evicts_the_least_recently_used(launch, tmp_path):
    fake = launch.fake()
    gw = launch.gateway(semantic_config(fake, tmp_path / "cache", auth=True, store_max_entries=2,
                                        store_sweep_secs=1), env={MASTER_KEY_ENV: MASTER_KEY})
    client = gw.client(api_key=MASTER_KEY)
    a = ("How do I reverse a list in Python?", "how do i reverse a list in python")
    b = ("What is the boiling point of water?", "what's the boiling point of water")
    c = ("Who wrote the novel Moby Dick?", "who wrote the novel moby dick")

    def store_entries():
        r = gw.http("GET", "/admin/cache/stats", headers={"authorization": f"Bearer {MASTER_KEY}"})
        return r.json()["store"]["entries"]

    ask(client, messages=user(a[0]))
    until_semantic_hit(client, user(a[1]))
    time.sleep(1.1)
    ask(client, messages=user(b[0]))
    until_semantic_hit(client, user(b[1]))
    time.sleep(1.1)
    # Serving a's paraphrase makes a more recently used than b.
    assert ask(client, messages=user(a[1])).headers["x-switchyard-cache"] == "hit-semantic"
    time.sleep(1.1)
    ask(client, messages=user(c[0]))
    until_semantic_hit(client, user(c[1]))
    deadline = time.monotonic() + 10
    while store_entries() != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store_entries() == 2, "a sweep cut the store back to store_max_entries"
    assert ask(client, messages=user(a[1])).headers["x-switchyard-cache"] == "hit-semantic"
    assert ask(client, messages=user(b[1])).headers["x-switchyard-cache"] == "miss", "b was evicted"


def test_an_unreachable_qdrant_server_fails_open(launch, tmp_path):
    # store = "qdrant" with nothing listening: the gateway starts, answers
    # every request (exact repeats still hit in memory), and counts the
    # failed semantic lookups.
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    fake = launch.fake()
    gw = launch.gateway(semantic_config(fake, tmp_path / "cache", auth=True, store="qdrant",
                                        qdrant_url=f"http://127.0.0.1:{dead}", lookup_budget_ms=2000),
                        env={MASTER_KEY_ENV: MASTER_KEY})
    client = gw.client(api_key=MASTER_KEY)
    water = user("What is the boiling point of water?")
    assert ask(client, messages=water).headers["x-switchyard-cache"] == "miss"
    assert ask(client, messages=water).headers["x-switchyard-cache"] == "hit-exact"
    para = ask(client, messages=user("what's the boiling point of water"))
    assert para.status_code == 200 and para.headers["x-switchyard-cache"] == "miss"
    stats = gw.http("GET", "/admin/cache/stats", headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert stats.status == 200, stats
    assert stats.json()["store"] is None and "vector store" in stats.json()["store_error"]
    assert stats.json()["fail_open"] == 2 and stats.json()["hits_exact"] == 1  # the miss and the paraphrase
    gw.process.wait_for_record(lambda r: "Qdrant server not ready" in r.get("message", ""), 10)


def test_a_copy_typed_in_a_hurry_hits_under_the_threshold_unless_audited(launch, tmp_path):
    """Heavy typos put a copy of a question far under the 0.60 threshold
    ("what causes earthquaks", 0.45); the verifier's typo-variant margin
    lets it hit. A group with audits on holds every hit to its threshold:
    there the same copy is neither a hit nor a near miss."""
    fake = launch.fake()
    gw = launch.gateway(semantic_config(fake, tmp_path / "cache", auth=True,
                                        groups={"gpt-test": None, "gpt-audited": {"audit_rate": 1.0}}),
                        env={MASTER_KEY_ENV: MASTER_KEY})
    client = gw.client(api_key=MASTER_KEY)
    auth = {"authorization": f"Bearer {MASTER_KEY}"}
    question, typed = "What causes earthquakes?", "what causes earthquaks"
    for model in ("gpt-test", "gpt-audited"):
        assert ask(client, messages=user(question), model=model).headers["x-switchyard-cache"] == "miss"
    deadline = time.monotonic() + 10
    while gw.http("GET", "/admin/cache/stats", headers=auth).json()["store"]["entries"] < 2:
        assert time.monotonic() < deadline, "the store never held both answers"
        time.sleep(0.02)
    hit = until_semantic_hit(client, user(typed))
    assert hit.headers["x-switchyard-cache"] == "hit-semantic"
    assert float(hit.headers["x-switchyard-cache-similarity"]) < 0.6
    assert hit.parse().choices[0].message.content == answer_to(question)
    audited = ask(client, messages=user(typed), model="gpt-audited")
    assert audited.headers["x-switchyard-cache"] == "miss"
    assert "x-switchyard-cache-audit" not in audited.headers
    assert audited.parse().choices[0].message.content == answer_to(typed)


def test_audits_answer_hits_fresh_and_a_disagreement_raises_the_groups_threshold(launch, tmp_path):
    """An audited group (audit_rate 1: every semantic hit is checked) with a
    strict agreement bar: the fake answers each prompt differently, so a
    paraphrase's answer disagrees with the cached one, and the threshold
    rises past that similarity. Answers equal but for case and punctuation
    agree."""
    fake = launch.fake()
    gw = launch.gateway(semantic_config(fake, tmp_path / "cache", auth=True, audit_rate=1.0,
                                        audit_agreement=0.999),
                        env={MASTER_KEY_ENV: MASTER_KEY})
    client = gw.client(api_key=MASTER_KEY)
    auth = {"authorization": f"Bearer {MASTER_KEY}"}

    def stats():
        r = gw.http("GET", "/admin/cache/stats", headers=auth)
        assert r.status == 200, r
        return r.json()

    def audits_after(n):
        deadline = time.monotonic() + 10
        while True:
            a = stats()["audits"]["gpt-test"]
            if a["agreed"] + a["disagreed"] >= n or time.monotonic() > deadline:
                return a
            time.sleep(0.02)

    def stored(n):
        deadline = time.monotonic() + 10
        while stats()["store"]["entries"] < n:
            assert time.monotonic() < deadline, f"the store never held {n} entries"
            time.sleep(0.02)

    a = stats()["audits"]["gpt-test"]
    assert a == {"rate": 1.0, "target_error_rate": 0.01, "configured_similarity": pytest.approx(0.6),
                 "similarity": pytest.approx(0.6), "agreed": 0, "disagreed": 0}
    water = "What is the boiling point of water?"
    paraphrase = "what's the boiling point of water"

    def pair(scope):
        system = {"role": "system", "content": scope}
        first = ask(client, messages=[system, {"role": "user", "content": water}])
        assert first.headers["x-switchyard-cache"] == "miss"
        assert "x-switchyard-cache-audit" not in first.headers
        return system

    # A semantic hit is answered fresh (the client gets the paraphrase's own
    # answer), and the two answers disagree.
    system = pair("scope one")
    stored(1)
    calls = len(fake.requests())
    raw = ask(client, messages=[system, {"role": "user", "content": paraphrase}])
    assert raw.headers["x-switchyard-cache"] == "miss"
    assert raw.headers["x-switchyard-cache-audit"] == "hit"
    assert raw.parse().choices[0].message.content == answer_to(paraphrase)
    assert len(fake.requests()) == calls + 1
    a = audits_after(1)
    assert (a["agreed"], a["disagreed"]) == (0, 1), a
    raised = a["similarity"]
    assert raised > 0.61, a
    # The same candidate in another scope is now below the threshold: a
    # near miss, compared too (at no extra cost: it was a miss anyway).
    system = pair("scope two")
    stored(3)
    raw = ask(client, messages=[system, {"role": "user", "content": paraphrase}])
    assert raw.headers["x-switchyard-cache"] == "miss"
    assert raw.headers["x-switchyard-cache-audit"] == "near"
    a = audits_after(2)
    assert (a["agreed"], a["disagreed"]) == (0, 2) and a["similarity"] == pytest.approx(raised), a
    # Equal answers but for case and punctuation agree; the threshold stays.
    system = pair("scope three")
    stored(5)
    raw = ask(client, messages=[system, {"role": "user", "content": "what is the boiling point of water"}])
    assert raw.headers["x-switchyard-cache"] == "miss"
    assert raw.headers["x-switchyard-cache-audit"] in ("hit", "near")
    a = audits_after(3)
    assert (a["agreed"], a["disagreed"]) == (1, 2) and a["similarity"] == pytest.approx(raised), a
    # The exact tier is not audited.
    again = ask(client, messages=[system, {"role": "user", "content": water}])
    assert again.headers["x-switchyard-cache"] == "hit-exact"
    # An answer that will not be stored cannot be compared: not audited, and
    # the raised threshold still applies (the paraphrase is no hit).
    system = pair("scope four")
    stored(7)
    raw = ask(client, {"x-switchyard-cache-ttl": "0"}, messages=[system, {"role": "user", "content": paraphrase}])
    assert raw.headers["x-switchyard-cache"] == "miss"
    assert "x-switchyard-cache-audit" not in raw.headers
    time.sleep(0.2)
    a = stats()["audits"]["gpt-test"]
    assert (a["agreed"], a["disagreed"]) == (1, 2), a
    # The metrics say the same.
    from test_metrics import families, scrape, value
    fams = families(scrape(gw))
    assert value(fams, "switchyard_cache_audits", "switchyard_cache_audits_total",
                 model_group="gpt-test", outcome="disagreed") == 2
    assert value(fams, "switchyard_cache_similarity_threshold", "switchyard_cache_similarity_threshold",
                 model_group="gpt-test") == pytest.approx(raised)


def test_audits_survive_a_restart_and_reset_through_the_cli(launch, tmp_path):
    """A raised threshold is kept on disk (beside the cache directory): a
    restarted gateway still turns the paraphrase away, until an operator
    resets the group's audits, which also lasts across a restart."""
    fake = launch.fake()
    config = semantic_config(fake, tmp_path / "cache", auth=True, audit_rate=1.0, audit_agreement=0.999)
    env = {MASTER_KEY_ENV: MASTER_KEY}
    auth = {"authorization": f"Bearer {MASTER_KEY}"}
    water, paraphrase = "What is the boiling point of water?", "what's the boiling point of water"

    def audits(gw, n=0):
        deadline = time.monotonic() + 10
        while True:
            r = gw.http("GET", "/admin/cache/stats", headers=auth)
            assert r.status == 200, r
            a = r.json()["audits"]["gpt-test"]
            if a["agreed"] + a["disagreed"] >= n or time.monotonic() > deadline:
                return a
            time.sleep(0.02)

    def paraphrase_in(gw, scope):
        """The paraphrase after the question, in a fresh scope."""
        client = gw.client(api_key=MASTER_KEY)
        system = {"role": "system", "content": scope}
        assert ask(client, messages=[system, {"role": "user", "content": water}]).headers[
            "x-switchyard-cache"] == "miss"
        deadline = time.monotonic() + 10
        while True:
            raw = ask(client, messages=[system, {"role": "user", "content": paraphrase}])
            if raw.headers.get("x-switchyard-cache-audit") or time.monotonic() > deadline:
                return raw
            # Not yet stored: the paraphrase missed plainly; ask it anew.
            system["content"] += "+"
            ask(client, messages=[system, {"role": "user", "content": water}])
            time.sleep(0.05)

    def stop(gw):
        gw.process.send_signal(signal.SIGTERM)
        assert gw.process.wait_exit(10) == 0

    first = launch.gateway(config, env=env)
    raw = paraphrase_in(first, "scope one")
    assert raw.headers["x-switchyard-cache-audit"] == "hit"
    raised = audits(first, 1)
    assert raised["disagreed"] == 1 and raised["similarity"] > 0.61, raised
    stop(first)
    assert (tmp_path / "cache-audits.sqlite3").is_file()

    # Restarted: the same threshold and totals, so the paraphrase is no hit
    # (a near miss, compared again).
    second = launch.gateway(config, env=env)
    a = audits(second)
    assert a["similarity"] == pytest.approx(raised["similarity"]) and a["disagreed"] == 1, a
    raw = paraphrase_in(second, "scope two")
    assert raw.headers["x-switchyard-cache"] == "miss"
    assert raw.headers["x-switchyard-cache-audit"] == "near"
    assert audits(second, 2)["disagreed"] == 2
    # Reset through the CLI, on a gateway with audits off: the saved
    # outcomes go all the same (no group's threshold was live to reset).
    stop(second)
    quiet = launch.gateway(semantic_config(fake, tmp_path / "cache", auth=True), env=env)
    r = quiet.http("GET", "/admin/cache/stats", headers=auth)
    assert r.status == 200 and r.json()["audits"] == {}, r
    out = cli("reset-audits", "--model", "gpt-test", "--url", quiet.url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"reset": {"groups": [], "removed": 2}}
    r = quiet.http("POST", "/admin/cache/audits/reset", {"model": "no-such-group"}, headers=auth)
    assert r.status == 404 and "no-such-group" in r.json()["error"]["message"]
    r = quiet.http("POST", "/admin/cache/audits/reset", {"group": "gpt-test"}, headers=auth)
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert quiet.http("POST", "/admin/cache/audits/reset", {}).status == 401
    stop(quiet)

    # The reset lasts: a third start begins from the configured similarity,
    # and the paraphrase is a semantic hit again (audited, so answered fresh).
    third = launch.gateway(config, env=env)
    a = audits(third)
    assert (a["similarity"], a["disagreed"]) == (pytest.approx(0.6), 0), a
    raw = paraphrase_in(third, "scope three")
    assert raw.headers["x-switchyard-cache-audit"] == "hit"
    # A reset on a live auditor: its threshold goes back at once.
    assert audits(third, 1)["similarity"] > 0.61
    out = cli("reset-audits", "--url", third.url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"reset": {"groups": ["gpt-test"], "removed": 1}}
    a = audits(third)
    assert (a["similarity"], a["agreed"], a["disagreed"]) == (pytest.approx(0.6), 0, 0), a


def test_unaudited_groups_have_no_audits(sem):
    gw, fake, client = sem
    ask(client, messages=user("What is the boiling point of water?"))
    hit = until_semantic_hit(client, user("what's the boiling point of water"))
    assert "x-switchyard-cache-audit" not in hit.headers
