"""Release policies (scheduler.release_policy) end to end on a virtual clock with a fake
DCO: what each kind holds, releases and shares."""

from __future__ import annotations

from collections import Counter
from typing import Any

from scheduler.release_policy import MP230, ReleasePolicy, hour_budgets, peak_hours
from scheduler.release_queue import ReleaseQueue
from scheduler.requests import ActivationRequest, Priority, RequestState
from scheduler.service import Scheduler
from smets1.clock import VirtualClock
from smets1.config_policy import PolicyKind
from tests.scheduler.fakes import (
    DAY,
    LARGE_IMAGE,
    USER_A,
    USER_B,
    FakeDco,
    config,
    devices,
    make_scheduler,
    run_virtual,
    running,
    stop,
)


def per_user_day(s: Scheduler) -> dict[tuple[int, int], int]:
    """(User, day) → large 11.3s released."""
    out: Counter[tuple[int, int]] = Counter()
    for r in s.requests:
        if r.released_at is not None:
            out[r.user, s.calendar.day_of(r.released_at)] += 1
    return dict(out)


def run_policy(
    policy: Any, work: dict[int, int], **cfg: Any
) -> tuple[dict[tuple[int, int], int], Counter[RequestState], list[float]]:
    """Submit `work` (User → devices, unscheduled, at the start) under `policy`; wait
    until idle. (released per User and day, states, every release time)."""

    async def main(clock: VirtualClock) -> Any:
        s, _ = make_scheduler(clock, config(policy=policy, **cfg), n_devices=5_000)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        first = 1
        for user, n in work.items():
            s.submit_activations(user, img.firmware_hash, devices(n, first=first))
            first += n
        await s.wait_idle()
        out = (
            per_user_day(s),
            Counter(r.state for r in s.requests),
            sorted(r.released_at for r in s.requests if r.released_at is not None),
        )
        await stop(s, task)
        return out

    result: tuple[dict[tuple[int, int], int], Counter[RequestState], list[float]]
    result = run_virtual(main)
    return result


def test_the_default_policy_is_mp230() -> None:
    assert ReleasePolicy.from_config(config()) == MP230
    assert config().policy.kind == "mp230"


def test_over_500_without_a_schedule_mp230_holds_no_limit_releases_at_once() -> None:
    released, states, _ = run_policy("mp230", {USER_A: 700})
    assert released == {(USER_A, 0): 500}
    assert states[RequestState.HELD] == 200
    released, states, times = run_policy({"kind": "no_limit"}, {USER_A: 700})
    assert released == {(USER_A, 0): 700}
    assert states[RequestState.DONE] == 700 and states[RequestState.HELD] == 0
    # All at the instant they were submitted: no pacing over the day.
    assert times[0] == times[-1]


def test_no_limit_passes_the_daily_capacity_too() -> None:
    released, _, _ = run_policy("no_limit", {USER_A: 300, USER_B: 200}, large_images_per_day=100)
    assert released == {(USER_A, 0): 300, (USER_B, 0): 200}


def test_equal_share_splits_the_day_among_users_with_work() -> None:
    released, states, _ = run_policy(
        {"kind": "equal_share"},
        {USER_A: 300, USER_B: 30},
        large_images_per_day=100,
        peak_windows=[],
    )
    # Day 0: two Users, 50 each (B has only 30). Then A alone: the whole day's 100.
    assert released == {(USER_A, 0): 50, (USER_B, 0): 30, (USER_A, 1): 100,
                        (USER_A, 2): 100, (USER_A, 3): 50}  # fmt: skip
    # Nothing held for a schedule, and no 500-a-User limit.
    assert states[RequestState.DONE] == 330


def test_equal_share_with_a_fixed_number_of_users() -> None:
    released, _, _ = run_policy(
        {"kind": "equal_share", "users": 4}, {USER_A: 60}, large_images_per_day=100
    )
    assert released == {(USER_A, 0): 25, (USER_A, 1): 25, (USER_A, 2): 10}


def test_equal_share_has_no_500_limit() -> None:
    released, states, _ = run_policy("equal_share", {USER_A: 700})
    assert released == {(USER_A, 0): 700}
    assert states[RequestState.HELD] == 0


def test_a_user_arriving_later_in_the_day_gets_its_share() -> None:
    async def main(clock: VirtualClock) -> dict[tuple[int, int], int]:
        cfg = config(policy="equal_share", large_images_per_day=100, peak_windows=[])
        s, _ = make_scheduler(clock, cfg)
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(200))
        await clock.sleep(DAY / 4)  # A has had about a quarter of the day
        s.submit_activations(USER_B, img.firmware_hash, devices(100, first=1_000))
        await s.wait_idle()
        out = per_user_day(s)
        await stop(s, task)
        return out

    released = run_virtual(main)
    # A is held to the share once B has work: half of the day (50) in all.
    assert released[USER_A, 0] == 50
    assert released[USER_B, 0] == 50
    assert sum(released.values()) == 300


def test_share_arithmetic() -> None:
    p = ReleasePolicy(PolicyKind.EQUAL_SHARE)
    assert p.share(12_000, 5) == 2_400
    assert p.share(12_000, 0) == 12_000
    assert ReleasePolicy(PolicyKind.EQUAL_SHARE, share_users=7).share(12_000, 1) == 1_714
    allowed = p.below_share(100, {USER_A: 50}, [USER_B])
    assert not allowed(USER_A) and allowed(USER_B)


def _req(n: int, user: int, security: bool = False) -> ActivationRequest:
    prio = Priority.SECURITY if security else Priority.ROUTINE
    return ActivationRequest(n, user, "c", 1_000 + n, b"\0" * 32, 1, True, 0.0,
                             priority=prio, planned_day=0)  # fmt: skip


def test_queue_pick_skips_users_not_allowed_but_not_security() -> None:
    q = ReleaseQueue()
    a1, a2, b1, sec = _req(1, USER_A), _req(2, USER_A), _req(3, USER_B), _req(4, USER_A, True)
    for r in (a1, a2, b1, sec):
        q.enqueue(r)
    q.open_days(0)
    assert q.due_users() == [USER_A, USER_B]
    only_b = lambda user: user == USER_B  # noqa: E731
    assert q.pick(only_b) is sec  # security fixes go first, outside any share
    assert q.pick(only_b) is b1
    assert q.pick(only_b) is None  # A waits; its work stays due
    assert q.due_count() == 2 and q.due_users() == [USER_A]
    assert q.pick() is a1 and q.pick() is a2 and q.pick() is None


# -- spare_capacity ------------------------------------------------------------------

#: A background profile whose evening (18:00-22:00) is ten times as busy as the rest.
EVENING_HEAVY = tuple(10.0 if 18 <= h < 22 else 1.0 for h in range(24))


def test_hour_budgets_follow_the_room_the_background_leaves() -> None:
    budgets = hour_budgets(240, EVENING_HEAVY, 0.5, frozenset())
    assert sum(budgets) == 240 and len(budgets) == 24
    # Room: 10 / 0.5 - weight: 19 in a quiet hour, 10 in a busy one; 20 x 19 + 4 x 10 = 420.
    # Shares 10.86 and 5.71: 10 and 5, and the 20 left go to the larger remainders.
    assert budgets == tuple(5 if 18 <= h < 22 else 11 for h in range(24))
    # headroom 1: every open hour the same, as MP230's even pace; closed hours none.
    closed = peak_hours([(16, 19)])
    assert closed == {16, 17, 18}
    even = hour_budgets(210, EVENING_HEAVY, 1.0, closed)
    assert [even[h] for h in (16, 17, 18)] == [0, 0, 0]
    assert set(even) == {0, 10} and sum(even) == 210
    # A window that covers part of an hour closes the whole hour.
    assert peak_hours([(16.5, 17.25)]) == {16, 17}
    assert hour_budgets(100, EVENING_HEAVY, 0.2, frozenset(range(24))) == (0,) * 24


def test_spare_capacity_takes_mp230_admission_and_the_hour_budgets() -> None:
    cfg = config(policy={"kind": "spare_capacity", "headroom": 0.5}, large_images_per_day=240)
    p = ReleasePolicy.from_config(cfg, EVENING_HEAVY)
    assert p.mp230_admission and p.asks_for_schedules and p.paced and p.hourly
    assert p.hour_budgets == hour_budgets(240, EVENING_HEAVY, 0.5, frozenset({16, 17, 18}))
    # Without a profile (a scheduler built without the fleet config) every open hour is
    # equal (the peak hours 16-19 closed).
    flat = ReleasePolicy.from_config(cfg)
    assert flat.hour_budgets is not None
    assert {b for h, b in enumerate(flat.hour_budgets) if h not in (16, 17, 18)} == {11, 12}
    assert not MP230.hourly and not ReleasePolicy.from_config(config(policy="no_limit")).hourly


def released_by_hour(policy: Any, weights: tuple[float, ...], n: int) -> dict[int, int]:
    """Submit `n` unscheduled large 11.3s of one User at the start of a day under `policy`
    (capacity 240 a day, no peak windows, hours in UTC); local hour → released in it."""

    async def main(clock: VirtualClock) -> dict[int, int]:
        cfg = config(
            policy=policy,
            large_images_per_day=240,
            user_daily_limit=1_000,
            peak_windows=[],
            peak_timezone="UTC",
        )
        s = Scheduler(
            clock, FakeDco(clock), cfg, devices=set(devices(n)), background_weights=weights
        )
        task = await running(s)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        s.submit_activations(USER_A, img.firmware_hash, devices(n))
        await s.wait_idle()
        out: Counter[int] = Counter()
        for r in s.requests:
            assert r.released_at is not None
            assert s.calendar.day_of(r.released_at) == 0
            out[int((r.released_at - clock.epoch) // 3_600)] += 1
        await stop(s, task)
        return dict(out)

    result: dict[int, int] = run_virtual(main)
    return result


def test_spare_capacity_releases_fewer_in_the_heavy_hours_than_mp230() -> None:
    spare = released_by_hour({"kind": "spare_capacity", "headroom": 0.5}, EVENING_HEAVY, 240)
    mp230 = released_by_hour("mp230", EVENING_HEAVY, 240)
    assert sum(spare.values()) == sum(mp230.values()) == 240  # the same day, reshaped
    heavy = range(18, 22)
    assert sum(mp230.get(h, 0) for h in heavy) == 40  # MP230: 10 an hour, all day
    budgets = hour_budgets(240, EVENING_HEAVY, 0.5, frozenset())
    # spare_capacity: each hour exactly its budget, fewer in the evening.
    assert spare == {h: b for h, b in enumerate(budgets) if b}
    assert sum(spare.get(h, 0) for h in heavy) == sum(budgets[h] for h in heavy) < 40
