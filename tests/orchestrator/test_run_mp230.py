"""`smets1 run` with MP230 campaigns: per-User and per-batch outcomes in the summary."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import NoReturn

import pytest
import yaml

from orchestrator.cli import main
from scheduler.errors import ScheduleConflict
from scheduler.service import Scheduler
from smets1.config import load_config
from tests.factories import tiny_config

ROOT = Path(__file__).resolve().parents[2]
A, B, C = "90-B3-D5-1F-30-01-00-00", "90-B3-D5-1F-30-02-00-00", "90-B3-D5-1F-30-03-00-00"


def test_campaigns_with_schedule_allowance_and_security(tmp_path: Path) -> None:
    data = tiny_config(
        scheduler={
            "large_images_per_day": 4,
            "user_daily_limit": 1,
            "large_image_threshold_bytes": 10_000,
            "users": [{"id": A, "token": "a"}, {"id": B, "token": "b"}],
        }
    )
    group = data["devices"][0]
    data["devices"] = [
        {**group, "count": 4, "supplier": A},
        {**group, "count": 3, "supplier": B},
        {**group, "count": 1, "supplier": C},
    ]
    sel = {"model": "acme-e1"}
    data["campaigns"] = [
        {"name": "a-agreed", "user": A, "image": "acme-2", "schedule": "agreed",
         "max_per_day": 2, "devices": {**sel, "count": 4}},
        {"name": "b-over", "user": B, "image": "acme-2",
         "devices": {**sel, "count": 3}},
        {"name": "c-fix", "user": C, "image": "acme-2", "priority": "security",
         "devices": {**sel, "count": 1}, "submit_after_seconds": 60},
    ]  # fmt: skip
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    users = s["users"]
    assert users[A]["large_released_per_day"] == {"2025-03-01": 2, "2025-03-02": 2}
    batches = users[A]["schedules"][0]["batches"]
    assert [(b["devices"], b["done"], b["trt_met"]) for b in batches] == [(2, 2, 2), (2, 2, 2)]
    assert users[B]["held_for_schedule"] == 2 and "schedule" in users[B]["held_reason"]
    assert users[B]["activated"] == 1
    assert users[C]["security"] == 1 and users[C]["activated"] == 1
    assert s["held_for_schedule"] == 2
    assert s["max_large_images_released_in_a_day"] <= 4
    assert s["images_activated"] == 6 and s["trt_missed"] == 0


def test_mp230_config_loads_and_keeps_to_the_rules() -> None:
    cfg = load_config(ROOT / "fleet_configs" / "mp230.yaml")
    assert cfg.scheduler.user_daily_limit == 500
    assert {c.schedule for c in cfg.campaigns} == {"agreed", "none"}
    assert {c.priority for c in cfg.campaigns} == {"routine", "security"}


def _held_then_agreed(tmp_path: Path, agreed: bool = True, **scheduler: object) -> Path:
    data = tiny_config(
        scheduler={
            "large_images_per_day": 4,
            "user_daily_limit": 1,
            "large_image_threshold_bytes": 10_000,
            **scheduler,
        }
    )
    data["devices"][0]["count"] = 8
    sel = {"model": "acme-e1"}
    data["campaigns"] = [
        {"name": "a-over", "user": A, "image": "acme-2", "devices": {**sel, "count": 3}},
        {"name": "a-agreed", "user": A, "image": "acme-2", "schedule": "agreed",
         "devices": {**sel, "count": 4, "offset": 3}, "submit_after_seconds": 60},
    ]  # fmt: skip
    if not agreed:
        del data["campaigns"][1]
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_agreed_schedule_after_held_work_takes_the_held_requests_too(tmp_path: Path) -> None:
    path = _held_then_agreed(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    # 1 planned and 2 held from a-over; the schedule covers a-agreed's 4 and those 2.
    assert s["images_activated"] == 7 and s["refused"] == 0 and s["held_for_schedule"] == 0
    (schedule,) = s["users"][A]["schedules"]
    assert schedule["devices"] == 6
    assert s["max_large_images_released_in_a_day"] <= 4


def test_a_scheduler_refusal_in_a_run_is_recorded_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def conflict(*args: object, **kwargs: object) -> NoReturn:
        raise ScheduleConflict("the desk is closed")

    monkeypatch.setattr(Scheduler, "request_schedule", conflict)
    path = _held_then_agreed(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["refused"] == 4
    (refusal,) = s["users"][A]["refused"]
    assert refusal == {
        "campaign": "a-agreed",
        "devices": 4,
        "reason": "the desk is closed",
        "earliest_date": None,
    }
    assert s["images_activated"] == 1 and s["held_for_schedule"] == 2


def test_run_calls_no_callback_url(tmp_path: Path) -> None:
    """Under `smets1 run` notifications are stored, never POSTed (virtual clock)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/duis"
        path = _held_then_agreed(tmp_path, False, users=[{"id": A, "callback_url": url}])
        out = tmp_path / "out"
        assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    assert json.loads((out / "summary.json").read_text())["images_activated"] == 1
