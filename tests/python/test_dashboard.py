"""The built-in dashboard in a real browser: the real gateway in front of
a SIMULATED GPU and a FAKE external provider, under load, opened in headless
Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium's
WebDriver client). Every panel must show data, none `NaN` or `undefined`;
the screenshot is saved (the README shows one from this test:
`SWITCHYARD_SCREENSHOT=docs/img/dashboard.png` writes it there)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from harness import REPO, fleet_config, section

PANELS = ["summary", "gpus", "cache", "traffic", "latency", "backends", "placements",
          "batches", "tenants"]


def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("headless Chromium not installed (Debian packages `chromium` and "
                    "`chromium-driver`; .ci/run installs them): the dashboard's JSON is "
                    "still checked by test_dashboard_state_has_every_section")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1440,1320", "--hide-scrollbars"):
        options.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=options)


def start_fleet(launch):
    sim = launch.sim("l4:llama")
    fake = launch.fake()
    gw = launch.gateway(
        section("cache", enabled=True)
        + section("batch", enabled=True, dir=str(launch.workdir / "batch"))
        + fleet_config(sim, fake, gpu="l4", slo_ms=1000)
    )
    return gw


def drive(gw, stop: threading.Event) -> None:
    """Local, repeated (cached), overflowing and failing requests, and a
    small batch, until `stop`."""
    client = gw.client()
    lines = "".join(json.dumps({"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": "llama", "max_tokens": 8,
                                         "messages": [{"role": "user", "content": f"batch item {i}"}]}}) + "\n"
                    for i in range(20))
    f = client.files.create(file=("d.jsonl", lines.encode()), purpose="batch")
    client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="1h")
    i = 0
    while not stop.is_set():
        i += 1
        try:
            client.chat.completions.create(
                model="llama", max_tokens=8, temperature=0,
                messages=[{"role": "user", "content": f"question {i % 5}"}])
            if i % 4 == 0:
                # Too long to prefill on an L4 within the 1 s SLO: overflows.
                client.chat.completions.create(
                    model="llama", max_tokens=2,
                    messages=[{"role": "user", "content": f"long context {i} " * 2000}])
            if i % 11 == 0:
                client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        except Exception:  # noqa: BLE001 - errors are part of the traffic shown
            pass
        time.sleep(0.05)


def test_dashboard_state_has_every_section(launch):
    gw = start_fleet(launch)
    gw.client().chat.completions.create(model="llama", max_tokens=4,
                                        messages=[{"role": "user", "content": "hi"}])
    # The sampler adds a point a second: wait for the first.
    deadline = time.monotonic() + 10
    while not (s := gw.http("GET", "/api/v1/dashboard").json())["series"]:
        assert time.monotonic() < deadline, s
        time.sleep(0.1)
    assert s["totals"]["local"] == 1 and s["series"], s
    assert s["fleet"]["backends"][0]["gpus"][0]["simulated"] is True
    assert s["cache"]["enabled"] and s["batches"]["enabled"]
    assert s["tenants"][0]["tenant"] == "default"
    page = gw.http("GET", "/dashboard")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    html = page.body.decode()
    # Self-contained: nothing is fetched from elsewhere.
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html
    for p in PANELS:
        assert f'data-panel="{p}"' in html


def test_every_panel_shows_data_in_headless_chromium(launch):
    driver = browser()
    gw = start_fleet(launch)
    stop = threading.Event()
    load = threading.Thread(target=drive, args=(gw, stop), daemon=True)
    load.start()
    try:
        time.sleep(6)  # a few seconds of history for the charts
        driver.get(f"{gw.url}/dashboard")
        deadline = time.monotonic() + 30
        states = {}
        while time.monotonic() < deadline:
            states = {p: driver.find_element("css selector", f'[data-panel="{p}"]').get_attribute("data-state")
                      for p in PANELS}
            if all(v == "ok" for v in states.values()):
                break
            time.sleep(0.5)
        assert all(v == "ok" for v in states.values()), states
        time.sleep(2)
        for p in PANELS:
            panel = driver.find_element("css selector", f'[data-panel="{p}"]')
            text = panel.text
            assert "NaN" not in text and "undefined" not in text and "null" not in text, (p, text)
            if p in ("traffic", "latency"):
                paths = panel.find_elements("css selector", "svg path")
                assert paths and all("NaN" not in (x.get_attribute("d") or "") for x in paths), p
            else:
                assert text.strip(), p
        gpus = driver.find_element("id", "gpus").text
        assert "sim-l4-0" in gpus and "simulated" in gpus, gpus
        placements = driver.find_element("id", "placements").text
        assert "local:sim-l4-0/l4" in placements and "external:ext" in placements, placements
        summary = driver.find_element("id", "summary").text
        assert "local GPUs" in summary and "%" in summary, summary
        shot = launch.workdir / "dashboard.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        target = os.environ.get("SWITCHYARD_SCREENSHOT")
        if target:
            Path(REPO / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, REPO / target)
    finally:
        stop.set()
        load.join(timeout=10)
        driver.quit()
