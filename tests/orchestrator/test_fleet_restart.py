"""The fleet role's --state-dir, from the command line.

A shard killed (SIGKILL) mid-campaign and started again on the same --state-dir resumes
every device from its flash: tests/orchestrator/test_kill.py proves it in its run that
kills each role in turn (each device runs what the scheduler recorded, booted once)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emulator.flash_journal import FlashJournal
from emulator.fleet import build_devices
from emulator.slots import FlashStore
from smets1.config import load_config

pytestmark = pytest.mark.mqtt

CONFIG = Path(__file__).parent / "files" / "tiny.yaml"
DEVICES = 24
SHARDS = 2


def test_fleet_role_refuses_a_state_dir_of_another_shard(tmp_path: Path) -> None:
    """One line naming the state dir and what it was written for; exit status 2."""
    state = tmp_path / "state"
    cfg = load_config(CONFIG)
    flash = FlashStore()
    FlashJournal.open(
        state, build_devices(cfg, 0, 2, flash=flash), flash, fleet=cfg.name, shard=0, shards=2
    ).close()
    argv = [sys.executable, "-m", "orchestrator.cli", "fleet", str(CONFIG)]
    argv += ["--shard", "1", "--shards", "2", "--state-dir", str(state)]
    argv += ["--broker", "mqtt://127.0.0.1:9"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("smets1: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"fleet state dir {state} was written for fleet 'tiny' shard 0/2" in lines[0]
    assert "not fleet 'tiny' shard 1/2" in lines[0]
