"""Security work really goes first (MP230: "security updates might require precedence").

A security fix submitted when today's capacity is already booked takes the place of routine
work booked for today: the routine request moves to the earliest later day that fits (its
User told), and the fix is released today, within the capacity, ahead of the routine work
still queued for today.
"""

from __future__ import annotations

from typing import Any

from scheduler.requests import Priority, RequestState
from scheduler.service import Scheduler
from smets1.clock import VirtualClock
from tests.scheduler.fakes import (
    DAY,
    EPOCH,
    LARGE_IMAGE,
    USER_A,
    USER_B,
    USER_C,
    config,
    devices,
    make_scheduler,
    run_virtual,
    running,
    stop,
)


def notes(s: Scheduler, user: int, kind: str) -> list[dict[str, Any]]:
    return [p for _, _, k, p in s.store.notifications(user, 0, 10_000) if k == kind]


def test_security_fix_displaces_todays_routine_work_although_tomorrow_has_room() -> None:
    """Today is booked, tomorrow is free: the fix goes today, not tomorrow."""

    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, config(large_images_per_day=10, user_daily_limit=10))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        routine = s.submit_activations(USER_A, img.firmware_hash, devices(10)).accepted
        task = await running(s)
        # Part of today's routine work is out when the fix arrives (one every 8,640 s).
        await clock.sleep(20_000.0)
        out_before = len(dco.activations)
        assert out_before == 3
        fix_device = devices(1, first=200)[0]
        sub = s.submit_activations(
            USER_C, img.firmware_hash, [fix_device], priority=Priority.SECURITY
        )
        assert sub.planned == {0: 1}
        moved = [r for r in routine if r.planned_day != 0]
        # The latest routine request still waiting for today, to the next day with room.
        assert [r.device_id for r in moved] == [devices(10)[-1]]
        assert moved[0].planned_day == 1
        (note,) = notes(s, USER_A, "moved")
        assert note["request_id"] == moved[0].request_id
        assert (note["from_date"], note["to_date"]) == ("2025-03-01", "2025-03-02")
        assert "security" in note["reason"]
        await s.wait_idle()
        # Released today, next, ahead of the routine work still queued for today.
        assert dco.activations[out_before][0] == fix_device
        assert dco.activations[out_before][1] < EPOCH + DAY
        assert s.calendar.released_per_day() == {0: 10, 1: 1}
        assert moved[0].released_at is not None and moved[0].released_at >= EPOCH + DAY
        assert all(r.state is RequestState.DONE for r in s.requests)
        await stop(s, task)

    run_virtual(main)


def test_each_user_whose_work_a_security_campaign_moves_is_told() -> None:
    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, config(large_images_per_day=10, user_daily_limit=10))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(6))
        s.submit_activations(USER_B, img.firmware_hash, devices(4, first=100))
        fixes = devices(6, first=200)
        sub = s.submit_activations(USER_C, img.firmware_hash, fixes, priority=Priority.SECURITY)
        assert sub.planned == {0: 6}
        # Six routine requests leave today, latest submitted first: B's four, A's last two.
        assert len(notes(s, USER_B, "moved")) == 4
        assert len(notes(s, USER_A, "moved")) == 2
        assert s.calendar.committed(0) == 10
        task = await running(s)
        await s.wait_idle()
        assert [d for d, _ in dco.activations[:6]] == fixes
        assert s.calendar.released_per_day() == {0: 10, 1: 6}
        await stop(s, task)

    run_virtual(main)


def test_security_fix_with_todays_work_all_released_takes_tomorrows_place() -> None:
    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, config(large_images_per_day=2, user_daily_limit=10))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(4))  # days 0 and 1
        task = await running(s)
        await clock.sleep(DAY / 2 + 60)  # both of today's are out
        assert len(dco.activations) == 2
        fix = devices(1, first=200)
        sub = s.submit_activations(USER_C, img.firmware_hash, fix, priority=Priority.SECURITY)
        # Nothing of today is left to move: tomorrow's routine work makes room instead.
        assert sub.planned == {1: 1}
        (note,) = notes(s, USER_A, "moved")
        assert (note["from_date"], note["to_date"]) == ("2025-03-02", "2025-03-03")
        await s.wait_idle()
        assert dco.activations[2][0] == fix[0]
        assert s.calendar.released_per_day() == {0: 2, 1: 2, 2: 1}
        await stop(s, task)

    run_virtual(main)
