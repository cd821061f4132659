"""`GET /metrics` of the real gateway in front of a SIMULATED GPU and a FAKE
external provider: valid for `promtool check metrics` and Prometheus' own
Python parser, named by Prometheus' conventions, every series described,
and counting what the requests did."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

import harness
from harness import PROVIDER_KEY, fleet_config, model_group, openai_provider, section


def scrape(gw) -> str:
    r = gw.http("GET", "/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return r.body.decode()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict, name: str, sample: str | None = None, **labels) -> float:
    """The value of the one sample of `name` (or its `sample` suffix) whose
    labels include `labels`."""
    family = fams[name]
    want = sample or name
    hits = [s for s in family.samples
            if s.name == want and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (want, labels, family.samples)
    return hits[0].value


def test_metrics_pass_promtool_and_count_what_happened(launch):
    sim = launch.sim("l4:llama")
    fake = launch.fake()
    gw = launch.gateway(
        section("cache", enabled=True)
        + section("batch", enabled=True, dir=str(launch.workdir / "batch"))
        + fleet_config(sim, fake, gpu="l4", slo_ms=1000)
    )
    client = gw.client()
    secret_prompt = "the launch code is 7401-SECRET"
    # Two on the simulated GPU (one streamed, with usage), one repeated
    # (an exact cache hit), one too long for the SLO (overflows), one for a
    # model that does not exist.
    client.chat.completions.create(
        model="llama", temperature=0, max_tokens=4,
        messages=[{"role": "user", "content": secret_prompt}])
    client.chat.completions.create(
        model="llama", temperature=0, max_tokens=4,
        messages=[{"role": "user", "content": secret_prompt}])
    stream = client.chat.completions.create(
        model="llama", max_tokens=6, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream a few words"}])
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 6
    client.chat.completions.create(
        model="llama", max_tokens=3, messages=[{"role": "user", "content": "long context " * 2000}])
    with pytest.raises(Exception):
        client.chat.completions.create(
            model="no-such-model-" + "x" * 40, messages=[{"role": "user", "content": "hi"}])

    text = scrape(gw)
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    else:
        print("promtool not installed (Debian package `prometheus`; .ci/run installs it): "
              "checked with prometheus_client's parser only")
    fams = families(text)

    # Conventions: our prefix, a description on every family, counters end
    # in _total (the parser strips it from the family name), units in names.
    assert fams, text
    for name, f in fams.items():
        assert name.startswith("switchyard_"), name
        assert f.documentation, f"{name} has no HELP"
    for line in text.splitlines():
        if line.startswith("# TYPE") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line

    # Requests, by what happened to them.
    ok_local = value(fams, "switchyard_requests", "switchyard_requests_total",
                     model_group="llama", provider="sim-l4-0", status="200", cache="miss")
    assert ok_local == 2, ok_local
    assert value(fams, "switchyard_requests", "switchyard_requests_total",
                 model_group="llama", cache="hit-exact", status="200") == 1
    assert value(fams, "switchyard_requests", "switchyard_requests_total",
                 model_group="llama", provider="ext", status="200") == 1
    assert value(fams, "switchyard_requests", "switchyard_requests_total",
                 model_group="unknown", status="404") == 1
    assert value(fams, "switchyard_request_duration_seconds", "switchyard_request_duration_seconds_count",
                 endpoint="chat.completions", model_group="llama") == 4
    assert value(fams, "switchyard_tokens", "switchyard_tokens_total",
                 model_group="llama", provider="sim-l4-0", direction="output") >= 10
    assert value(fams, "switchyard_time_to_first_token_seconds",
                  "switchyard_time_to_first_token_seconds_count", deployment="sim-l4-0/llama") == 1
    assert value(fams, "switchyard_inter_chunk_seconds", "switchyard_inter_chunk_seconds_count",
                 deployment="sim-l4-0/llama") >= 5

    # Placement, the fleet and its (simulated) GPU.
    assert value(fams, "switchyard_placements", "switchyard_placements_total",
                 target="local:sim-l4-0/l4", reason="slo_met_local") == 2
    assert value(fams, "switchyard_placements", "switchyard_placements_total",
                 target="external:ext", reason="overflow") == 1
    assert value(fams, "switchyard_backend_permits", backend="sim-l4-0") == 8
    assert value(fams, "switchyard_backend_health", backend="sim-l4-0", state="healthy") == 1
    assert value(fams, "switchyard_backend_health", backend="sim-l4-0", state="drained") == 0
    assert value(fams, "switchyard_gpu_memory_total_bytes", simulated="true") > 20e9
    assert 0 <= value(fams, "switchyard_gpu_utilization_ratio", simulated="true") <= 1
    assert value(fams, "switchyard_gpu_throttled", simulated="true", reason="hw_slowdown") == 0
    assert value(fams, "switchyard_breaker_state", deployment="ext/fake-mini", state="closed") == 1

    # The cache and the batch store.
    assert value(fams, "switchyard_cache_lookups", "switchyard_cache_lookups_total", result="hit_exact") == 1
    assert value(fams, "switchyard_cache_entries", tier="memory") >= 1
    assert value(fams, "switchyard_batch_items", state="pending") == 0
    assert value(fams, "switchyard_batches", state="in_progress") == 0

    # Nothing a client sent, and no provider key, is in any series.
    assert "7401-SECRET" not in text and "no-such-model" not in text
    assert PROVIDER_KEY not in text


def test_metrics_can_be_turned_off(launch):
    fake = launch.fake()
    gw = launch.gateway(section("metrics", enabled=False) + openai_provider("p", fake)
                        + model_group("m", {"provider": "p", "model": "x"}))
    gw.client().chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    r = gw.http("GET", "/metrics")
    assert r.status == 404 and "enabled = false" in r.json()["error"]["message"]


def documented_metrics() -> set[str]:
    doc = (harness.REPO / "docs" / "operations.md").read_text()
    return set(re.findall(r"^\| `(switchyard_[a-z_]+)` \|", doc, re.M))


def test_example_prometheus_config_and_alert_rules_are_valid_and_name_real_metrics():
    deploy = harness.REPO / "deploy" / "prometheus"
    rules = (deploy / "alerts.yml").read_text()
    named = {re.sub(r"_(bucket|count|sum)$", "", m) for m in re.findall(r"switchyard_[a-z_]+", rules)}
    known = documented_metrics()
    assert len(known) >= 40
    assert named and named <= known, named - known
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it): "
                    "the metric names were checked, the syntax was not")
    for args in (["check", "config", str(deploy / "prometheus.yml")],
                 ["check", "rules", str(deploy / "alerts.yml")]):
        r = subprocess.run([promtool, *args], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_grafana_dashboard_is_valid_and_queries_only_exported_metrics(tmp_path):
    dash = json.loads((harness.REPO / "deploy" / "grafana" / "switchyard.json").read_text())
    assert dash["title"] == "Switchyard" and dash["uid"] == "switchyard"
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "instance"}
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    known = documented_metrics()
    exprs = []
    for p in panels:
        assert p["type"] in ("timeseries", "table") and p["title"], p
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            named = {re.sub(r"_(bucket|count|sum)$", "", m) for m in re.findall(r"switchyard_[a-z_]+", t["expr"])}
            assert named and named <= known, (p["title"], named - known)
            exprs.append(t["expr"])
    # Every metric family has a panel, except the build/uptime pair's.
    queried = {re.sub(r"_(bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"switchyard_[a-z_]+", e)}
    assert known - queried <= {"switchyard_cache_memory_bytes", "switchyard_cache_evictions_total",
                               "switchyard_backend_slowness", "switchyard_backend_telemetry_age_seconds",
                               "switchyard_breaker_consecutive_failures", "switchyard_batches",
                               "switchyard_gpu_memory_total_bytes"}, known - queried
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it): "
                    "the metric names were checked, the PromQL syntax was not")
    # PromQL syntax: every query as a recording rule, with Grafana's
    # variables filled in.
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"grafana:query_{i}",
         "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "grafana_rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
