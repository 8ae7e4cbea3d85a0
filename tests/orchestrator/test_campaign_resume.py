"""Config campaigns are submitted once each, whatever restarts (issue 10, item 2).

Before the fix a scheduler submitted the config's campaigns only into an empty store: one
killed between two campaigns never submitted the second, and exited 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest

from orchestrator.campaign import (
    build_scheduler,
    campaign_devices,
    devices_by_model,
    make_images,
    submit_campaign,
)
from scheduler.requests import RequestState
from scheduler.service import Scheduler
from smets1.clock import VirtualClock
from smets1.config import FleetConfig
from tests.factories import tiny_config
from tests.scheduler.fakes import FakeDco, cut_off

USER = "90-B3-D5-1F-30-01-00-00"


def two_campaigns(schedule: str = "none") -> FleetConfig:
    data = tiny_config(scheduler={"large_image_threshold_bytes": 10_000})
    data["devices"][0]["count"] = 10
    sel = {"model": "acme-e1"}
    data["campaigns"] = [
        {"name": "first", "user": USER, "image": "acme-2", "devices": {**sel, "count": 6},
         "schedule": schedule},
        {"name": "second", "user": USER, "image": "acme-2",
         "devices": {**sel, "count": 4, "offset": 6}, "submit_after_seconds": 3_600},
    ]  # fmt: skip
    return FleetConfig.model_validate(data)


def _open(cfg: FleetConfig, clock: VirtualClock, state: Path) -> Scheduler:
    return build_scheduler(cfg, clock, FakeDco(clock), state, devices_by_model(cfg))


async def _submit_all(s: Scheduler, cfg: FleetConfig, clock: VirtualClock) -> list[bool]:
    images, by_model = make_images(cfg), devices_by_model(cfg)
    out = []
    for c in cfg.campaigns:
        await clock.sleep_until(clock.epoch + c.submit_after_seconds)
        out.append(await submit_campaign(s, c, images[c.image], campaign_devices(c, by_model, cfg)))
    return out


def test_a_scheduler_killed_between_campaigns_submits_the_later_one_once(tmp_path: Path) -> None:
    cfg = two_campaigns()

    async def main() -> None:
        clock = VirtualClock()
        images, by_model = make_images(cfg), devices_by_model(cfg)
        s = _open(cfg, clock, tmp_path)
        first = cfg.campaigns[0]
        assert await submit_campaign(
            s, first, images["acme-2"], campaign_devices(first, by_model, cfg)
        )
        await cut_off()  # kill -9: no close, no flush
        s = _open(cfg, clock, tmp_path)
        assert await _submit_all(s, cfg, clock) == [False, True]
        assert await _submit_all(s, cfg, clock) == [False, False]  # and never twice
        assert sorted(len(c.requests) for c in s.campaigns.values()) == [4, 6]
        assert len({r.device_id for r in s.requests}) == len(s.requests) == 10
        await s.close()
        s = _open(cfg, VirtualClock(), tmp_path)
        assert {n: len(c.requests) for n, c in s.campaigns.items()} == {"first": 6, "second": 4}
        await s.close()

    VirtualClock().run(main())


def test_a_kill_after_the_schedule_was_agreed_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = two_campaigns(schedule="agreed")

    class Killed(Exception):
        pass

    def die(*args: object, **kwargs: object) -> NoReturn:
        raise Killed

    async def main() -> None:
        clock = VirtualClock()
        s = _open(cfg, clock, tmp_path)
        with monkeypatch.context() as m:
            m.setattr(Scheduler, "submit_activations", die)
            with pytest.raises(Killed):
                await _submit_all(s, cfg, clock)
        assert len(s.schedules) == 1
        await cut_off()
        s = _open(cfg, clock, tmp_path)
        assert await _submit_all(s, cfg, clock) == [True, True]
        (schedule,) = s.schedules.values()
        assert schedule.assigned == 6
        first = [r for r in s.requests if r.campaign == "first"]
        assert {r.schedule_id for r in first} == {schedule.schedule_id}
        assert all(r.state is RequestState.WAITING for r in first)
        await s.close()

    VirtualClock().run(main())
