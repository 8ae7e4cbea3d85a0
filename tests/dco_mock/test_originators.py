"""The DCO never ends one User's 11.3 because of another's (issue 10, item 1).

User A schedules an activation on a device; User B then sends its own 11.3 and a
cancellation for the same device. Before the fix B's cancellation reached the device and
ended A's request `cancelled`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from smets1.codes import DeviceState, Reason
from smets1.image import parse_image
from smets1.services import ActivationOutcome
from smets1.wire import CANCEL_AFTER_SECONDS
from tests.dco_mock.harness import FIRST, Harness, fleet_config, run
from tests.factories import make_image

S = DeviceState
IMAGE = make_image(8_000)
FW = parse_image(IMAGE).firmware_hash
USER_A = 0x90B3_D51F_3001_0000
USER_B = 0x90B3_D51F_3002_0000
NEW_VERSION = 0x02000000


def _cancel_at(h: Harness) -> float:
    return h.clock.now() + CANCEL_AFTER_SECONDS + 1


def test_another_users_11_3_and_cancellation_leave_a_scheduled_activation_alone() -> None:
    cfg = fleet_config([{"count": 1}])

    async def body(h: Harness) -> tuple[Any, ...]:
        stored = await h.dco.update_firmware(IMAGE)
        at = h.clock.now() + 86_400
        a = asyncio.create_task(
            h.dco.activate_firmware(FIRST, stored.firmware_hash, at, originator=USER_A)
        )
        await h.clock.sleep(3_600)  # A's image is on the device, its activation pending
        b_own = await h.dco.activate_firmware(FIRST, FW, originator=USER_B)
        b_cancel = await h.dco.activate_firmware(FIRST, FW, _cancel_at(h), originator=USER_B)
        pending = await h.dco.read_firmware_version(FIRST)
        a_out = await a
        return b_own, b_cancel, pending, a_out, h.dco.counters.refused_other_originator

    b_own, b_cancel, pending, a_out, refused = run(cfg, body)
    for out in (b_own, b_cancel):
        assert (out.ok, out.reason, out.blocks_sent) == (False, Reason.OTHER_ORIGINATOR, 0)
        assert out.state is S.ACTIVATION_SCHEDULED
    assert refused == 2
    assert pending.state is S.ACTIVATION_SCHEDULED and pending.pending_version == NEW_VERSION
    assert (a_out.ok, a_out.state, a_out.running_version) == (True, S.ACTIVE, NEW_VERSION)


def test_the_originators_own_cancellation_still_ends_its_request() -> None:
    cfg = fleet_config([{"count": 1}])

    async def body(h: Harness) -> tuple[ActivationOutcome, ActivationOutcome]:
        stored = await h.dco.update_firmware(IMAGE)
        at = h.clock.now() + 86_400
        a = asyncio.create_task(
            h.dco.activate_firmware(FIRST, stored.firmware_hash, at, originator=USER_A)
        )
        await h.clock.sleep(3_600)
        cancel = await h.dco.activate_firmware(FIRST, FW, _cancel_at(h), originator=USER_A)
        return cancel, await a

    cancel, a_out = run(cfg, body)
    assert (cancel.ok, cancel.state) == (True, S.CANCELLED)
    assert (a_out.ok, a_out.state, a_out.reason) == (False, S.CANCELLED, Reason.CANCELLED)


def test_a_cancellation_for_another_image_ends_nothing_it_does_not_name() -> None:
    cfg = fleet_config([{"count": 1}])
    other = make_image(9_000, version=0x02000001)

    async def body(h: Harness) -> tuple[ActivationOutcome, ActivationOutcome]:
        stored = await h.dco.update_firmware(IMAGE)
        second = await h.dco.update_firmware(other)
        at = h.clock.now() + 86_400
        a = asyncio.create_task(
            h.dco.activate_firmware(FIRST, stored.firmware_hash, at, originator=USER_A)
        )
        await h.clock.sleep(3_600)
        cancel = await h.dco.activate_firmware(
            FIRST, second.firmware_hash, _cancel_at(h), originator=USER_A
        )
        return cancel, await a

    cancel, a_out = run(cfg, body)
    assert not cancel.ok
    assert (a_out.ok, a_out.state) == (True, S.ACTIVE)
