"""The DCC's peak hours are the default: 16:00-19:00 UK local time, daylight saving included.

GMT in winter (16:00-19:00 UTC), BST in summer (15:00-18:00 UTC); on the days the clocks
change the wall clock decides.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from scheduler.calendar import Calendar
from smets1.clock import VirtualClock
from smets1.config import load_config
from smets1.config_dcc import SchedulerConfig
from smets1.errors import ConfigError
from tests.factories import tiny_config
from tests.scheduler.fakes import (
    LARGE_IMAGE,
    USER_A,
    config,
    devices,
    make_scheduler,
    running,
    stop,
)

LONDON = ZoneInfo("Europe/London")
HOUR = 3_600.0


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def default_calendar(epoch: float) -> Calendar:
    cfg = SchedulerConfig()
    return Calendar(
        epoch, 12_000, [(w.start_hour, w.end_hour) for w in cfg.peak_windows], cfg.peak_timezone
    )


def test_default_is_16_to_19_uk_local_time() -> None:
    cfg = SchedulerConfig()
    assert [(w.start_hour, w.end_hour) for w in cfg.peak_windows] == [(16, 19)]
    assert cfg.peak_timezone == "Europe/London"
    assert SchedulerConfig.model_validate({"peak_windows": []}).peak_windows == []


@pytest.mark.parametrize(
    ("day", "peak"),
    [
        ("2025-01-15", ("2025-01-15T16:00", "2025-01-15T19:00")),  # GMT
        ("2025-07-15", ("2025-07-15T15:00", "2025-07-15T18:00")),  # BST
        ("2025-03-30", ("2025-03-30T15:00", "2025-03-30T18:00")),  # spring forward, 01:00
        ("2025-10-26", ("2025-10-26T16:00", "2025-10-26T19:00")),  # fall back, 02:00
    ],
)
def test_peak_in_utc_follows_uk_clocks(day: str, peak: tuple[str, str]) -> None:
    c = default_calendar(utc(day + "T00:00"))
    assert c.peak_times(0) == ((utc(peak[0]), utc(peak[1])),)
    assert c.peak_end(utc(peak[0])) == utc(peak[1])
    assert c.peak_end(utc(peak[0]) - 1) is None
    assert c.peak_end(utc(peak[1])) is None
    assert c.offpeak_seconds(0) == 21 * HOUR
    assert c.offpeak_left(utc(peak[0])) == utc(day + "T00:00") + 24 * HOUR - utc(peak[1])


def test_a_window_across_the_change_of_the_clocks_is_as_long_as_the_wall_clock_says() -> None:
    # 00:00-03:00 local: two real hours when the clocks go forward, four when they go back
    # (the first of them, 00:00 BST, is 23:00 UTC the day before).
    # (00:00 BST on the day after a spring change is 23:00 UTC: that window starts within.)
    spring = Calendar(utc("2025-03-30T00:00"), 10, [(0, 3)])
    assert spring.peak_times(0) == (
        (utc("2025-03-30T00:00"), utc("2025-03-30T02:00")),
        (utc("2025-03-30T23:00"), utc("2025-03-31T00:00")),
    )
    assert spring.offpeak_seconds(0) == 21 * HOUR
    autumn = Calendar(utc("2025-10-25T00:00"), 10, [(0, 3)])
    assert autumn.peak_times(0) == (
        (utc("2025-10-25T00:00"), utc("2025-10-25T02:00")),
        (utc("2025-10-25T23:00"), utc("2025-10-26T00:00")),
    )
    assert autumn.peak_times(1) == ((utc("2025-10-26T00:00"), utc("2025-10-26T03:00")),)
    assert autumn.offpeak_seconds(1) == 21 * HOUR
    # In another zone, or in UTC, the hours are that zone's.
    assert Calendar(utc("2025-07-15T00:00"), 10, [(16, 19)], "UTC").peak_times(0) == (
        (utc("2025-07-15T16:00"), utc("2025-07-15T19:00")),
    )


def test_an_unknown_zone_is_refused_by_name(tmp_path: Path) -> None:
    data = tiny_config()
    data["scheduler"] = {"peak_timezone": "Mars/Olympus"}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "fleet.yaml" in text and "scheduler.peak_timezone" in text
    assert "Europe/London" in text and "'Mars/Olympus'" in text


@pytest.mark.parametrize("day", ["2025-01-15", "2025-07-15", "2025-03-30", "2025-10-26"])
def test_nothing_large_is_released_16_to_19_local(day: str) -> None:
    epoch = utc(day + "T00:00")
    clock = VirtualClock(epoch)

    async def main() -> list[float]:
        # 48 a day over 21 off-peak hours: two or three an hour, every off-peak hour.
        s, dco = make_scheduler(clock, config(large_images_per_day=48, user_daily_limit=48))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(48))
        task = await running(s)
        await s.wait_idle()
        assert s.calendar.released_per_day() == {0: 48}
        await stop(s, task)
        return [t for _, t in dco.activations]

    times = clock.run(main())
    local_hours = {datetime.fromtimestamp(t, UTC).astimezone(LONDON).hour for t in times}
    assert not local_hours & {16, 17, 18}
    # Released up to the window and from its end: the hours either side are not empty.
    assert {15, 19} <= local_hours
    assert all(epoch <= t < epoch + 24 * HOUR for t in times)
