"""Edges of the MP230 rules: restart after a cancel, moves within the allowance, round
robin after a queue empties, cancelling released work, past batches, the write-behind
timer, the TRT and seven-day boundaries, and the counters kept on every change."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from scheduler.requests import ActivationRequest, Priority, RequestState
from scheduler.service import Scheduler
from scheduler.store import FLUSH_TIMER_MAX_SECONDS, FLUSH_WALL_SECONDS, Store
from smets1.clock import VirtualClock
from smets1.config_dcc import SchedulerConfig, UserConfig
from smets1.image import LARGE_IMAGE_BYTES
from tests.scheduler.fakes import (
    DAY,
    LARGE_IMAGE,
    USER_A,
    USER_B,
    USER_C,
    FakeDco,
    config,
    devices,
    make_scheduler,
    run_virtual,
    running,
    stop,
)

#: What DUIS sends to cancel a pending 11.3.
CANCEL_AT = datetime(3000, 1, 1, tzinfo=UTC).timestamp()
USER_D = 0x90B3_D51F_3004_0000


def released_per_day(s: Scheduler) -> dict[int, int]:
    return s.calendar.released_per_day()


def kinds(s: Scheduler, user: int) -> list[str]:
    return [k for _, _, k, _ in s.store.notifications(user, 0, 10_000)]


def assert_counts_match(s: Scheduler) -> None:
    assert +s.state_counts == Counter(r.state for r in s.requests)
    assert +s.trt_counts == Counter(r.trt_met for r in s.requests if r.trt_met is not None)
    assert s.overdue_count == sum(1 for r in s.requests if r.overdue)
    for user in {r.user for r in s.requests}:
        assert s.requests_of(user) == [r for r in s.requests if r.user == user]


# -- 1: restart after a cancel -----------------------------------------------------------


def test_restart_after_cancel_counts_no_cancelled_request(tmp_path: Path) -> None:
    cfg = config(large_images_per_day=10, user_daily_limit=5)
    state = tmp_path / "state"

    async def first(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, cfg, state_dir=state)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(5))
        out = s.submit_activations(USER_A, img.firmware_hash, devices(5), execution_time=CANCEL_AT)
        assert len(out.cancelled) == 5
        assert s.calendar.free(0) == 10
        await s.close()

    run_virtual(first)

    async def second(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, cfg, state_dir=state)
        assert s.calendar.free(0) == 10
        assert s.calendar.user_unscheduled(0, USER_A) == 0
        assert s.state_counts[RequestState.CANCELLED] == 5
        img = await s.store_image(USER_A, LARGE_IMAGE)
        sub = s.submit_activations(USER_A, img.firmware_hash, devices(5, first=100))
        assert sub.held == 0 and sub.planned == {0: 5}  # the allowance is whole again
        await s.close()

    run_virtual(second)


# -- 3: a security fix moves work within its User's allowance ---------------------------


def test_security_fix_moves_routine_work_within_the_users_daily_limit() -> None:
    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(
            clock,
            config(large_images_per_day=10, user_daily_limit=5),
            users=[UserConfig(id=USER_D)],
        )
        img = await s.store_image(USER_A, LARGE_IMAGE)
        h = img.firmware_hash
        now = clock.now()
        s.submit_activations(USER_A, h, devices(5, 1), execution_time=now + 2 * DAY + 60)
        s.submit_activations(USER_B, h, devices(5, 10), execution_time=now + DAY + 60)
        s.submit_activations(USER_C, h, devices(5, 20), execution_time=now + DAY + 60)
        s.submit_activations(USER_C, h, devices(5, 30))
        s.submit_activations(USER_A, h, devices(5, 40))  # day 0 full; A's are the latest
        sub = s.submit_activations(USER_D, h, devices(1, 50), priority=Priority.SECURITY)
        assert sub.planned == {0: 1}
        # Day 1 is full and day 2 holds A's whole allowance: A's request goes to day 3.
        assert s.calendar.user_unscheduled(2, USER_A) == 5
        assert s.calendar.user_unscheduled(3, USER_A) == 1
        moved = [r for r in s.requests_of(USER_A) if r.planned_day == 3]
        assert len(moved) == 1
        for day in s.calendar.days():
            assert all(n <= 5 for n in s.calendar.bookings(day).values()), day
        await s.close()

    run_virtual(main)


# -- 4: round robin after a User's queue was emptied -------------------------------------


def test_round_robin_after_a_cancel_emptied_a_queue_gives_one_turn_each() -> None:
    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, config(large_images_per_day=100))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        h = img.firmware_hash
        task = await running(s)
        await clock.sleep(1)  # day 0 is open: submissions go straight to the due queues
        s.submit_activations(USER_A, h, devices(1, 1))
        s.submit_activations(USER_A, h, devices(1, 1), execution_time=CANCEL_AT)
        s.submit_activations(USER_A, h, devices(10, 100))
        s.submit_activations(USER_B, h, devices(10, 200))
        await s.wait_idle()
        owner = {r.device_id: r.user for r in s.requests}
        order = [owner[d] for d, _ in dco.activations]
        assert order == [USER_A, USER_B] * 10
        await stop(s, task)

    run_virtual(main)


# -- 5: cancelling reaches released work; the wire's rule decides what cancels ----------


def test_cancel_reaches_a_released_future_dated_activation() -> None:
    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        ids = devices(2)
        later = clock.now() + 12 * 3600
        sub = s.submit_activations(USER_A, img.firmware_hash, ids, execution_time=later)
        await clock.sleep(3600)  # released: the DCO holds the activation until `later`
        assert {r.state for r in sub.accepted} == {RequestState.RELEASED}
        out = s.submit_activations(USER_A, img.firmware_hash, ids[:1], execution_time=CANCEL_AT)
        assert out.cancelled == [] and out.cancelling == [sub.accepted[0]]
        await s.wait_idle()
        assert [d for d, _ in dco.cancels] == ids[:1]
        assert [r.state for r in sub.accepted] == [RequestState.CANCELLED, RequestState.DONE]
        assert ids[0] not in dco.versions and ids[1] in dco.versions
        responses = [p for _, _, k, p in s.store.notifications(USER_A) if k == "response"]
        assert [(p["device_id"], p["state"]) for p in responses] == [
            ("00-DB-12-00-00-00-00-01", "cancelled"),
            ("00-DB-12-00-00-00-00-02", "done"),
        ]
        assert_counts_match(s)
        # Nothing is pending any more: the device has nothing to cancel, and the User is told.
        again = s.submit_activations(USER_A, img.firmware_hash, ids[1:], execution_time=CANCEL_AT)
        assert again.cancelled == [] and again.cancelling == []
        await stop(s, task)

    run_virtual(main)


def test_cancel_of_a_released_activation_that_already_ran_is_reported() -> None:
    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, dco=FakeDco(clock, activation_seconds=3600))
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        sub = s.submit_activations(USER_A, img.firmware_hash, devices(1))
        await clock.sleep(60)  # released and transferring; no activation is held
        out = s.submit_activations(USER_A, img.firmware_hash, devices(1), execution_time=CANCEL_AT)
        assert out.cancelling == sub.accepted
        await s.wait_idle()
        await clock.sleep(1)
        assert sub.accepted[0].state is RequestState.DONE
        notes = [p for _, _, k, p in s.store.notifications(USER_A) if k == "response"]
        assert [p["state"] for p in notes] == ["not_cancelled", "done"]
        assert notes[0]["failure"] == "cancellation: no_transfer"
        await stop(s, task)

    run_virtual(main)


def test_ten_years_ahead_is_a_future_dated_activation_not_a_cancel() -> None:
    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, config(large_images_per_day=10, user_daily_limit=5))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(1))
        out = s.submit_activations(
            USER_A, img.firmware_hash, devices(1, first=2), execution_time=clock.now() + 3650 * DAY
        )
        assert out.cancelled == [] and out.planned == {3650: 1}
        assert s.requests[0].state is RequestState.WAITING
        await s.close()

    run_virtual(main)


# -- 6: work for a schedule whose batches are all past ----------------------------------


def test_schedule_with_only_past_batches_takes_a_day_with_free_capacity() -> None:
    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, config(large_images_per_day=10, user_daily_limit=5))
        img = await s.store_image(USER_A, LARGE_IMAGE)
        h = img.firmware_hash
        task = await running(s)
        a, _ = s.request_schedule(USER_A, 5)
        s.accept_schedule(USER_A, a.schedule_id)
        assert a.batches == {0: 5}
        await clock.sleep(DAY + 60)  # day 1: A's batch on day 0 went unused
        s.submit_activations(USER_B, h, devices(5, 100))
        s.submit_activations(USER_C, h, devices(5, 200))
        assert s.calendar.free(1) == 0
        sub = s.submit_activations(USER_A, h, devices(5, 300), schedule_id=a.schedule_id)
        assert sub.planned == {2: 5}
        assert a.batches == {2: 5} and s.calendar.reservations(2)[a.schedule_id] == 5
        assert s.calendar.committed(1) == 10 and s.calendar.committed(2) == 5
        await s.wait_idle()
        assert released_per_day(s) == {1: 10, 2: 5}
        assert all(s.calendar.day_of(r.released_at or 0) == r.planned_day for r in s.requests)
        await stop(s, task)

    run_virtual(main)


# -- 7: the write-behind timer ---------------------------------------------------------


def test_store_writes_the_last_change_of_a_burst_without_another_write(tmp_path: Path) -> None:
    async def burst(directory: Path, wait: Callable[[], Awaitable[None]]) -> None:
        store = Store(directory)
        req = ActivationRequest(1, USER_A, "c", devices(1)[0], b"\x01" * 32, 1, True, 0.0)
        store.add_requests([req])
        req.state = RequestState.DONE
        store.save_request(req)  # just after a flush: written behind, not now
        other = sqlite3.connect(directory / "scheduler.sqlite")
        assert other.execute("SELECT state FROM requests").fetchone() == ("waiting",)
        await wait()
        assert other.execute("SELECT state FROM requests").fetchone() == ("done",)
        other.close()
        store.close()

    # A real loop: written within FLUSH_WALL_SECONDS of wall time.
    (tmp_path / "real").mkdir()
    asyncio.run(burst(tmp_path / "real", lambda: asyncio.sleep(FLUSH_WALL_SECONDS * 3)))
    # A virtual clock's loop: written within FLUSH_TIMER_MAX_SECONDS or so of loop time.
    (tmp_path / "virtual").mkdir()
    run_virtual(
        lambda clock: burst(tmp_path / "virtual", lambda: clock.sleep(FLUSH_TIMER_MAX_SECONDS * 2))
    )


# -- 8: the TRT and seven-day boundaries -----------------------------------------------


def test_trt_of_exactly_five_days_is_met_one_second_more_is_missed() -> None:
    async def main(clock: VirtualClock) -> None:
        dco = FakeDco(clock)
        ids = devices(2)
        dco.per_device_seconds = {ids[0]: 5 * DAY, ids[1]: 5 * DAY + 1}
        s, _ = make_scheduler(clock, dco=dco)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, ids)
        await s.wait_idle()
        assert [r.trt_met for r in s.requests] == [True, False]
        await stop(s, task)

    run_virtual(main)


def test_overdue_is_more_than_seven_days_and_flagged_without_delay() -> None:
    async def main(clock: VirtualClock) -> None:
        dco = FakeDco(clock, activation_seconds=8 * DAY)
        s, _ = make_scheduler(clock, dco=dco)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        t0 = clock.now()
        (req,) = s.submit_activations(USER_A, img.firmware_hash, devices(1)).accepted
        await clock.sleep_until(t0 + 7 * DAY)
        for _ in range(3):  # let anything else due at this instant run first
            await asyncio.sleep(0)
        assert not req.overdue  # exactly seven days: not yet
        await clock.sleep_until(t0 + 7 * DAY + 1)
        assert req.overdue and s.overdue_count == 1
        (at,) = [at for _, at, k, _ in s.store.notifications(USER_A) if k == "overdue"]
        assert t0 + 7 * DAY < at < t0 + 7 * DAY + 0.1
        await s.wait_idle()
        await stop(s, task)

    run_virtual(main)


# -- 9 and 11: what a request keeps, and the counters -----------------------------------


def test_requests_keep_only_what_is_read_and_counters_follow_every_change(
    tmp_path: Path,
) -> None:
    cfg = config(large_images_per_day=10, user_daily_limit=2)
    state = tmp_path / "state"

    async def first(clock: VirtualClock) -> None:
        dco = FakeDco(clock)
        dco.fail_devices = {devices(1)[0]}
        s, _ = make_scheduler(clock, cfg, state_dir=state, dco=dco)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        sub = s.submit_activations(USER_A, img.firmware_hash, devices(3))
        s.submit_activations(USER_B, img.firmware_hash, devices(1, first=10))
        held = sub.accepted[2]
        assert held.state is RequestState.HELD and held.held_day == 0
        assert "2025-03-01" in (s.held_reason(held) or "")
        assert s.held_reason(sub.accepted[0]) is None
        assert_counts_match(s)
        await s.wait_idle()
        done = sub.accepted[1]
        assert done.state is RequestState.DONE and done.running_version == 0x02000000
        assert s.response_payload(done)["firmware_version"] == "02000000"
        assert not hasattr(done, "outcome") and not hasattr(done, "reading")
        assert not hasattr(done, "held_reason")
        assert_counts_match(s)
        await stop(s, task)

    run_virtual(first)

    async def second(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, cfg, state_dir=state)
        held = s.requests_of(USER_A)[2]
        assert held.held_day == 0 and "2025-03-01" in (s.held_reason(held) or "")
        assert_counts_match(s)
        assert s.state_counts[RequestState.DONE] == 2
        assert s.trt_counts == Counter({True: 3})
        await s.close()

    run_virtual(second)


def test_deliver_callbacks_false_posts_nothing() -> None:
    async def main(clock: VirtualClock) -> None:
        user = UserConfig(id=USER_D, callback_url="http://127.0.0.1:9/never")
        s, _ = make_scheduler(clock, users=[user])
        task = asyncio.create_task(s.run(deliver_callbacks=False))
        img = await s.store_image(USER_D, LARGE_IMAGE)
        s.submit_activations(USER_D, img.firmware_hash, devices(2))
        await s.wait_idle()
        assert kinds(s, USER_D) == ["response", "response"]  # kept for polling
        assert s.notifier.delivered == 0 and s.notifier.gave_up == 0
        await stop(s, task)

    run_virtual(main)


def test_large_threshold_default_is_the_image_modules() -> None:
    assert SchedulerConfig().large_image_threshold_bytes == LARGE_IMAGE_BYTES
