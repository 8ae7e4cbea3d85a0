"""Devices belong to the User that supplies them (issue 10, item 1).

Before the fix User B could send its own 11.3 to a device on which User A had a pending
11.3, then a cancellation, and A's request ended `cancelled`. Now any request from a User
for a device another User supplies is refused (403, E2) with a reason naming both; the
Service Desk may still act for any User.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer

from scheduler.api import make_app
from scheduler.errors import Forbidden
from scheduler.requests import RequestState
from smets1.clock import DEFAULT_EPOCH_SECONDS, ScaledClock, VirtualClock
from smets1.eui64 import format_eui64
from tests.scheduler.fakes import (
    DESK,
    LARGE_IMAGE,
    USER_A,
    USER_B,
    devices,
    make_scheduler,
    run_virtual,
    running,
    stop,
)

A_DEVICES = devices(3)
B_DEVICES = devices(2, first=4)
FAR = datetime(3000, 1, 1, tzinfo=UTC).timestamp()  # what DUIS uses to cancel


def supplier_of(device_id: int) -> int | None:
    if device_id in A_DEVICES:
        return USER_A
    if device_id in B_DEVICES:
        return USER_B
    return None


def test_another_user_can_neither_activate_nor_cancel_a_users_device() -> None:
    async def main(clock: VirtualClock) -> None:
        s, dco = make_scheduler(clock, n_devices=5, suppliers=supplier_of)
        img = await s.store_image(USER_A, LARGE_IMAGE)
        tomorrow = clock.now() + 86_400
        mine = s.submit_activations(
            USER_A, img.firmware_hash, A_DEVICES[:1], execution_time=tomorrow
        )
        assert len(mine.accepted) == 1
        await s.store_image(USER_B, LARGE_IMAGE)
        with pytest.raises(Forbidden) as own:
            s.submit_activations(USER_B, img.firmware_hash, A_DEVICES[:1])
        with pytest.raises(Forbidden) as cancel:
            s.submit_activations(USER_B, img.firmware_hash, A_DEVICES[:1], execution_time=FAR)
        for exc in (own.value, cancel.value):
            assert format_eui64(A_DEVICES[0]) in exc.reason
            assert f"supplied by User {format_eui64(USER_A)}" in exc.reason
            assert format_eui64(USER_B) in exc.reason
        with pytest.raises(Forbidden):
            await s.read_version(USER_B, A_DEVICES[0])
        # B's own devices are B's to act on; a mixed list is refused whole.
        assert s.submit_activations(USER_B, img.firmware_hash, B_DEVICES[:1]).accepted
        with pytest.raises(Forbidden):
            s.submit_activations(USER_B, img.firmware_hash, [B_DEVICES[1], A_DEVICES[1]])
        task = await running(s)
        await s.wait_idle()
        a_req = next(r for r in s.requests if r.user == USER_A)
        assert a_req.state is RequestState.DONE
        assert dco.originators[A_DEVICES[0]] == [USER_A]
        assert len(s.requests) == 2
        await stop(s, task)

    run_virtual(main)


def test_the_service_desk_may_act_for_the_supplier() -> None:
    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, n_devices=5, suppliers=supplier_of)
        img = await s.store_image(DESK, LARGE_IMAGE)
        out = s.submit_activations(DESK, img.firmware_hash, [A_DEVICES[0], B_DEVICES[0]])
        assert len(out.accepted) == 2
        assert (await s.read_version(DESK, B_DEVICES[0])).ok
        await s.close()

    run_virtual(main)


async def test_json_and_duis_refusals_name_the_device_and_its_supplier() -> None:
    clock = ScaledClock(DEFAULT_EPOCH_SECONDS, speed=10_000)
    s, _ = make_scheduler(clock, n_devices=5, suppliers=supplier_of)
    client = TestClient(TestServer(make_app(s)))
    await client.start_server()
    try:
        img = await s.store_image(USER_B, LARGE_IMAGE)
        resp = await client.post(
            "/v1/activations",
            json={
                "firmware_hash": img.firmware_hash.hex(),
                "device_ids": [format_eui64(A_DEVICES[0])],
            },
            headers={"Authorization": "Bearer token-b"},
        )
        text = await resp.text()
        assert resp.status == 403, text
        assert f"supplied by User {format_eui64(USER_A)}" in text
        assert s.requests == []
    finally:
        await client.close()
        await s.close()
        await asyncio.sleep(0)
