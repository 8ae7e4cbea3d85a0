"""Fixtures for the tests that need a real broker: a private mosquitto per test.

The broker runs on a free port of 127.0.0.1 in the test's temp folder, never on a
broker that may already be running (1883). If mosquitto is missing, the fixture installs
it with apt-get only as root and with CI or SMETS1_ALLOW_APT set; otherwise it fails and
says how to get it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from smets1.distributed import Mosquitto, find_mosquitto


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mqtt: needs a mosquitto binary (started per test)")


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
