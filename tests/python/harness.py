"""End-to-end harness: real `switchyard` processes driven by the official
`openai` SDK.

Every test talks to a real gateway process (``switchyard serve``) that sits
in front of one or more FAKE upstreams (``switchyard fake-upstream``), all on
port 0. Every wait is bounded and every process is killed in teardown.

The binary is ``$SWITCHYARD_BIN`` or ``<repo>/target/debug/switchyard``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 20.0
# Keys the gateway sends upstream (the fakes accept any non-empty key unless
# started with --api-key-env).
PROVIDER_KEY_ENV = "SY_TEST_PROVIDER_KEY"
PROVIDER_KEY = "sk-test-provider-key-0123456789"
MASTER_KEY_ENV = "SWITCHYARD_MASTER_KEY"
MASTER_KEY = "sk-master-test-key-9876"
# What clients send when the gateway has no master key (any value works).
CLIENT_KEY = "sk-client-unused"


def switchyard_bin() -> Path:
    path = Path(os.environ.get("SWITCHYARD_BIN") or REPO / "target" / "debug" / "switchyard")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"switchyard binary not found or not executable at {path}; build it with "
            "`cargo build -p switchyard-gateway` or point SWITCHYARD_BIN at it",
            pytrace=False,
        )
    return path


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ours, minus anything that could
    change Switchyard's behaviour behind the test's back."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SWITCHYARD__") and k not in ("RUST_LOG", "NO_COLOR")
    }
    env["RUST_LOG"] = "info"
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------
# Plain HTTP (for what the SDK cannot send, and for the fakes' admin API)
# --------------------------------------------------------------------------


class HttpResult:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"HttpResult({self.status}, {self.body[:300]!r})"


def http_request(
    method: str,
    url: str,
    body: bytes | str | dict | list | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> HttpResult:
    """One HTTP/1.1 request on a fresh connection; never raises on status."""
    parts = urlsplit(url)
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        headers.setdefault("content-type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return HttpResult(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGKILL the child if the test process dies, so an interrupted
    run leaves nothing behind."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


class Process:
    """A child process whose stderr (JSON log lines) is collected by a thread."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]):
        self.name = name
        self.args = args
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def records(self) -> list[dict]:
        """The log lines that are JSON objects."""
        out = []
        for line in list(self.lines):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def log_text(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    def wait_for_record(self, predicate: Callable[[dict], bool], timeout: float) -> dict:
        """The first JSON log line matching `predicate`, waiting at most
        `timeout` seconds; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new_line:
            while True:
                while seen < len(self.lines):
                    line = self.lines[seen]
                    seen += 1
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict) and predicate(rec):
                        return rec
                if self.popen.poll() is not None and not self._reader.is_alive():
                    pytest.fail(
                        f"{self.name} exited with status {self.popen.returncode} before the "
                        f"expected log line; its stderr:\n{self.log_text()}",
                        pytrace=False,
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(
                        f"{self.name}: expected log line not seen within {timeout}s; its stderr:\n"
                        f"{self.log_text()}",
                        pytrace=False,
                    )
                self._new_line.wait(min(left, 0.2))

    def wait_listening(self) -> str:
        rec = self.wait_for_record(
            lambda r: str(r.get("message", "")).startswith("listening") and "addr" in r,
            STARTUP_TIMEOUT_S,
        )
        return rec["addr"]

    def send_signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel should not let this happen
            pass
        self._reader.join(timeout=2)
        if self.popen.stderr is not None:
            self.popen.stderr.close()


class Fake:
    """A `switchyard fake-upstream` process."""

    def __init__(self, process: Process):
        self.process = process
        self.addr = process.wait_listening()
        self.url = f"http://{self.addr}"

    def push_faults(self, *faults: dict) -> None:
        r = http_request("POST", f"{self.url}/__fake/faults", {"faults": list(faults)})
        assert r.status == 200, r
        assert r.json() == {"queued": len(faults)}

    def requests(self) -> list[dict]:
        """Model requests received so far, oldest first."""
        r = http_request("GET", f"{self.url}/__fake/requests")
        assert r.status == 200, r
        return r.json()

    def last(self) -> dict:
        reqs = self.requests()
        assert reqs, "the fake upstream received no request"
        return reqs[-1]


class Gateway:
    """A `switchyard serve` process and SDK clients for it."""

    def __init__(self, process: Process, config_path: Path):
        self.process = process
        self.config_path = config_path
        self.addr = process.wait_listening()
        self.port = int(self.addr.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._clients: list[openai.OpenAI] = []

    def client(self, api_key: str = CLIENT_KEY, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("timeout", 20.0)
        c = openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)
        self._clients.append(c)
        return c

    def http(self, method: str, path: str, body: Any = None, headers: dict | None = None,
             timeout: float = 10.0) -> HttpResult:
        return http_request(method, f"{self.url}{path}", body, headers, timeout)

    def request_log(self, request_id: str, timeout: float = 5.0) -> dict:
        """The gateway's per-request log line for `request_id`."""
        return self.process.wait_for_record(
            lambda r: r.get("message") == "request" and r.get("request_id") == request_id, timeout
        )

    def close_clients(self) -> None:
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients.clear()


# --------------------------------------------------------------------------
# Configuration text
# --------------------------------------------------------------------------


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def section(header: str, **fields: Any) -> str:
    return f"[{header}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items()) + "\n"


def openai_provider(name: str, fake: Fake, key_env: str = PROVIDER_KEY_ENV) -> str:
    return section(f"providers.{name}", type="openai_compat", base_url=f"{fake.url}/v1",
                   api_key={"env": key_env})


def anthropic_provider(name: str, fake: Fake, key_env: str = PROVIDER_KEY_ENV, **extra: Any) -> str:
    return section(f"providers.{name}", type="anthropic", base_url=fake.url,
                   api_key={"env": key_env}, **extra)


def azure_provider(name: str, fake: Fake, api_version: str, key_env: str = PROVIDER_KEY_ENV) -> str:
    return section(f"providers.{name}", type="azure_openai", base_url=fake.url,
                   api_key={"env": key_env}, api_version=api_version)


def model_group(name: str, *deployments: dict, strategy: str | None = None,
                cache: dict | None = None) -> str:
    text = f"[[model_groups]]\nname = {toml_value(name)}\n"
    if strategy:
        text += f"strategy = {toml_value(strategy)}\n"
    if cache is not None:
        text += "[model_groups.cache]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in cache.items())
    for d in deployments:
        text += "[[model_groups.deployments]]\n"
        text += "".join(f"{k} = {toml_value(v)}\n" for k, v in d.items())
    return text + "\n"


def fleet_config(sim, fake, *, gpu: str, permits: int = 8, slo_ms: int = 2000) -> str:
    """Model group `llama` on one SIMULATED engine, overflowing to the FAKE
    external provider `ext`."""
    return (
        section("scheduler", ttft_slo_ms=slo_ms, telemetry_interval_ms=100, stale_after_ms=5000)
        + section(f"providers.sim-{gpu}-0", type="openai_compat", base_url=f"{sim.url}/v1",
                  local={"gpu": gpu, "gpu_hour_usd": 2.0, "permits": permits, "telemetry": "sim"})
        + openai_provider("ext", fake)
        + model_group(
            "llama",
            {"provider": f"sim-{gpu}-0", "model": "llama"},
            {"provider": "ext", "model": "fake-mini",
             "price": {"input_per_million": 0.15, "output_per_million": 0.6}},
        )
    )


# --------------------------------------------------------------------------
# Launching
# --------------------------------------------------------------------------


class Launcher:
    """Starts fakes and gateways; kills them all in `shutdown`."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.bin = str(switchyard_bin())
        self.processes: list[Process] = []
        self.gateways: list[Gateway] = []
        self._n = 0

    def fake(self, *, token_delay_ms: int = 0, api_key_env: str | None = None,
             env: dict[str, str] | None = None, batch_delay_ms: int | None = None) -> Fake:
        args = [self.bin, "fake-upstream", "--listen", "127.0.0.1:0"]
        if token_delay_ms:
            args += ["--token-delay-ms", str(token_delay_ms)]
        if batch_delay_ms is not None:
            args += ["--batch-delay-ms", str(batch_delay_ms)]
        if api_key_env:
            args += ["--api-key-env", api_key_env]
        self._n += 1
        proc = Process(f"fake-upstream#{self._n}", args, child_env(env))
        self.processes.append(proc)
        return Fake(proc)

    def sim(self, engine: str, *, speed: float = 1.0) -> Fake:
        """One SIMULATED engine (`switchyard sim --engine PROFILE:MODEL`);
        its `url` is the server root (the OpenAI API is under /v1)."""
        self._n += 1
        args = [self.bin, "sim", "--listen", "127.0.0.1:0", "--engine", engine,
                "--speed", str(speed)]
        proc = Process(f"sim#{self._n}", args, child_env())
        self.processes.append(proc)
        return Fake(proc)

    def gateway(self, config: str, env: dict[str, str] | None = None) -> Gateway:
        self._n += 1
        path = self.workdir / f"gateway-{self._n}.toml"
        path.write_text(config)
        # Each gateway its own access database, in the test's directory
        # (a test that restarts one on the same file passes it in `env`).
        environment = {PROVIDER_KEY_ENV: PROVIDER_KEY,
                       "SWITCHYARD__AUTH__DB": str(self.workdir / f"access-{self._n}.sqlite3")}
        environment.update(env or {})
        proc = Process(
            f"gateway#{self._n}",
            [self.bin, "serve", "--config", str(path), "--listen", "127.0.0.1:0"],
            child_env(environment),
        )
        self.processes.append(proc)
        gw = Gateway(proc, path)
        self.gateways.append(gw)
        return gw

    def dump_logs(self) -> str:
        return "\n\n".join(f"--- {p.name} stderr ---\n{p.log_text(40)}" for p in self.processes)

    def shutdown(self) -> None:
        for gw in self.gateways:
            gw.close_clients()
        for p in reversed(self.processes):
            p.kill()


# --------------------------------------------------------------------------
# A shared, fault-free environment for the happy-path tests
# --------------------------------------------------------------------------

AZURE_API_VERSION = "2024-10-21"


class Basic:
    """One gateway over three fakes (OpenAI, Anthropic and Azure formats)."""

    def __init__(self, launcher: Launcher):
        self.openai_fake = launcher.fake()
        self.anthropic_fake = launcher.fake()
        self.azure_fake = launcher.fake()
        config = (
            openai_provider("oai", self.openai_fake)
            + anthropic_provider("anth", self.anthropic_fake)
            + azure_provider("azure", self.azure_fake, AZURE_API_VERSION)
            + model_group("gpt-test", {"provider": "oai", "model": "fake-gpt-upstream"})
            + model_group("claude-test", {"provider": "anth", "model": "fake-claude-upstream"})
            + model_group("azure-test", {"provider": "azure", "model": "my-azure-deployment"})
            + model_group("embed-test", {"provider": "oai", "model": "fake-embedding-upstream"})
            + model_group("acme/large-v1", {"provider": "oai", "model": "fake-acme"})
        )
        self.gateway = launcher.gateway(config)
        self.client = self.gateway.client()


# --------------------------------------------------------------------------
# Small helpers shared by the tests
# --------------------------------------------------------------------------


def answer_to(text: str) -> str:
    """What the fake model answers to a last user message `text`."""
    return f"Fake answer to: {text}"


def words(text: str) -> int:
    return len(text.split())


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def collect_stream(stream) -> tuple[str, list]:
    """(concatenated content deltas, all chunks)."""
    chunks = list(stream)
    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
    )
    return text, chunks


def reassemble_tool_calls(chunks) -> dict[int, dict]:
    calls: dict[int, dict] = {}
    for c in chunks:
        for choice in c.choices:
            for tc in choice.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    call["id"] = tc.id
                if tc.function and tc.function.name:
                    call["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    call["arguments"] += tc.function.arguments
    return calls


def fault_status(status: int, **kw: Any) -> dict:
    return {"kind": "status", "status": status, **kw}

