"""Schedule ids come from the store, survive restarts, and a refused or failed write
leaves nothing behind (issue 10, item 4)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from scheduler.errors import BadDocument
from scheduler.requests import ScheduleState
from scheduler.service import Scheduler
from smets1.clock import VirtualClock
from tests.scheduler.fakes import (
    LARGE_IMAGE,
    USER_A,
    USER_B,
    config,
    devices,
    make_scheduler,
    run_virtual,
)


def _open(clock: VirtualClock, state: Path) -> Scheduler:
    s, _ = make_scheduler(clock, config(), state_dir=state)
    return s


def test_a_refused_schedule_leaves_no_zombie_and_ids_never_collide_after_restart(
    tmp_path: Path,
) -> None:
    async def body(clock: VirtualClock) -> None:
        s = _open(clock, tmp_path)
        first, _ = s.request_schedule(USER_A, 10)
        # 2**64 used to overflow SQLite after the schedule was already in memory.
        with pytest.raises(BadDocument) as err:
            s.request_schedule(USER_A, 10, max_per_day=2**64)
        assert err.value.field == "max_per_day"
        assert list(s.schedules) == [first.schedule_id]
        b, _ = s.request_schedule(USER_B, 20)
        await s.close()

        s = _open(clock, tmp_path)
        a2, _ = s.request_schedule(USER_A, 30)
        assert a2.schedule_id not in (first.schedule_id, b.schedule_id)
        await s.close()

        s = _open(clock, tmp_path)
        got = {sid: (sch.user, sch.devices) for sid, sch in s.schedules.items()}
        assert got == {
            first.schedule_id: (USER_A, 10),
            b.schedule_id: (USER_B, 20),
            a2.schedule_id: (USER_A, 30),
        }
        await s.close()

    run_virtual(body)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"devices": 0}, "devices"),
        ({"devices": 10**9}, "devices"),
        ({"devices": 5, "max_per_day": 0}, "max_per_day"),
        ({"devices": 5, "max_per_day": 2**63}, "max_per_day"),
        ({"devices": 5, "start_day": 10**7}, "start_date"),
    ],
)
def test_every_schedule_field_is_bounded(kw: dict[str, int], field: str) -> None:
    async def body(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, config())
        try:
            devices = kw.pop("devices")
            with pytest.raises(BadDocument) as err:
                s.request_schedule(USER_A, devices, **kw)
            assert err.value.field == field
            assert s.schedules == {} and s.calendar.days() == []
        finally:
            await s.close()

    run_virtual(body)


def test_memory_changes_only_after_the_write_succeeds(tmp_path: Path) -> None:
    async def body(clock: VirtualClock) -> None:
        s = _open(clock, tmp_path)
        proposed, _ = s.request_schedule(USER_A, 10)
        db = s.store.db
        s.store.db = sqlite3.connect(tmp_path / "scheduler.sqlite", isolation_level=None)
        s.store.db.execute("PRAGMA query_only = ON")  # every write now fails
        try:
            with pytest.raises(sqlite3.OperationalError):
                s.request_schedule(USER_B, 5)
            with pytest.raises(sqlite3.OperationalError):
                s.accept_schedule(USER_A, proposed.schedule_id)
            assert list(s.schedules) == [proposed.schedule_id]
            assert proposed.state is ScheduleState.PROPOSED
            assert s.calendar.days() == []  # nothing reserved
        finally:
            s.store.db.close()
            s.store.db = db
        agreed = s.accept_schedule(USER_A, proposed.schedule_id)
        assert agreed.state is ScheduleState.AGREED and s.calendar.days() != []
        await s.close()

    run_virtual(body)


def test_an_11_3_whose_write_fails_books_no_capacity(tmp_path: Path) -> None:
    async def body(clock: VirtualClock) -> None:
        s = _open(clock, tmp_path)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        free = s.calendar.free(0)
        db = s.store.db
        s.store.db = sqlite3.connect(tmp_path / "scheduler.sqlite", isolation_level=None)
        s.store.db.execute("PRAGMA query_only = ON")  # every write now fails
        try:
            with pytest.raises(sqlite3.OperationalError):
                s.submit_activations(USER_A, img.firmware_hash, devices(3))
        finally:
            s.store.db.close()
            s.store.db = db
        assert s.calendar.free(0) == free and s.requests == []
        assert len(s.submit_activations(USER_A, img.firmware_hash, devices(3)).accepted) == 3
        await s.close()

    run_virtual(body)
