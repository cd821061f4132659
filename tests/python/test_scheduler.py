"""GPU-aware placement through the official SDK: the real gateway in front
of SIMULATED engines (`switchyard sim`) and a FAKE external provider."""

from __future__ import annotations

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
        + section("scheduler", ttft_slo_ms=1000, telemetry_interval_ms=100, stale_after_ms=1000)
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

    def placed(tenant: str) -> tuple[str, str]:
        r = gw.http("POST", "/admin/keys", {"tenant": tenant},
                    headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert r.status == 200, r
        raw = gw.client(api_key=r.json()["key"]).chat.completions.with_raw_response.create(
            model="llama",
            # Each tenant's own text: a prompt the engine has seen would be
            # a prefix-cache hit, fast enough for the SLO.
            messages=[{"role": "user", "content": f"{tenant}: " + "long context " * 2000}],
            max_tokens=5,
        )
        assert raw.parse().choices[0].message.content
        return raw.headers["x-switchyard-placement"], raw.headers["x-switchyard-placement-reason"]

    assert placed("anyone") == ("external:cheap", "overflow")
    assert placed("pinned") == ("external:ext", "overflow")
    assert placed("onprem") == ("local:sim-l4-0/l4", "queued_local")
    assert placed("thrifty") == ("local:sim-l4-0/l4", "queued_local")
    models = [r["body"]["model"] for r in fake.requests()]
    assert models == ["fake-nano", "fake-mini"], models
