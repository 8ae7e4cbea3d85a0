"""No process of a distributed run outlives its launcher, however the launcher ends: the
roles watch its pid (orchestrator.serving.install_stop), the private broker gets SIGTERM
from the kernel when it dies (orchestrator.mosquitto), and SIGTERM stops the run as
Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONFIG = Path(__file__).parent / "files" / "tiny.yaml"
ROLE_LOGS = ("scheduler.log", "dco-w0.log", "fleet-0.log", "fleet-1.log")


def _processes_of(out: Path) -> list[int]:
    """Pids whose command line names `out` (the roles and the broker of that run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(out).encode() in a for a in argv):
            found.append(int(entry.name))
    return found


def _start(out: Path) -> subprocess.Popen[bytes]:
    launcher = subprocess.Popen(
        [
            *(sys.executable, "-m", "orchestrator.cli", "distributed", str(CONFIG)),
            *("--speed", "1", "--shards", "2", "--out", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = [out / name for name in ROLE_LOGS]
        if all(p.exists() and b" ready" in p.read_bytes() for p in logs[1:]):
            return launcher
        assert launcher.poll() is None, "the launcher ended before its roles were ready"
        time.sleep(0.2)
    launcher.kill()
    pytest.fail("the roles were not ready within 60 s")


def _gone_within(out: Path, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = _processes_of(out)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _processes_of(out)
    return left


@pytest.mark.mqtt
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_no_process_outlives_its_launcher(tmp_path: Path, how: signal.Signals) -> None:
    out = tmp_path / "run"
    launcher = _start(out)
    assert len(_processes_of(out)) >= 5  # four roles and the broker
    os.kill(launcher.pid, how)
    launcher.wait(30)
    left = _gone_within(out, 20)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"still running after the launcher ended ({how.name}): {left}"
    if how is signal.SIGTERM:
        # Stopped in order: every role wrote its status on the way out.
        assert all((out / f"{name}.json").exists() for name in ("dco-w0", "fleet-0"))
