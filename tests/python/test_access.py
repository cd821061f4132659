"""Virtual keys, tenants, rate limits, budgets, the usage ledger, the audit
log and DLP (docs/access.md), end to end: the real binary, a real SQLite
file, the official `openai` SDK, and the FAKE upstream standing in for the
provider."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import openai
import pytest

from harness import (MASTER_KEY, MASTER_KEY_ENV, PROVIDER_KEY, answer_to, child_env, fault_status,
                     model_group, openai_provider, section, switchyard_bin, words)

HI = [{"role": "user", "content": "hi"}]
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}", "x-switchyard-actor": "tester"}
# Dear on purpose: a few tokens cost whole cents, so budgets trip at once.
PRICE = {"input_per_million": 10_000.0, "output_per_million": 20_000.0}


def config(fake, *extra: str, cache: bool = False) -> str:
    text = (
        section("auth", master_key={"env": MASTER_KEY_ENV})
        + section("retry", max_retries=0, backoff_base_ms=1, backoff_max_ms=2)
        + "".join(extra)
        + openai_provider("up", fake)
        + model_group("m", {"provider": "up", "model": "x", "price": PRICE})
        + model_group("other", {"provider": "up", "model": "y", "price": PRICE})
    )
    if cache:
        text = section("cache", enabled=True, ttl_secs=60) + text
    return text


def start(launch, *extra: str, cache: bool = False, env: dict | None = None, fake=None):
    fake = fake or launch.fake()
    gw = launch.gateway(config(fake, *extra, cache=cache), env={MASTER_KEY_ENV: MASTER_KEY, **(env or {})})
    return gw, fake


def create_key(gw, **attrs) -> dict:
    attrs.setdefault("tenant", "acme")
    r = gw.http("POST", "/admin/keys", attrs, headers=ADMIN)
    assert r.status == 200, r
    return r.json()


def usage(gw, group_by: str, **filters) -> list[dict]:
    q = "&".join([f"group_by={group_by}"] + [f"{k}={v}" for k, v in filters.items()])
    r = gw.http("GET", f"/admin/usage?{q}", headers=ADMIN)
    assert r.status == 200, r
    return r.json()["data"]


def db_bytes(gw) -> bytes:
    """The access database as stored: the file and its WAL."""
    base = Path(str(gw.config_path).replace("gateway-", "access-").replace(".toml", ".sqlite3"))
    return b"".join(p.read_bytes() for p in base.parent.glob(base.name + "*"))


def test_a_key_is_created_used_rotated_and_revoked(launch):
    gw, fake = start(launch)
    made = create_key(gw, name="ci", models=["m"], metadata={"team": "search"})
    secret = made["key"]
    assert secret.startswith("sk-sy-") and len(secret) == 38
    assert made["tenant"] == "acme" and made["key_hint"].endswith(secret[-4:])
    # The secret is shown once: never in listings, never stored.
    listed = gw.http("GET", "/admin/keys", headers=ADMIN).json()["data"]
    assert [k["id"] for k in listed] == [made["id"]]
    assert secret not in json.dumps(listed)
    assert secret.encode() not in db_bytes(gw)

    client = gw.client(api_key=secret)
    assert client.chat.completions.create(model="m", messages=HI).choices[0].message.content == answer_to("hi")
    assert secret not in json.dumps(fake.last()["headers"]), "a client key is never forwarded"

    rotated = gw.http("POST", f"/admin/keys/{made['id']}/rotate", headers=ADMIN).json()
    assert rotated["id"] == made["id"] and rotated["key"] != secret
    with pytest.raises(openai.AuthenticationError) as exc:
        client.chat.completions.create(model="m", messages=HI)
    assert exc.value.code == "invalid_api_key"
    new_client = gw.client(api_key=rotated["key"])
    new_client.chat.completions.create(model="m", messages=HI)

    gw.http("POST", f"/admin/keys/{made['id']}/revoke", headers=ADMIN)
    with pytest.raises(openai.AuthenticationError) as exc:
        new_client.chat.completions.create(model="m", messages=HI)
    assert exc.value.status_code == 401 and "revoked" in exc.value.message
    assert rotated["key"] not in exc.value.message
    # Still attributed: both secrets' requests count under the one key id.
    rows = usage(gw, "key")
    assert [(r["key"], r["requests"]) for r in rows] == [(made["id"], 2)]


def test_expired_unknown_and_missing_keys_are_401(launch):
    gw, fake = start(launch)
    # Expiry is in whole seconds: 3 s leave at least two for the first call.
    short = create_key(gw, expires_in=3)["key"]
    gw.client(api_key=short).chat.completions.create(model="m", messages=HI)
    time.sleep(3.1)
    with pytest.raises(openai.AuthenticationError) as exc:
        gw.client(api_key=short).chat.completions.create(model="m", messages=HI)
    assert "expired" in exc.value.message
    for key in ["sk-sy-" + "x" * 32, "nonsense"]:
        with pytest.raises(openai.AuthenticationError):
            gw.client(api_key=key).models.list()
    r = gw.http("POST", "/v1/chat/completions", {"model": "m", "messages": HI})
    assert r.status == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert len(fake.requests()) == 1


def test_models_outside_a_key_or_tenant_are_not_there(launch):
    gw, fake = start(launch, section("tenants.narrow", models=["other"]))
    key = gw.client(api_key=create_key(gw, models=["m"])["key"])
    assert [m.id for m in key.models.list()] == ["m"]
    with pytest.raises(openai.NotFoundError) as exc:
        key.chat.completions.create(model="other", messages=HI)
    assert exc.value.code == "model_not_found"
    narrow = gw.client(api_key=create_key(gw, tenant="narrow")["key"])
    assert [m.id for m in narrow.models.list()] == ["other"]
    with pytest.raises(openai.NotFoundError):
        narrow.embeddings.create(model="m", input="x")
    assert fake.requests() == []
    # An allow-list naming a group that does not exist is refused.
    r = gw.http("POST", "/admin/keys", {"tenant": "t", "models": ["nope"]}, headers=ADMIN)
    assert r.status == 400 and "nope" in r.json()["error"]["message"]


def fire(n: int, call) -> list:
    """`n` calls at once (released together); their results or exceptions."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as e:  # noqa: BLE001 - the result under test
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_requests_per_minute_are_exact_under_concurrency(launch):
    gw, fake = start(launch)
    key = create_key(gw, limits={"rpm": 7})["key"]
    client = gw.client(api_key=key)
    results = fire(30, lambda: client.chat.completions.with_raw_response.create(model="m", messages=HI))
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(ok), len(refused)) == (7, 23), results
    assert len(fake.requests()) == 7
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(7))
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok} == {"7"}
    e = refused[0]
    assert e.status_code == 429 and e.code == "rate_limit_exceeded"
    assert 1 <= int(e.response.headers["retry-after"]) <= 60
    assert "7 requests per minute" in e.message
    metrics = gw.http("GET", "/metrics").body.decode()
    assert 'switchyard_access_refusals_total{scope="key",limit="requests"} 23' in metrics


def test_a_tenant_limit_is_shared_by_its_keys(launch):
    gw, _ = start(launch, section("tenants.acme.limits", rpm=3))
    a = gw.client(api_key=create_key(gw)["key"])
    b = gw.client(api_key=create_key(gw)["key"])
    a.chat.completions.create(model="m", messages=HI)
    b.chat.completions.create(model="m", messages=HI)
    a.chat.completions.create(model="m", messages=HI)
    with pytest.raises(openai.RateLimitError) as exc:
        b.chat.completions.create(model="m", messages=HI)
    assert "tenant `acme`" in exc.value.message
    # Another tenant is unaffected.
    gw.client(api_key=create_key(gw, tenant="beta")["key"]).chat.completions.create(model="m", messages=HI)


def test_concurrency_is_held_until_the_stream_ends(launch):
    # Slow tokens: the stream lasts about 2 s, ample time for the second call.
    gw, _ = start(launch, fake=launch.fake(token_delay_ms=200))
    client = gw.client(api_key=create_key(gw, limits={"max_concurrent": 1})["key"])
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "one two three four five six"}], stream=True)
    first = next(iter(stream))
    assert first.choices
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="m", messages=HI)
    assert "concurrent" in exc.value.message
    for _ in stream:
        pass
    client.chat.completions.create(model="m", messages=HI)


def test_tokens_per_minute_count_the_estimate_then_the_truth(launch):
    gw, _ = start(launch)
    client = gw.client(api_key=create_key(gw, limits={"tpm": 300})["key"])
    # Alone over the limit: refused, and not worth retrying.
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="m", messages=HI, max_tokens=1000)
    assert "Request too large" in exc.value.message
    assert exc.value.response.headers.get("x-should-retry") == "false"
    # Reserved at the estimate (the cap plus a token per four bytes of
    # text), settled at the real count: a second request fits after it.
    r = client.chat.completions.with_raw_response.create(model="m", messages=HI, max_tokens=250)
    estimate = 300 - int(r.headers["x-ratelimit-remaining-tokens"])
    assert 250 < estimate < 260
    used = r.parse().usage.total_tokens
    assert used < 300 - estimate
    r2 = client.chat.completions.with_raw_response.create(model="m", messages=HI, max_tokens=250)
    assert int(r2.headers["x-ratelimit-remaining-tokens"]) == 300 - used - estimate
    assert r2.headers["x-ratelimit-reset-tokens"].endswith("s")
    # One whose estimate does not fit beside what the window holds waits.
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="m", messages=HI, max_tokens=300 - 2 * used)
    assert "300 tokens per minute" in exc.value.message
    assert 1 <= int(exc.value.response.headers["retry-after"]) <= 60


def test_a_spent_budget_refuses_until_it_resets_even_after_a_restart(launch, tmp_path):
    db = tmp_path / "budget.sqlite3"
    gw, fake = start(launch, env={"SWITCHYARD__AUTH__DB": str(db)})
    made = create_key(gw, limits={"budget_daily_usd": 0.01})
    client = gw.client(api_key=made["key"])
    resp = client.chat.completions.create(model="m", messages=HI)
    cost = (resp.usage.prompt_tokens * PRICE["input_per_million"]
            + resp.usage.completion_tokens * PRICE["output_per_million"]) / 1e6
    assert cost > 0.01
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="m", messages=HI)
    assert exc.value.code == "insufficient_quota" and exc.value.type == "insufficient_quota"
    assert exc.value.response.headers.get("x-should-retry") == "false"
    assert "daily budget" in exc.value.message
    key = gw.http("GET", f"/admin/keys/{made['id']}", headers=ADMIN).json()
    assert key["spend_today_usd"] == pytest.approx(cost)
    assert len(fake.requests()) == 1
    # The spend is in the ledger (committed: `/admin/usage` waits for the
    # writer; a SIGKILL loses at most its last 25 ms window): a restarted
    # gateway still refuses.
    assert usage(gw, "key")[0]["cost_usd"] == pytest.approx(cost)
    gw.process.kill()
    gw2, _ = start(launch, env={"SWITCHYARD__AUTH__DB": str(db)}, fake=fake)
    with pytest.raises(openai.RateLimitError):
        gw2.client(api_key=made["key"]).chat.completions.create(model="m", messages=HI)
    # Raising the budget lets it through at once.
    r = gw2.http("PATCH", f"/admin/keys/{made['id']}", {"limits": {"budget_daily_usd": 1.0}}, headers=ADMIN)
    assert r.status == 200, r
    gw2.client(api_key=made["key"]).chat.completions.create(model="m", messages=HI)


def test_a_clean_shutdown_commits_the_last_usage_rows(launch, tmp_path):
    # SIGTERM right after an answer, before the ledger writer's 25 ms window
    # has closed: the shutdown commits the row anyway.
    db = tmp_path / "shutdown.sqlite3"
    gw, _ = start(launch, env={"SWITCHYARD__AUTH__DB": str(db)})
    made = create_key(gw)
    gw.client(api_key=made["key"]).chat.completions.create(model="m", messages=HI)
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait_exit(30) == 0
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key_id, status FROM usage").fetchall()
    assert rows == [(made["id"], 200)]


def test_the_ledger_counts_streamed_and_cached_answers(launch):
    gw, fake = start(launch, cache=True)
    key = create_key(gw)
    client = gw.client(api_key=key["key"])
    plain = client.chat.completions.create(model="m", messages=HI)
    # A stream that did not ask for usage: the gateway asks upstream, counts
    # it, and the client never sees the usage chunk.
    q = [{"role": "user", "content": "count these five words please"}]
    chunks = list(client.chat.completions.create(model="m", messages=q, stream=True))
    assert fake.last()["body"]["stream_options"] == {"include_usage": True}
    assert all(c.usage is None and c.choices for c in chunks)
    # One that asked gets it.
    q2 = [{"role": "user", "content": "and these four too"}]
    asked = list(client.chat.completions.create(model="m", messages=q2, stream=True,
                                                stream_options={"include_usage": True}))
    assert asked[-1].usage is not None and asked[-1].choices == []
    # A repeat is answered from the cache: no upstream call, no cost.
    hit = client.chat.completions.with_raw_response.create(model="m", messages=HI)
    assert hit.headers["x-switchyard-cache"] == "hit-exact"
    assert len(fake.requests()) == 3

    rows = {r["cache"]: r for r in usage(gw, "cache")}
    assert rows["hit-exact"]["requests"] == 1 and rows["hit-exact"]["cost_usd"] == 0
    plain_cost = (plain.usage.prompt_tokens * PRICE["input_per_million"]
                  + plain.usage.completion_tokens * PRICE["output_per_million"]) / 1e6
    assert rows["hit-exact"]["saved_usd"] == pytest.approx(plain_cost), "what the hit would have cost"
    assert gw.request_log(hit.headers["x-request-id"])["saved_usd"] == pytest.approx(plain_cost)
    miss = rows["miss"]
    assert miss["requests"] == 3
    expected_in = plain.usage.prompt_tokens + asked[-1].usage.prompt_tokens
    assert miss["prompt_tokens"] > expected_in, "the stream without include_usage was counted too"
    assert miss["completion_tokens"] == (plain.usage.completion_tokens + words(answer_to(q[0]["content"]))
                                         + asked[-1].usage.completion_tokens)
    assert miss["cost_usd"] == pytest.approx(
        (miss["prompt_tokens"] * PRICE["input_per_million"] + miss["completion_tokens"] * PRICE["output_per_million"]) / 1e6)
    by = usage(gw, "tenant,key,model_group,provider,day")
    assert len(by) == 2  # the cache hit has no provider
    assert {(r["tenant"], r["key"], r["model_group"]) for r in by} == {("acme", key["id"], "m")}
    assert {r["provider"] for r in by} == {"up", None}
    assert by[0]["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    # The dashboard's top tenants come from the same accounting.
    tenants = gw.http("GET", "/api/v1/dashboard").json()["tenants"]
    assert tenants == [{"tenant": "acme", "requests": 4, "spend_usd": pytest.approx(miss["cost_usd"])}]


def test_tenants_never_share_cached_answers(launch):
    gw, fake = start(launch, cache=True)
    a1 = gw.client(api_key=create_key(gw, tenant="a")["key"])
    a2 = gw.client(api_key=create_key(gw, tenant="a")["key"])
    b = gw.client(api_key=create_key(gw, tenant="b")["key"])
    a1.chat.completions.create(model="m", messages=HI)
    assert a2.chat.completions.with_raw_response.create(model="m", messages=HI).headers["x-switchyard-cache"] == "hit-exact"
    assert b.chat.completions.with_raw_response.create(model="m", messages=HI).headers["x-switchyard-cache"] == "miss"
    assert len(fake.requests()) == 2


def test_dlp_redacts_blocks_and_logs_before_anything_leaves(launch):
    gw, fake = start(
        launch,
        section("dlp", actions={"credit_card": "block", "email": "log"})
        + "[[dlp.custom]]\nname = \"ticket\"\npattern = '\\bTCK-[0-9]{5}\\b'\naction = \"redact\"\n\n",
        section("tenants.strict", dlp={"email": "block"}),
    )
    client = gw.client(api_key=create_key(gw)["key"])
    pasted = "sk-proj-" + "Ab3" * 12
    aws = "AKIAIOSFODNN7EXAMPLE"
    r = client.chat.completions.with_raw_response.create(model="m", messages=[
        {"role": "system", "content": f"use {aws}"},
        {"role": "user", "content": f"my key is {pasted}, ticket TCK-12345, mail me at a@b.io"}])
    sent = json.dumps(fake.last()["body"])
    assert pasted not in sent and aws not in sent and "TCK-12345" not in sent
    assert "[REDACTED:openai_key]" in sent and "[REDACTED:aws_access_key]" in sent and "[REDACTED:ticket]" in sent
    assert "a@b.io" in sent, "`log` leaves the text alone"
    line = gw.request_log(r.headers["x-request-id"])
    assert set(line["dlp"].split(",")) == {"aws_access_key:redact", "openai_key:redact", "ticket:redact", "email:log"}
    assert pasted not in gw.process.log_text(200)

    n = len(fake.requests())
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "card 4111 1111 1111 1111"}])
    assert exc.value.code == "dlp_blocked" and "credit_card" in exc.value.message
    assert "4111" not in exc.value.message
    # The same policy on completions and embeddings.
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="m", prompt="4111-1111-1111-1111")
    client.embeddings.create(model="m", input=f"key {pasted}")
    assert pasted not in json.dumps(fake.last()["body"])
    # A tenant's own policy wins.
    strict = gw.client(api_key=create_key(gw, tenant="strict")["key"])
    with pytest.raises(openai.BadRequestError) as exc:
        strict.chat.completions.create(model="m", messages=[{"role": "user", "content": "a@b.io"}])
    assert "email" in exc.value.message
    assert len(fake.requests()) == n + 1
    metrics = gw.http("GET", "/metrics").body.decode()
    for series in ['{detector="openai_key",action="redact"} 2', '{detector="credit_card",action="block"} 2',
                   '{detector="email",action="log"} 1', '{detector="email",action="block"} 1']:
        assert f"switchyard_dlp_findings_total{series}" in metrics, series


def test_no_secret_reaches_logs_metrics_errors_or_storage(launch, tmp_path):
    cache_dir = tmp_path / "cache-store"
    gw, fake = start(launch, section("cache", enabled=True, ttl_secs=60, dir=str(cache_dir)))
    made = create_key(gw)
    client = gw.client(api_key=made["key"])
    client.chat.completions.create(model="m", messages=HI)
    list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x y"}], stream=True))
    fake.push_faults(fault_status(401), fault_status(500))
    bodies = []
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as exc:
            client.chat.completions.create(model="other", messages=HI)
        bodies.append(exc.value.response.text)
    with pytest.raises(openai.AuthenticationError) as exc:
        # One character off (never the same one: that would be the key).
        gw.client(api_key=made["key"][:-1] + ("Y" if made["key"].endswith("Z") else "Z")).models.list()
    bodies.append(exc.value.response.text)
    admin = [gw.http("GET", p, headers=ADMIN).body.decode() for p in
             ["/admin/keys", "/admin/usage?group_by=key,provider", "/admin/audit", "/admin/deployments"]]
    metrics = gw.http("GET", "/metrics").body.decode()
    time.sleep(0.2)
    logs = gw.process.log_text(10_000)
    stored = db_bytes(gw) + b"".join(p.read_bytes() for p in cache_dir.rglob("*") if p.is_file())
    for secret in [PROVIDER_KEY, MASTER_KEY, made["key"]]:
        for name, text in [("errors", "\n".join(bodies)), ("admin", "\n".join(admin)),
                           ("metrics", metrics), ("logs", logs)]:
            assert secret not in text, f"{secret[:8]}… found in {name}"
        assert secret.encode() not in stored, f"{secret[:8]}… found on disk"
    assert PROVIDER_KEY in json.dumps(fake.last()["headers"]), "the provider key was used"


def test_admin_actions_are_audited(launch):
    gw, _ = start(launch, cache=True)
    made = create_key(gw, tenant="acme")
    gw.http("PATCH", f"/admin/keys/{made['id']}", {"name": "renamed"}, headers=ADMIN)
    gw.http("POST", f"/admin/keys/{made['id']}/rotate", headers=ADMIN)
    gw.http("POST", f"/admin/keys/{made['id']}/revoke", headers=ADMIN)
    gw.http("POST", "/admin/cache/purge", {"tenant": "acme"}, headers=ADMIN)
    log = gw.http("GET", "/admin/audit", headers=ADMIN).json()["data"]
    assert [e["action"] for e in log] == ["cache.purge", "key.revoke", "key.rotate", "key.update", "key.create"]
    assert {e["actor"] for e in log} == {"master_key (tester)"}
    assert all(e["target"] == made["id"] for e in log[1:])
    assert log[3]["detail"]["name"] == "renamed"
    assert made["key"] not in json.dumps(log)
    # Only the master key reads it.
    key = create_key(gw)["key"]
    assert gw.http("GET", "/admin/audit", headers={"Authorization": f"Bearer {key}"}).status == 401


def cli(gw, *args: str) -> dict:
    out = subprocess.run(
        [str(switchyard_bin()), *args, "--url", gw.url], env=child_env({MASTER_KEY_ENV: MASTER_KEY, "USER": "ops"}),
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_cli_manages_keys_and_reads_usage(launch):
    gw, _ = start(launch)
    made = cli(gw, "keys", "create", "--tenant", "acme", "--name", "etl", "--models", "m,other", "--rpm", "2",
               "--budget-daily-usd", "5")
    assert made["limits"] == {"rpm": 2, "budget_daily_usd": 5.0} and made["models"] == ["m", "other"]
    client = gw.client(api_key=made["key"])
    client.chat.completions.create(model="m", messages=HI)
    updated = cli(gw, "keys", "update", made["id"], "--tpm", "9999")
    assert updated["limits"] == {"rpm": 2, "tpm": 9999, "budget_daily_usd": 5.0}
    listed = cli(gw, "keys", "list", "--tenant", "acme")["data"]
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]
    rows = cli(gw, "usage", "--group-by", "tenant,model_group")["data"]
    assert [(r["tenant"], r["model_group"], r["requests"]) for r in rows] == [("acme", "m", 1)]
    rotated = cli(gw, "keys", "rotate", made["id"])
    cli(gw, "keys", "revoke", made["id"])
    with pytest.raises(openai.AuthenticationError):
        gw.client(api_key=rotated["key"]).models.list()
    audit = cli(gw, "audit", "--limit", "10")["data"]
    assert [e["actor"] for e in audit] == ["master_key (ops)"] * 4


def test_an_open_gateway_has_one_tenant_and_no_database(launch, tmp_path):
    fake = launch.fake()
    db = tmp_path / "never.sqlite3"
    gw = launch.gateway(openai_provider("up", fake) + model_group("m", {"provider": "up", "model": "x"}),
                        env={"SWITCHYARD__AUTH__DB": str(db)})
    r = gw.client().chat.completions.with_raw_response.create(model="m", messages=HI)
    assert "x-ratelimit-limit-requests" not in r.headers
    assert gw.request_log(r.headers["x-request-id"])["tenant"] == "default"
    assert gw.http("GET", "/admin/keys").status == 404
    assert not db.exists()


def test_batches_and_files_belong_to_their_tenant(launch, tmp_path):
    gw, fake = start(launch, section("batch", enabled=True, dir=str(tmp_path / "batch"), provider_batches=False),
                     cache=True)
    a_key = create_key(gw, tenant="a")
    a = gw.client(api_key=a_key["key"])
    b = gw.client(api_key=create_key(gw, tenant="b")["key"])
    master = gw.client(api_key=MASTER_KEY)
    body = {"model": "m", "messages": [{"role": "user", "content": "a batched question"}]}
    content = json.dumps({"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": body})
    f = a.files.create(file=("in.jsonl", (content + "\n").encode()), purpose="batch")
    job = a.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    for other in (b, master):
        assert other.batches.list().data == [] and other.files.list().data == []
        for call in [lambda: other.batches.retrieve(job.id), lambda: other.files.retrieve(f.id),
                     lambda: other.files.content(f.id), lambda: other.batches.cancel(job.id),
                     lambda: other.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                  completion_window="24h")]:
            with pytest.raises(openai.NotFoundError):
                call()
    deadline = time.monotonic() + 30
    while (done := a.batches.retrieve(job.id)).status != "completed":
        assert time.monotonic() < deadline, done
        time.sleep(0.1)
    out = [json.loads(x) for x in a.files.content(done.output_file_id).text.splitlines()]
    assert out[0]["response"]["status_code"] == 200
    with pytest.raises(openai.NotFoundError):
        b.files.content(done.output_file_id)
    # The item ran as tenant `a`: its usage is `a`'s key's, and its cached
    # answer serves `a` alone.
    rows = usage(gw, "tenant,key")
    assert [(r["tenant"], r["key"], r["requests"]) for r in rows] == [("a", a_key["id"], 1)]
    assert a.chat.completions.with_raw_response.create(**body).headers["x-switchyard-cache"] == "hit-exact"
    assert b.chat.completions.with_raw_response.create(**body).headers["x-switchyard-cache"] == "miss"
