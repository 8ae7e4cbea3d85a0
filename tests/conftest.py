"""Fixtures every test shares: a guard against leftover tasks, and a private broker.

The broker runs on a free port of 127.0.0.1 in the test's temp folder, never on a broker
that may already be running (1883). If mosquitto is missing, the fixture installs it with
apt-get only as root and with CI or SMETS1_ALLOW_APT set; otherwise it fails and says how
to get it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from orchestrator.mosquitto import Mosquitto, find_mosquitto

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mqtt: needs a mosquitto binary (started per test)")


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running on its event loop (STYLE 10).

    Async, so it runs on the test's own loop (pytest-asyncio gives a function-scoped
    fixture the loop of the test): what is still pending when the test returns was
    left behind by it.
    """
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in left:
        task.cancel()
    if left:
        await asyncio.gather(*left, return_exceptions=True)
        pytest.fail(f"test left {len(left)} task(s) running: {left[:3]}", pytrace=False)


@pytest.fixture(autouse=True)
def _no_leftover_tasks_in_own_loops(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a test whose own event loop (`clock.run`, `asyncio.run`: an asyncio.Runner)
    still holds unfinished tasks when the runner closes, where asyncio would cancel them
    without a word."""
    leftovers: list[asyncio.Task[object]] = []
    close = asyncio.Runner.close

    def checked_close(runner: asyncio.Runner) -> None:
        try:
            loop = runner.get_loop()
        except RuntimeError:  # closed already
            loop = None
        if loop is not None and not loop.is_closed():
            leftovers.extend(t for t in asyncio.all_tasks(loop) if not t.done())
        close(runner)

    monkeypatch.setattr(asyncio.Runner, "close", checked_close)
    yield
    if leftovers:
        pytest.fail(
            f"test left {len(leftovers)} task(s) unfinished on its own loop: {leftovers[:3]}",
            pytrace=False,
        )


def _install_mosquitto() -> str | None:
    allowed = os.environ.get("CI") or os.environ.get("SMETS1_ALLOW_APT")
    if not allowed or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    subprocess.run(["apt-get", "install", "-y", "mosquitto"], check=False, timeout=300)
    return find_mosquitto()


@pytest.fixture(scope="session")
def mosquitto_exe() -> str:
    exe = find_mosquitto() or _install_mosquitto()
    if exe is None:
        pytest.fail(
            "mosquitto is not on PATH nor in /usr/sbin. Install it (Debian/Ubuntu: "
            "`apt-get install mosquitto`; macOS: `brew install mosquitto`), or run as root "
            "with SMETS1_ALLOW_APT=1 (or CI=1) to let the tests install it.",
            pytrace=False,
        )
    return exe


@pytest.fixture
def broker(mosquitto_exe: str, tmp_path: Path) -> Iterator[Mosquitto]:
    """A running private mosquitto; `broker.url`, `broker.restart()`, stopped after."""
    mosq = Mosquitto(tmp_path / "mosquitto", exe=mosquitto_exe)
    mosq.start()
    try:
        yield mosq
    finally:
        mosq.stop()
