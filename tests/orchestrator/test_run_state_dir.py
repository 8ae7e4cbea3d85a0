"""`smets1 run CONFIG --state-dir DIR`: the in-process fleet keeps its flash on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from emulator.flash_journal import JOURNAL_NAME, read_journal
from orchestrator.runner import run_config
from smets1.config import load_config

ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).parent / "files" / "tiny.yaml"


def test_persistence_changes_nothing_in_the_run_and_a_second_run_resumes(
    tmp_path: Path,
) -> None:
    config = load_config(TINY)
    plain = run_config(config, tmp_path / "plain", progress=None)
    kept = run_config(config, tmp_path / "kept", progress=None, flash_dir=tmp_path / "flash")
    for key in ("images_activated", "failed", "device_states", "blocks_delivered", "bus"):
        assert kept[key] == plain[key], key
    path = tmp_path / "flash" / JOURNAL_NAME
    devices = read_journal(path.read_bytes(), str(path)).devices
    assert len(devices) == plain["devices"]
    assert {head[1] for head, _, _ in devices.values()} == {7}  # DeviceState.ACTIVE
    # The same fleet again: every device already runs the image, nothing is sent.
    again = run_config(config, tmp_path / "again", progress=None, flash_dir=tmp_path / "flash")
    assert again["blocks_delivered"] == 0
    assert again["device_states"] == {"active": plain["devices"]}


def test_run_refuses_the_state_dir_of_another_fleet(tmp_path: Path) -> None:
    state = tmp_path / "flash"
    small = ROOT / "fleet_configs" / "small.yaml"
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", "--quiet", "--state-dir", str(state)]
    first = subprocess.run(
        [*cmd, str(TINY), "--out", str(tmp_path / "a")], capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    done = subprocess.run(
        [*cmd, str(small), "--out", str(tmp_path / "b")], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"smets1: error: fleet state dir {state} was written for")
    assert "fleet 'tiny'" in done.stderr and "not fleet 'small'" in done.stderr
