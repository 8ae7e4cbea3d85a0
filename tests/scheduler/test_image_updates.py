"""SRV 11.1 is answered when the DCO has stored the image, not at once; an 11.1 the DCC
takes more than seven days to process is flagged and counted, as an 11.3 is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from scheduler.api import make_app
from scheduler.errors import BadDocument, DcoFailed
from scheduler.metrics import SchedulerCollector
from scheduler.requests import UpdateState
from scheduler.service import Scheduler
from scheduler.summary import summarize
from smets1.clock import DEFAULT_EPOCH_SECONDS, ScaledClock, VirtualClock
from tests.scheduler.fakes import (
    DAY,
    LARGE_IMAGE,
    USER_A,
    USER_B,
    FakeDco,
    cut_off,
    make_scheduler,
    run_virtual,
    running,
    stop,
)
from tests.scheduler.test_api import AUTH_A, duis_request, update_firmware

#: The keys of the 11.1 answer (the DUIS renderer reads them).
ANSWER_KEYS = {
    "duis_request_id",
    "service_reference",
    "response_code",
    "firmware_hash",
    "firmware_version",
    "state",
}


def notes(s: Scheduler, user: int, kind: str) -> list[dict[str, Any]]:
    return [p for _, _, k, p in s.store.notifications(user, 0, 10_000) if k == kind]


def test_duis_11_1_is_answered_when_the_dco_has_stored_the_image() -> None:
    async def main(clock: VirtualClock) -> None:
        dco = FakeDco(clock, store_seconds=3_000.0)
        s, _ = make_scheduler(clock, dco=dco)
        task = await running(s)
        u = s.update_firmware_later(USER_A, LARGE_IMAGE, "rid-1")
        assert u.state is UpdateState.PROCESSING
        await clock.sleep(2_999.0)
        assert notes(s, USER_A, "response") == []
        assert s.images == {}  # an 11.3 cannot name it yet
        await clock.sleep(2.0)
        (answer,) = notes(s, USER_A, "response")
        assert set(answer) == ANSWER_KEYS
        assert answer["duis_request_id"] == "rid-1"
        assert (answer["service_reference"], answer["response_code"], answer["state"]) == (
            "11.1",
            "I0",
            "stored",
        )
        assert answer["firmware_hash"] == u.firmware_hash.hex()
        assert answer["firmware_version"] == "02000000"
        assert u.state is UpdateState.STORED and u.processing_seconds == 3_000.0
        assert u.firmware_hash in s.images
        assert s.overdue_11_1_count == 0
        await stop(s, task)

    run_virtual(main)


def test_json_11_1_answers_when_stored_and_the_same_image_is_processed_once() -> None:
    async def main(clock: VirtualClock) -> None:
        dco = FakeDco(clock, store_seconds=600.0)
        s, _ = make_scheduler(clock, dco=dco)
        t0 = clock.now()
        stored = await s.store_image(USER_A, LARGE_IMAGE)
        assert clock.now() - t0 == 600.0 and stored.stored_at == clock.now()
        # No notification: the JSON call's own answer is the response.
        assert notes(s, USER_A, "response") == []
        # Sent again, by another User too: answered at once, the DCO not asked again.
        assert await s.store_image(USER_B, LARGE_IMAGE) == stored
        assert clock.now() - t0 == 600.0 and len(dco.stores) == 1
        assert [u.state for u in s.image_updates] == [UpdateState.STORED] * 2
        with pytest.raises(BadDocument, match="FirmwareImage"):
            await s.store_image(USER_A, b"not an image")
        await s.close()

    run_virtual(main)


def test_a_dco_failure_is_answered_e99() -> None:
    class Broken(FakeDco):
        async def update_firmware(self, image: bytes) -> Any:
            await self.clock.sleep(60.0)
            raise RuntimeError("disk full")

    async def main(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, dco=Broken(clock))
        u = s.update_firmware_later(USER_A, LARGE_IMAGE, "rid-2")
        with pytest.raises(DcoFailed, match="disk full"):
            await s.store_image(USER_A, LARGE_IMAGE)
        await clock.sleep(1.0)
        (answer,) = notes(s, USER_A, "response")
        assert (answer["response_code"], answer["state"]) == ("E99", "failed")
        assert "disk full" in answer["failure"]
        assert u.state is UpdateState.FAILED
        await s.close()

    run_virtual(main)


def test_an_11_1_past_seven_days_is_flagged_counted_and_its_user_told() -> None:
    async def main(clock: VirtualClock) -> None:
        dco = FakeDco(clock, store_seconds=8 * DAY)
        s, _ = make_scheduler(clock, dco=dco)
        task = await running(s)
        u = s.update_firmware_later(USER_A, LARGE_IMAGE, "rid-3")
        await clock.sleep(7 * DAY)
        # "More than seven days": at the mark it is not yet overdue.
        assert not u.overdue and s.overdue_11_1_count == 0
        await clock.sleep(60.0)
        assert u.overdue and u.is_open and s.overdue_11_1_count == 1
        (note,) = notes(s, USER_A, "overdue")
        assert note["service_reference"] == "11.1" and note["duis_request_id"] == "rid-3"
        assert "7 days" in note["reason"]
        await clock.sleep(DAY)
        assert u.state is UpdateState.STORED and u.overdue
        summary = summarize(
            s, name="t", seed=1, devices=0, simulated_seconds=clock.now(), images={}
        )
        assert summary.overdue_11_1 == 1 and summary.overdue == 0
        assert summary.image_updates.requests == 1 and summary.image_updates.stored == 1
        assert summary.image_updates.longest_seconds == 8 * DAY
        registry = CollectorRegistry()
        registry.register(SchedulerCollector(s))
        assert b"smets1_scheduler_overdue_image_updates 1.0" in generate_latest(registry)
        await stop(s, task)

    run_virtual(main)


def test_an_11_1_stored_within_seven_days_is_not_flagged() -> None:
    async def main(clock: VirtualClock) -> None:
        dco = FakeDco(clock, store_seconds=7 * DAY)
        s, _ = make_scheduler(clock, dco=dco)
        task = await running(s)
        u = s.update_firmware_later(USER_A, LARGE_IMAGE, "rid-4")
        await clock.sleep(8 * DAY)
        assert u.state is UpdateState.STORED and not u.overdue
        assert notes(s, USER_A, "overdue") == [] and s.overdue_11_1_count == 0
        await stop(s, task)

    run_virtual(main)


def test_an_11_1_processing_when_killed_is_sent_again_and_answered(tmp_path: Path) -> None:
    state = tmp_path / "state"
    keep: list[Scheduler] = []

    async def first(clock: VirtualClock) -> None:
        s, _ = make_scheduler(clock, state_dir=state, dco=FakeDco(clock, store_seconds=DAY))
        keep.append(s)  # never closed: as if killed
        await running(s)
        s.update_firmware_later(USER_A, LARGE_IMAGE, "rid-5")
        await clock.sleep(3_600.0)
        await cut_off()

    run_virtual(first)

    async def second(clock: VirtualClock) -> None:
        dco = FakeDco(clock, store_seconds=DAY)
        s, _ = make_scheduler(clock, state_dir=state, dco=dco)
        (u,) = s.image_updates
        assert u.state is UpdateState.PROCESSING and u.duis_request_id == "rid-5"
        task = await running(s)
        await clock.sleep(DAY + 1.0)
        assert len(dco.stores) == 1 and u.state is UpdateState.STORED
        (answer,) = notes(s, USER_A, "response")
        assert answer["duis_request_id"] == "rid-5" and answer["response_code"] == "I0"
        # Once stored, its image is no longer kept.
        assert s.store.update_image(u.update_id) is None
        await stop(s, task)

    run_virtual(second)


async def test_over_http_the_duis_11_1_is_acknowledged_before_the_image_is_stored() -> None:
    clock = ScaledClock(DEFAULT_EPOCH_SECONDS, speed=1)
    # An hour of processing at speed 1: nothing can be stored while the test looks.
    s, dco = make_scheduler(clock, dco=FakeDco(clock, store_seconds=3_600.0))
    client = TestClient(TestServer(make_app(s)))
    await client.start_server()
    try:
        resp = await client.post(
            "/duis", data=duis_request("11.1", update_firmware(), 1), headers=AUTH_A
        )
        text = await resp.text()
        assert resp.status == 200, text
        (u,) = s.image_updates
        assert u.state is UpdateState.PROCESSING and u.duis_request_id in text
        assert "<sr:ResponseCode>I99</sr:ResponseCode>" in text  # acknowledged, no more
        assert len(dco.stores) == 1 and notes(s, USER_A, "response") == []
    finally:
        await client.close()
        await s.close()
