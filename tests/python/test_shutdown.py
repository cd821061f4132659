"""Graceful shutdown: SIGTERM stops new work but lets a stream in flight
finish, then the process exits 0."""

from __future__ import annotations

import http.client
import signal
import socket
import time

from harness import answer_to, model_group, openai_provider, section

# 17 words: the answer is 20 tokens, ~2 s at 100 ms a token.
PROMPT = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen"


def new_connection_outcome(gw) -> str:
    """What a brand-new client connection gets: 'refused' (or reset), or
    the status of GET /readyz."""
    try:
        r = gw.http("GET", "/readyz", timeout=3.0)
    except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected) as e:
        return f"refused ({type(e).__name__})"
    except socket.timeout:
        return "hung"
    return str(r.status)


def test_sigterm_lets_stream_finish_and_exits_zero(launch):
    fake = launch.fake(token_delay_ms=100)
    gw = launch.gateway(section("server", shutdown_grace_secs=10) + openai_provider("up", fake)
                        + model_group("m", {"provider": "up", "model": "x"}))
    assert gw.http("GET", "/readyz").status == 200

    stream = gw.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    chunks = iter(stream)
    received = [next(chunks) for _ in range(3)]

    gw.process.send_signal(signal.SIGTERM)
    gw.process.wait_for_record(lambda r: str(r.get("message", "")).startswith("shutting down"), timeout=5)
    outcome = new_connection_outcome(gw)
    print("new connection after SIGTERM:", outcome)
    assert outcome.startswith("refused") or outcome == "503", (
        f"a new connection after SIGTERM got {outcome!r}; expected it refused or /readyz 503"
    )

    started = time.monotonic()
    received += list(chunks)  # must end cleanly: no exception
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == answer_to(PROMPT), "the in-flight stream completed in full"
    assert [c.choices[0].finish_reason for c in received if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert time.monotonic() - started > 0.5, "the stream really was still in flight at SIGTERM"

    code = gw.process.wait_exit(timeout=8)
    assert code == 0, f"gateway exit status {code!r} (None = still running 8 s after the stream ended)"
    gw.process.wait_for_record(lambda r: r.get("message") == "shutdown complete", timeout=2)
