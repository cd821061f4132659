"""GPU-aware placement through the official SDK: the real gateway in front
of SIMULATED engines (`switchyard sim`) and a FAKE external provider."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

from harness import (MASTER_KEY, MASTER_KEY_ENV, fleet_config, model_group, openai_provider,
                     section)


def test_sdk_streams_from_a_simulated_gpu_with_placement_headers(launch):
    sim = launch.sim("h100:llama")
    fake = launch.fake()
    gw = launch.gateway(fleet_config(sim, fake, gpu="h100"))
    raw = gw.client().chat.completions.with_raw_response.create(
        model="llama",
        messages=[{"role": "user", "content": "Say something about schedulers."}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-switchyard-placement"] == "local:sim-h100-0/h100"
    assert raw.headers["x-switchyard-placement-reason"] == "slo_met_local"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 12
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    assert fake.requests() == [], "nothing overflowed"


def test_a_prompt_too_slow_for_the_slo_overflows_to_the_cheapest_external(launch):
    # An L4 prefills ~3,800 tokens a second: a ~6,000-token prompt cannot
    # get its first token within 1 s there.
    sim = launch.sim("l4:llama")
    fake = launch.fake()
    gw = launch.gateway(fleet_config(sim, fake, gpu="l4", slo_ms=1000))
    raw = gw.client().chat.completions.with_raw_response.create(
        model="llama",
        messages=[{"role": "user", "content": "long context " * 2000}],
        max_tokens=5,
    )
    assert raw.headers["x-switchyard-placement"] == "external:ext"
    assert raw.headers["x-switchyard-placement-reason"] == "overflow"
    assert raw.parse().choices[0].message.content
    assert len(fake.requests()) == 1


def test_simulated_engine_reports_vllm_metrics_and_nvml_like_telemetry(launch):
    sim = launch.sim("a100:llama")
    fake = launch.fake()
    gw = launch.gateway(fleet_config(sim, fake, gpu="a100"))
    gw.client().chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    r = gw.http("GET", "/api/v1/fleet")
    assert r.status == 200
    backend = r.json()["backends"][0]
    assert backend["name"] == "sim-a100-0" and backend["health"] == "healthy"
    from harness import http_request

    metrics = http_request("GET", f"{sim.url}/metrics").body.decode()
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:generation_tokens_total"):
        assert f"# TYPE {name} " in metrics
    assert 'simulated="true"' in metrics
    tel = http_request("GET", f"{sim.url}/sim/telemetry").json()
    gpu = tel["gpus"][0]
    assert gpu["simulated"] is True and "(simulated)" in gpu["name"]
    assert gpu["memory_total_bytes"] == 80_000_000_000


def test_a_tenants_policy_and_budget_bound_where_its_requests_go(launch):
    # The long prompt cannot meet the 1 s SLO on the L4, so the group
    # overflows it to the cheapest external (`cheap`), unless the caller's
    # tenant says otherwise.
    sim = launch.sim("l4:llama")
    fake = launch.fake()
    config = (
        section("auth", master_key={"env": MASTER_KEY_ENV})
        + section("scheduler", ttft_slo_ms=1000, telemetry_interval_ms=100, stale_after_ms=5000)
        + section("providers.sim-l4-0", type="openai_compat", base_url=f"{sim.url}/v1",
                  local={"gpu": "l4", "gpu_hour_usd": 2.0, "permits": 8, "telemetry": "sim"})
        + openai_provider("ext", fake)
        + openai_provider("cheap", fake)
        + section("tenants.onprem.placement", mode="local_only")
        + section("tenants.pinned.placement", allowed_external=["ext/fake-mini"])
        # Less than the long prompt costs at either price.
        + section("tenants.thrifty.limits", budget_daily_usd=0.0001)
        + model_group(
            "llama",
            {"provider": "sim-l4-0", "model": "llama"},
            {"provider": "ext", "model": "fake-mini",
             "price": {"input_per_million": 0.15, "output_per_million": 0.6}},
            {"provider": "cheap", "model": "fake-nano",
             "price": {"input_per_million": 0.05, "output_per_million": 0.2}},
        )
    )
    gw = launch.gateway(config, env={MASTER_KEY_ENV: MASTER_KEY})

    def placed(tenant: str, **key) -> tuple[str, str]:
        r = gw.http("POST", "/admin/keys", {"tenant": tenant, **key},
                    headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert r.status == 200, r
        raw = gw.client(api_key=r.json()["key"]).chat.completions.with_raw_response.create(
            model="llama",
            # Each caller's own text: a prompt the engine has seen would be
            # a prefix-cache hit, fast enough for the SLO.
            messages=[{"role": "user", "content": f"{tenant} {key}: " + "long context " * 2000}],
            max_tokens=5,
        )
        assert raw.parse().choices[0].message.content
        return raw.headers["x-switchyard-placement"], raw.headers["x-switchyard-placement-reason"]

    assert placed("anyone") == ("external:cheap", "overflow")
    assert placed("pinned") == ("external:ext", "overflow")
    assert placed("onprem") == ("local:sim-l4-0/l4", "queued_local")
    assert placed("thrifty") == ("local:sim-l4-0/l4", "queued_local")
    # A key's own budget binds as its tenant's does.
    assert placed("keyed", limits={"budget_daily_usd": 0.0001}) == (
        "local:sim-l4-0/l4", "queued_local")
    assert placed("keyed", limits={"budget_daily_usd": 5.0}) == ("external:cheap", "overflow")
    models = [r["body"]["model"] for r in fake.requests()]
    assert models == ["fake-nano", "fake-mini", "fake-nano"], models


def test_requests_sent_around_the_gateway_count_against_its_gpu(launch):
    # Another client sends eight requests straight to the engine. The
    # gateway did not send them, but it scrapes the engine's own counts
    # (vllm:num_requests_running / _waiting) and counts them ahead of its
    # next request: the L4 can no longer meet the SLO, so it overflows.
    sim = launch.sim("l4:llama")
    fake = launch.fake()
    gw = launch.gateway(fleet_config(sim, fake, gpu="l4", slo_ms=2000))

    def prompt(tag: str) -> str:
        return f"{tag}: " + "long context " * 600  # about 1,950 tokens

    def placed(tag: str) -> tuple[str, str]:
        raw = gw.client().chat.completions.with_raw_response.create(
            model="llama", messages=[{"role": "user", "content": prompt(tag)}], max_tokens=5)
        assert raw.parse().choices[0].message.content
        return raw.headers["x-switchyard-placement"], raw.headers["x-switchyard-placement-reason"]

    # Idle, the L4 prefills it in about half a second.
    assert placed("ours") == ("local:sim-l4-0/l4", "slo_met_local")
    # Around the gateway: ~2,000 prompt and 8,000 output tokens each, so the
    # L4's KV cache (42,700 tokens) runs four and keeps four waiting.
    host = urlsplit(sim.url)
    direct = []
    for i in range(8):
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        conn.request("POST", "/v1/chat/completions", json.dumps({
            "model": "llama", "stream": True, "max_tokens": 8000,
            "messages": [{"role": "user", "content": prompt(f"direct {i}")}],
        }), {"content-type": "application/json"})
        direct.append(conn)
    try:
        deadline = time.monotonic() + 10
        while True:
            backend = gw.http("GET", "/api/v1/fleet").json()["backends"][0]
            if backend["foreign_requests"] == {"running": 4, "waiting": 4}:
                break
            assert time.monotonic() < deadline, backend
            time.sleep(0.1)
        assert backend["in_flight"] == 0, "none of them is the gateway's"
        # Four typical prompts wait ahead of ours: ~2.6 s to a first token.
        assert placed("ours again") == ("external:ext", "overflow")
        metrics = gw.http("GET", "/metrics").body.decode()
        assert 'switchyard_backend_foreign_requests{backend="sim-l4-0"} 8' in metrics
    finally:
        for conn in direct:
            conn.close()
    assert [r["body"]["model"] for r in fake.requests()] == ["fake-mini"]


def test_an_externals_ttft_is_learned_from_the_streams_it_answers(launch):
    # Two externals for a prompt the L4 cannot take within the 1 s SLO: the
    # cheaper one is configured at 0.2 s to a first token but takes 1.5 s.
    sim = launch.sim("l4:llama")
    slow, quick = launch.fake(), launch.fake()
    config = (
        section("scheduler", ttft_slo_ms=1000, telemetry_interval_ms=100, stale_after_ms=5000)
        + section("providers.sim-l4-0", type="openai_compat", base_url=f"{sim.url}/v1",
                  local={"gpu": "l4", "gpu_hour_usd": 2.0, "permits": 8, "telemetry": "sim"})
        + openai_provider("slow", slow)
        + openai_provider("quick", quick)
        + model_group(
            "llama",
            {"provider": "sim-l4-0", "model": "llama"},
            {"provider": "slow", "model": "fake-nano", "ttft_ms": 200,
             "price": {"input_per_million": 0.05, "output_per_million": 0.2}},
            {"provider": "quick", "model": "fake-mini", "ttft_ms": 300,
             "price": {"input_per_million": 0.15, "output_per_million": 0.6}},
        )
    )
    gw = launch.gateway(config)
    slow.push_faults(*[{"kind": "slow_first_byte", "delay_ms": 1500}] * 2)

    def placed(i: int) -> str:
        raw = gw.client().chat.completions.with_raw_response.create(
            model="llama", max_tokens=5, stream=True,
            messages=[{"role": "user", "content": f"{i}: " + "long context " * 2000}])
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        return raw.headers["x-switchyard-placement"]

    assert placed(0) == "external:slow"
    # (0.2 + 1.5) / 2 = 0.85 s: still within the SLO.
    assert placed(1) == "external:slow"
    # (0.2 + 1.5 + 1.5) / 3 = 1.07 s: past it, so the dearer one that meets it.
    assert placed(2) == "external:quick"
    externals = {e["deployment"]: e for e in gw.http("GET", "/api/v1/fleet").json()["externals"]}
    learned = externals["slow/fake-nano"]
    assert learned["ttft_samples"] == 2 and learned["configured_ttft_s"] == 0.2
    assert 1.05 < learned["ttft_s"] < 1.2, learned
    assert externals["quick/fake-mini"]["ttft_samples"] == 1
    assert externals["quick/fake-mini"]["ttft_s"] < 0.3
