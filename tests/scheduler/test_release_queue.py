"""The release order: security first, then round robin across Users, FIFO within a User."""

from __future__ import annotations

import itertools

from scheduler.release_queue import ReleaseQueue
from scheduler.requests import ActivationRequest, Priority

A, B, C = 1, 2, 3
_ids = itertools.count(1)


def req(
    user: int, day: int = 0, *, large: bool = True, security: bool = False
) -> ActivationRequest:
    n = next(_ids)
    return ActivationRequest(
        n,
        user,
        "c",
        1_000 + n,
        b"\0" * 32,
        1,
        large,
        0.0,
        priority=Priority.SECURITY if security else Priority.ROUTINE,
        planned_day=day,
    )


def drain(q: ReleaseQueue) -> list[ActivationRequest]:
    out = []
    while (r := q.pick()) is not None:
        out.append(r)
    return out


def test_security_first_then_round_robin_then_fifo() -> None:
    q = ReleaseQueue()
    a1, a2, a3, b1, c1, c2 = req(A), req(A), req(A), req(B), req(C), req(C)
    sec = req(B, security=True)
    for r in (a1, a2, a3, b1, c1, sec, c2):
        q.enqueue(r)
    assert q.due_count() == 0 and q.next_day() == 0  # day 0 not opened yet
    q.open_days(0)
    assert q.due_count() == 7
    assert drain(q) == [sec, a1, b1, c1, a2, c2, a3]


def test_a_day_opens_only_when_its_turn_comes() -> None:
    q = ReleaseQueue()
    today, tomorrow = req(A, 0), req(A, 1)
    q.enqueue(tomorrow)
    q.enqueue(today)
    q.open_days(0)
    assert drain(q) == [today]
    assert q.next_day() == 1
    late = req(B, 0)
    q.enqueue(late)  # planned on a day already open: due at once
    assert drain(q) == [late]
    q.open_days(1)
    assert drain(q) == [tomorrow] and q.next_day() is None


def test_small_images_are_due_at_once() -> None:
    q = ReleaseQueue()
    small = req(A, 5, large=False)
    q.enqueue(small)
    assert q.pick() is small


def test_an_emptied_queue_leaves_the_round() -> None:
    q = ReleaseQueue()
    a1, b1, b2, c1 = req(A), req(B), req(B), req(C)
    for r in (a1, b1, b2, c1):
        q.enqueue(r)
    q.open_days(0)
    q.dequeue(a1)
    a2 = req(A)
    q.enqueue(a2)  # A joins the round again at its end, once
    assert drain(q) == [b1, c1, a2, b2]


def test_what_waits_on_a_day() -> None:
    q = ReleaseQueue()
    r1, r2, sec = req(A, 0), req(B, 0), req(C, 0, security=True)
    r2.schedule_id = 4
    later = req(A, 1)
    for r in (r1, r2, sec, later):
        q.enqueue(r)
    assert q.routine_on(0) == [r1, r2, sec]  # not opened: the day's bucket as it came
    q.open_days(0)
    assert q.routine_on(0) == [r1, r2]  # opened: due security fixes are left out
    assert q.attached_to(4, 0) == [r2]
    assert q.attached_to(4, 1) == []
