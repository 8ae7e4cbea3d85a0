"""The request book: indexes, counts kept with every change, and idleness."""

from __future__ import annotations

import asyncio

from scheduler.book import RequestBook
from scheduler.requests import ActivationRequest, RequestState

A, B = 1, 2


def req(request_id: int, user: int = A) -> ActivationRequest:
    return ActivationRequest(request_id, user, "c", 1_000 + request_id, b"\0" * 32, 1, True, 0.0)


def test_the_book_keeps_its_counts_and_idleness() -> None:
    book = RequestBook()
    r1, r2 = req(1), req(2)
    r2.state = RequestState.HELD
    book.add(r1)
    book.add(r2)
    assert book.get(r1.request_id) is r1 and book.get(999) is None
    assert book.of_user(A) == [r1, r2] and book.of_user(B) == []
    assert book.held_of(A) == [r2] and book.next_id == 3
    book.activate()
    book.set_state(r1, RequestState.DONE)
    r1.trt_met = True
    book.count_trt(r1)
    book.mark_overdue(r2)
    assert book.state_counts[RequestState.DONE] == 1
    assert book.state_counts[RequestState.WAITING] == 0
    assert book.trt_counts[True] == 1 and book.overdue_count == 1 and r2.overdue


def test_idle_only_when_nothing_is_active() -> None:
    async def main() -> list[bool]:
        book = RequestBook()
        seen = []
        book.settle()
        seen.append(await _idle(book))
        book.activate()
        book.activate()
        seen.append(await _idle(book))
        book.finish()
        seen.append(await _idle(book))
        book.finish()
        seen.append(await _idle(book))
        return seen

    assert asyncio.run(main()) == [True, False, False, True]


async def _idle(book: RequestBook) -> bool:
    """Whether wait_idle returns without waiting (one pass of the loop)."""
    task = asyncio.ensure_future(book.wait_idle())
    await asyncio.sleep(0)
    done = task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return done
