"""The scheduler end to end on a virtual clock with a fake DCO: each MP230 rule."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.errors import AdmissionRefused, BadDocument, Forbidden, ScheduleConflict
from scheduler.requests import Priority, RequestState, ScheduleState
from scheduler.service import Scheduler
from smets1.clock import VirtualClock, VirtualEventLoop
from tests.scheduler.fakes import (
    DAY,
    EPOCH,
    LARGE_IMAGE,
    USER_A,
    USER_B,
    USER_C,
    FakeDco,
    config,
    cut_off,
    devices,
    image_of_size,
    make_scheduler,
    run_virtual,
    running,
    stop,
)


def released_per_day(s: Scheduler) -> dict[int, int]:
    return s.calendar.released_per_day()


def kinds(s: Scheduler, user: int) -> list[str]:
    return [k for _, _, k, _ in s.store.notifications(user, 0, 10_000)]


def test_750000_bytes_is_not_large_750001_is() -> None:
    async def main(clock: VirtualClock) -> tuple[bool, bool]:
        s, _ = make_scheduler(clock)
        small = await s.store_image(USER_A, image_of_size(750_000))
        large = await s.store_image(USER_A, image_of_size(750_001, seed=2))
        # The small one is released at once, beyond any allowance; the large one is counted.
        sub = s.submit_activations(USER_A, small.firmware_hash, devices(600))
        assert sub.held == 0 and len(sub.accepted) == 600
        assert s.calendar.unscheduled_on(0) == 0
        await s.close()
        return s.is_large(small), s.is_large(large)

    assert run_virtual(main) == (False, True)


def test_500_in_a_day_released_501st_held_until_a_schedule() -> None:
    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        first = s.submit_activations(USER_A, img.firmware_hash, devices(499))
        assert first.held == 0
        # Counted over all the User's requests: the second submission crosses 500.
        second = s.submit_activations(USER_A, img.firmware_hash, devices(2, first=500))
        assert second.held == 1
        assert [r.state for r in second.accepted] == [RequestState.WAITING, RequestState.HELD]
        held = second.accepted[1]
        reason = s.held_reason(held) or ""
        assert "500" in reason and "schedule" in reason
        assert "held" in kinds(s, USER_A)
        await s.wait_idle()
        assert released_per_day(s) == {0: 500}
        assert held.state is RequestState.HELD
        # A schedule is asked for and agreed: the held request joins it and goes out.
        sch, _ = s.request_schedule(USER_A, 1)
        s.accept_schedule(USER_A, sch.schedule_id)
        assert held.state is RequestState.WAITING and held.schedule_id == sch.schedule_id
        await s.wait_idle()
        assert held.state is RequestState.DONE
        assert len(dco.activations) == 501
        await stop(s, task)

    run_virtual(main)


def test_capacity_exactly_full_spread_outside_peak_windows() -> None:
    cfg = config(
        large_images_per_day=20,
        user_daily_limit=10,
        peak_windows=[{"start_hour": 16, "end_hour": 19}],
    )

    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, cfg)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        a = s.submit_activations(USER_A, img.firmware_hash, devices(10))
        b = s.submit_activations(USER_B, img.firmware_hash, devices(10, first=100))
        c = s.submit_activations(USER_C, img.firmware_hash, devices(1, first=200))
        assert a.planned == {0: 10} and b.planned == {0: 10}
        assert c.planned == {1: 1}  # day 0 is exactly full
        await s.wait_idle()
        assert released_per_day(s) == {0: 20, 1: 1}
        times = sorted(t - EPOCH for _, t in dco.activations)
        assert not any(16 * 3600 <= t % DAY < 19 * 3600 for t in times)
        # Spread over the day, not one burst: 20 a day means one every 21 off-peak minutes.
        gaps = [b - a for a, b in itertools.pairwise(times[:20])]
        assert min(gaps) > 3_000
        assert times[19] < DAY
        await stop(s, task)

    run_virtual(main)


def test_two_users_competing_share_the_day_round_robin() -> None:
    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, config(large_images_per_day=100))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        # A submits first and more; B must not wait behind all of A's work.
        s.submit_activations(USER_A, img.firmware_hash, devices(60))
        s.submit_activations(USER_B, img.firmware_hash, devices(20, first=500))
        task = await running(s)
        await s.wait_idle()
        owner = {r.device_id: r.user for r in s.requests}
        order = [owner[d] for d, _ in dco.activations]
        assert order[:6] == [USER_A, USER_B] * 3
        assert order[:40].count(USER_B) == 20  # B is done within the first 40 releases
        assert [r.request_id for r in s.requests_of(USER_A)] == sorted(
            r.request_id for r in s.requests_of(USER_A)
        )
        a_order = [d for d, _ in dco.activations if owner[d] == USER_A]
        assert a_order == devices(60)  # first come, first served within a User
        await stop(s, task)

    run_virtual(main)


def test_accepting_a_schedule_moves_an_earlier_one_and_tells_its_user() -> None:
    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, config(large_images_per_day=100))
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        a, _ = s.request_schedule(USER_A, 300)
        s.accept_schedule(USER_A, a.schedule_id)
        assert a.batches == {0: 100, 1: 100, 2: 100}
        s.submit_activations(USER_A, img.firmware_hash, devices(300), schedule_id=a.schedule_id)
        b, proposal = s.request_schedule(USER_B, 50)
        assert b.batches == {0: 50}
        assert [(m.schedule_id, m.day, m.count) for m in proposal.moves] == [(a.schedule_id, 0, 50)]
        assert "schedule_moved" not in kinds(s, USER_A)  # a proposal moves nothing
        s.accept_schedule(USER_B, b.schedule_id)
        assert a.batches == {0: 50, 1: 100, 2: 100, 3: 50}
        assert a.moves == 1
        moved = s.store.notifications(USER_A, 0, 100)[-1]
        assert moved[2] == "schedule_moved"
        assert moved[3]["after"][-1] == {"date": "2025-03-04", "devices": 50}
        s.submit_activations(USER_B, img.firmware_hash, devices(50, first=1000), schedule_id=2)
        await s.wait_idle()
        assert released_per_day(s) == {0: 100, 1: 100, 2: 100, 3: 50}
        per_user_day0 = Counter(
            r.user for r in s.requests if r.released_at is not None and r.released_at < EPOCH + DAY
        )
        assert per_user_day0 == {USER_A: 50, USER_B: 50}
        statuses = s.batch_status(a)
        assert [b.released for b in statuses] == [50, 100, 100, 50]
        assert all(b.trt_met == b.devices for b in statuses)
        assert len(dco.activations) == 350
        await stop(s, task)

    run_virtual(main)


def test_excess_moved_over_several_days_fills_later_days_to_capacity() -> None:
    # B claims half of each of A's four full days; A's 200 moved devices must fill the
    # next days up to capacity (2 days of 100), not sit 50 a day on four more days.
    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, config(large_images_per_day=100))
        a, _ = s.request_schedule(USER_A, 400)
        s.accept_schedule(USER_A, a.schedule_id)
        b, proposal = s.request_schedule(USER_B, 200)
        assert b.batches == {0: 50, 1: 50, 2: 50, 3: 50}
        assert len(proposal.moves) == 4
        s.accept_schedule(USER_B, b.schedule_id)
        assert a.batches == {0: 50, 1: 50, 2: 50, 3: 50, 4: 100, 5: 100}
        await s.close()

    run_virtual(main)


def test_accept_after_capacity_changed_is_a_conflict() -> None:
    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, config(large_images_per_day=100))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        a, _ = s.request_schedule(USER_A, 100)
        s.submit_activations(USER_B, img.firmware_hash, devices(30))
        with pytest.raises(ScheduleConflict, match="accept again"):
            s.accept_schedule(USER_A, a.schedule_id)
        assert s.accept_schedule(USER_A, a.schedule_id).state is ScheduleState.AGREED
        with pytest.raises(ScheduleConflict):
            s.accept_schedule(USER_A, a.schedule_id)
        await s.close()

    run_virtual(main)


def test_security_fix_goes_first_and_moves_routine_work() -> None:
    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, config(large_images_per_day=10, user_daily_limit=10))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(10))
        s.submit_activations(USER_B, img.firmware_hash, devices(10, first=100))
        # Days 0 and 1 are full: routine work is refused, a security fix is not.
        with pytest.raises(AdmissionRefused):
            s.submit_activations(
                USER_C, img.firmware_hash, devices(1, first=300), all_or_nothing=True
            )
        sub = s.submit_activations(
            USER_C, img.firmware_hash, devices(1, first=200), priority=Priority.SECURITY
        )
        assert sub.planned == {0: 1}
        moved = [r for r in s.requests_of(USER_A) if r.planned_day != 0]
        assert len(moved) == 1 and moved[0].planned_day == 2
        assert "moved" in kinds(s, USER_A)
        task = await running(s)
        await s.wait_idle()
        assert dco.activations[0][0] == devices(1, first=200)[0]
        assert max(released_per_day(s).values()) == 10
        await stop(s, task)

    run_virtual(main)


def test_security_fix_moves_a_schedule_only_with_notice() -> None:
    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, config(large_images_per_day=10))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        a, _ = s.request_schedule(USER_A, 20)
        s.accept_schedule(USER_A, a.schedule_id)
        s.submit_activations(USER_A, img.firmware_hash, devices(20), schedule_id=a.schedule_id)
        s.submit_activations(
            USER_B, img.firmware_hash, devices(1, first=500), priority=Priority.SECURITY
        )
        assert a.batches == {0: 9, 1: 10, 2: 1}
        assert kinds(s, USER_A) == ["schedule_moved"]
        assert s.calendar.scheduled_on(0) + s.calendar.unscheduled_on(0) == 10
        task = await running(s)
        await s.wait_idle()
        assert released_per_day(s) == {0: 10, 1: 10, 2: 1}
        assert [b.released for b in s.batch_status(a)] == [9, 10, 1]
        await stop(s, task)

    run_virtual(main)


def test_refused_at_submission_with_the_earliest_date_and_nothing_stored() -> None:
    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, config(large_images_per_day=10, user_daily_limit=10))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(10))
        s.submit_activations(USER_B, img.firmware_hash, devices(10, first=100))
        before = len(s.requests)
        with pytest.raises(AdmissionRefused) as exc:
            s.submit_activations(
                USER_C, img.firmware_hash, devices(1, first=300), all_or_nothing=True
            )
        assert exc.value.earliest_day == 2
        assert "2025-03-03" in exc.value.reason and "TRT" in exc.value.reason
        assert len(s.requests) == before
        assert len(s.store.load_requests()) == before
        # Partly: what fits is accepted, the rest refused with a recorded reason.
        sub = s.submit_activations(USER_C, img.firmware_hash, devices(3, first=300))
        assert (len(sub.accepted), sub.refused, sub.earliest_day) == (0, 3, 2)
        assert s.refusals[-1].devices == 3
        assert "refused" in kinds(s, USER_C)
        await s.close()

    run_virtual(main)


def test_validation_errors_name_the_fault() -> None:
    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, n_devices=5)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        with pytest.raises(BadDocument, match="FirmwareHash"):
            s.submit_activations(USER_A, b"\x00" * 32, devices(1))
        with pytest.raises(BadDocument, match="unknown device"):
            s.submit_activations(USER_A, img.firmware_hash, devices(1, first=99))
        with pytest.raises(Forbidden):
            s.submit_activations(0x1234, img.firmware_hash, devices(1))
        with pytest.raises(Forbidden):
            s.request_schedule(USER_A, 10, user=USER_B)
        assert s.requests == []
        await s.close()

    run_virtual(main)


def test_trt_met_and_missed_and_overdue_flagged_at_seven_days() -> None:
    async def main(clock: VirtualClock) -> None:
        dco = FakeDco(clock)
        ids = devices(3)
        dco.per_device_seconds = {ids[1]: 6 * DAY, ids[2]: 8 * DAY}
        s, _ = make_scheduler(clock, dco=dco)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, ids)
        await s.wait_idle()
        reqs = s.requests_of(USER_A)
        assert [r.trt_met for r in reqs] == [True, False, False]
        assert [r.overdue for r in reqs] == [False, False, True]
        assert kinds(s, USER_A).count("overdue") == 1
        responses = [p for _, _, k, p in s.store.notifications(USER_A) if k == "response"]
        assert [p["trt_met"] for p in responses] == [True, False, False]
        await stop(s, task)

    run_virtual(main)


def test_restart_from_sqlite_loses_nothing_and_resumes(tmp_path: Path) -> None:
    cfg = config(large_images_per_day=10, user_daily_limit=10)
    state = tmp_path / "state"
    stop_at = EPOCH + 1.5 * DAY
    first_log: list[tuple[int, float]] = []

    async def first(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, cfg, state_dir=state)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        sch, _ = s.request_schedule(USER_A, 15)
        s.accept_schedule(USER_A, sch.schedule_id)
        s.submit_activations(USER_A, img.firmware_hash, devices(15), schedule_id=1)
        sub = s.submit_activations(USER_B, img.firmware_hash, devices(2, first=100))
        assert sub.planned == {1: 2}
        await clock.sleep_until(stop_at)  # killed mid-run: day 1 is partly released
        first_log.extend(dco.activations)
        await stop(s, task)

    run_virtual(first)
    assert 10 < len(first_log) < 17

    async def second(clock: VirtualClock) -> None:
        await clock.sleep_until(stop_at)  # the same moment, in a fresh process
        s, dco = make_scheduler(clock, cfg, state_dir=state)
        assert len(s.requests) == 17
        assert s.schedules[1].state is ScheduleState.AGREED
        assert s.schedules[1].batches == {0: 10, 1: 5}
        # Released is what the store says went out, even if the DCO never saw the last one.
        assert s.calendar.released_on(0) == 10
        assert s.calendar.released_on(1) >= len(first_log) - 10
        assert s.calendar.user_unscheduled(1, USER_B) == 2
        assert set(s.images) == {(await dco.update_firmware(LARGE_IMAGE)).firmware_hash}
        task = await running(s)
        await s.wait_idle()
        assert all(r.state is RequestState.DONE for r in s.requests)
        # Answered before the stop: never sent again. In flight at the stop: re-issued.
        answered = {d for d, t in first_log if t + dco.activation_seconds < stop_at}
        assert not answered & {d for d, _ in dco.activations}
        assert len(answered) + len(dco.activations) == 17
        assert released_per_day(s) == {0: 10, 1: 7}
        await stop(s, task)

    run_virtual(second)


def test_hard_kill_loses_nothing_accepted(tmp_path: Path) -> None:
    """No close(), no flush: the process just stops. Every accepted request, the agreed
    schedule and the refusal are there when it opens again; capacity still holds."""
    cfg = config(large_images_per_day=10, user_daily_limit=10)
    state = tmp_path / "state"
    keep: list[Scheduler] = []

    async def first(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, cfg, state_dir=state)
        keep.append(s)  # never closed: as if killed
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        sch, _ = s.request_schedule(USER_A, 12)
        s.accept_schedule(USER_A, sch.schedule_id)
        s.submit_activations(USER_A, img.firmware_hash, devices(12), schedule_id=1)
        s.submit_activations(USER_B, img.firmware_hash, devices(8, first=100))
        s.submit_activations(USER_C, img.firmware_hash, devices(1, first=200))
        await clock.sleep(0.3 * DAY)
        assert not task.done()
        await cut_off()

    run_virtual(first)

    async def second(clock: VirtualClock) -> None:
        await clock.sleep(0.3 * DAY)
        s, dco = make_scheduler(clock, cfg, state_dir=state)
        await dco.update_firmware(LARGE_IMAGE)  # the DCO keeps its own images
        assert len(s.requests) == 20
        assert [f.devices for f in s.refusals] == [1]
        assert s.schedules[1].batches == {0: 10, 1: 2}
        task = await running(s)
        await s.wait_idle()
        assert all(r.state is RequestState.DONE for r in s.requests)
        assert max(released_per_day(s).values()) <= 10
        await stop(s, task)

    run_virtual(second)


def test_far_future_execution_date_cancels_pending_requests() -> None:
    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, config(large_images_per_day=10, user_daily_limit=2))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        sub = s.submit_activations(USER_A, img.firmware_hash, devices(3))
        assert sub.held == 1 and s.calendar.free(0) == 8
        far = datetime(3000, 1, 1, tzinfo=UTC).timestamp()  # what DUIS uses to cancel
        out = s.submit_activations(USER_A, img.firmware_hash, devices(3), execution_time=far)
        assert len(out.cancelled) == 3 and out.accepted == []
        assert {r.state for r in s.requests} == {RequestState.CANCELLED}
        assert s.calendar.free(0) == 10
        task = await running(s)
        await s.wait_idle()
        assert dco.activations == []
        # Another User cannot cancel A's requests.
        s.submit_activations(USER_A, img.firmware_hash, devices(1, first=50))
        out = s.submit_activations(
            USER_B, img.firmware_hash, devices(1, first=50), execution_time=far
        )
        assert out.cancelled == []
        await stop(s, task)

    run_virtual(main)


def test_a_late_release_loop_catches_up_instead_of_spilling_into_the_next_day() -> None:
    # 24 a day: one every hour. The process then stalls for 5 hours of its clock (a scaled
    # clock whose loop ran late): the releases due meanwhile go out at once, in pace.
    cfg = config(large_images_per_day=24, user_daily_limit=24)

    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, cfg)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(24))
        await clock.sleep(2 * 3600 + 60)  # releases at 0 h, 1 h, 2 h
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        loop.advance(5 * 3600)  # no timer ran for five hours
        await clock.sleep(1)
        released = sum(1 for r in s.requests if r.released_at is not None)
        # 0-7 h were due by now: 3 went out before the stall, then the one due at 3 h,
        # and the catch-up sends at once what an hour's backlog allows (4 with no catch-up).
        assert released == 6
        await s.wait_idle()
        assert released_per_day(s) == {0: 24}
        await stop(s, task)

    run_virtual(main)


@dataclass
class RoomDco(FakeDco):
    """A DCO that turns 11.3s away while `room` is clear (scheduler.release.ReleaseRoom,
    as orchestrator.dco_client is after a 503)."""

    room: asyncio.Event = field(default_factory=asyncio.Event)

    def room_for_release(self) -> bool:
        return self.room.is_set()

    async def wait_for_release_room(self) -> None:
        await self.room.wait()


def test_releases_held_while_the_dco_has_no_room_and_released_once_it_has() -> None:
    async def main(clock: VirtualClock) -> None:
        dco = RoomDco(clock)  # no room at first
        s, _ = make_scheduler(clock, dco=dco)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(10))
        await clock.sleep(6 * 3600)  # long enough for every release, had there been room
        assert dco.activations == []  # held: nothing released, no task spawned for it
        assert sum(1 for r in s.requests if r.released_at is not None) == 0
        held, held_seconds = s.releases_held
        assert held == 1 and held_seconds == 0.0  # still holding, not yet counted
        dco.room.set()
        await s.wait_idle()
        assert len(dco.activations) == 10
        assert all(r.state is RequestState.DONE for r in s.requests)
        held, held_seconds = s.releases_held
        assert held == 1 and held_seconds >= 6 * 3600
        await stop(s, task)

    run_virtual(main)
