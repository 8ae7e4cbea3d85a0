"""The capacity calendar owns its bookings: written through its methods, read without growing."""

from __future__ import annotations

import pytest

from scheduler.calendar import Calendar

EPOCH = 1_740_787_200.0
A, B = 1, 2


def test_reading_a_day_adds_nothing() -> None:
    c = Calendar(EPOCH, 10, [])
    for day in range(-5, 1_000):
        assert c.free(day) == 10
        assert c.committed(day) == 0
        assert c.scheduled_on(day) == c.unscheduled_on(day) == c.released_on(day) == 0
        assert c.user_unscheduled(day, A) == 0
        assert dict(c.reservations(day)) == {} and dict(c.bookings(day)) == {}
    assert c.days() == []
    assert c.released_per_day() == {}


def test_bookings_reservations_and_releases() -> None:
    c = Calendar(EPOCH, 10, [])
    c.book(0, A)
    c.book(0, B, 3)
    c.reserve(0, 7, 2)
    assert (c.user_unscheduled(0, A), c.unscheduled_on(0), c.scheduled_on(0)) == (1, 4, 2)
    assert (c.committed(0), c.free(0)) == (6, 4)
    c.move_booking(B, 0, 2)
    c.move_reservation(7, 0, 1, 2)
    assert dict(c.bookings(0)) == {A: 1, B: 2} and dict(c.bookings(2)) == {B: 1}
    assert c.reservations(1) == {7: 2} and c.scheduled_on(0) == 0
    c.unbook(0, A)
    assert c.user_unscheduled(0, A) == 0
    c.record_release(3, A)
    c.record_release(1, B)
    c.record_release(3, B)
    assert c.released_per_day() == {1: 1, 3: 2}
    assert dict(c.released_by_user(3)) == {A: 1, B: 1} and dict(c.released_by_user(0)) == {}
    assert list(c.released_per_day()) == [1, 3]
    assert c.released_on(3) == 2
    assert c.days() == [0, 1, 2, 3]


def test_what_it_hands_out_is_read_only() -> None:
    c = Calendar(EPOCH, 10, [])
    c.reserve(0, 7, 2)
    c.book(0, A)
    with pytest.raises(TypeError):
        c.reservations(0)[7] = 5  # type: ignore[index]
    with pytest.raises(TypeError):
        c.bookings(0)[A] = 5  # type: ignore[index]
    c.released_per_day()[0] = 99  # a copy: the calendar does not change
    assert c.released_on(0) == 0
    assert c.scheduled_on(0) == 2 and c.user_unscheduled(0, A) == 1


def test_iso_dates() -> None:
    c = Calendar(EPOCH, 10, [])
    assert c.date_of(0) == "2025-03-01"
    assert c.date_of(None) is None
