"""Fixtures for the end-to-end suite (helpers live in harness.py)."""

from __future__ import annotations

from typing import Iterable

import openai
import pytest

from harness import Basic, Launcher


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def launch(request, tmp_path) -> Iterable[Launcher]:
    """Per-test processes (fresh fault queues and breakers)."""
    launcher = Launcher(tmp_path)
    yield launcher
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and launcher.processes:
        print(launcher.dump_logs())
    launcher.shutdown()


@pytest.fixture(scope="session")
def basic(tmp_path_factory) -> Iterable[Basic]:
    launcher = Launcher(tmp_path_factory.mktemp("basic"))
    try:
        yield Basic(launcher)
    finally:
        launcher.shutdown()


@pytest.fixture
def client(request, basic: Basic) -> Iterable[openai.OpenAI]:
    """The SDK client of the shared gateway (no master key)."""
    yield basic.client
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(basic.gateway.process.log_text(40))
