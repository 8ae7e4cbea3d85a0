"""The HTTP faces: DUIS XML shaped like the DCC's templates, the JSON API, auth, hostile input."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from scheduler.api import make_app
from scheduler.duis import NS
from scheduler.service import Scheduler
from smets1.clock import DEFAULT_EPOCH_SECONDS, ScaledClock
from smets1.config_dcc import UserConfig
from smets1.eui64 import format_eui64
from smets1.image import parse_image
from tests.scheduler.fakes import (
    LARGE_IMAGE,
    USER_A,
    USER_B,
    USER_C,
    FakeDco,
    config,
    devices,
    make_scheduler,
)

A = format_eui64(USER_A)
B = format_eui64(USER_B)
DEV = [format_eui64(d) for d in devices(5)]
AUTH_A = {"Authorization": "Bearer token-a"}
AUTH_B = {"Authorization": "Bearer token-b"}
AUTH_DESK = {"Authorization": "Bearer token-desk"}


def duis_request(
    ref: str, body: str, counter: int, target: str = DEV[0], sender: str = A, ns: str = NS
) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<sr:Request xmlns:sr="{ns}" '
        f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" schemaVersion="5.1">'
        f"<sr:Header><sr:RequestID>{sender}:{target}:{counter}</sr:RequestID>"
        f"<sr:CommandVariant>1</sr:CommandVariant>"
        f"<sr:ServiceReference>{ref}</sr:ServiceReference>"
        f"<sr:ServiceReferenceVariant>{ref}</sr:ServiceReferenceVariant></sr:Header>"
        f"<sr:Body>{body}</sr:Body></sr:Request>"
    ).encode()


def update_firmware(image: bytes = LARGE_IMAGE, version: str = "02000000") -> str:
    ids = "".join(f"<sr:DeviceID>{d}</sr:DeviceID>" for d in DEV)
    return (
        f"<sr:UpdateFirmware><sr:FirmwareImage>{base64.b64encode(image).decode()}"
        f"</sr:FirmwareImage><sr:FirmwareVersion>{version}</sr:FirmwareVersion>"
        f"<sr:DeviceIDList>{ids}</sr:DeviceIDList></sr:UpdateFirmware>"
    )


def activate_firmware(firmware_hash: str, when: str | None = None) -> str:
    ex = f"<sr:ExecutionDateTime>{when}</sr:ExecutionDateTime>" if when else ""
    return (
        f"<sr:ActivateFirmware>{ex}<sr:FirmwareHash>{firmware_hash}</sr:FirmwareHash>"
        "</sr:ActivateFirmware>"
    )


#: The longest a test waits for something the scheduler does on its own, wall seconds.
WAIT_SECONDS = 10.0


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    scheduler: Scheduler
    callbacks: list[tuple[str, bytes]]
    callback_fail: list[int]
    #: Notified at every callback received.
    arrived: asyncio.Condition

    async def callbacks_reach(self, n: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.callbacks) >= n), WAIT_SECONDS
            )


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    callbacks: list[tuple[str, bytes]] = []
    fail = [1]  # the first callback fails: delivery must retry
    arrived = asyncio.Condition()

    async def receive(request: web.Request) -> web.Response:
        if fail[0] > 0:
            fail[0] -= 1
            return web.Response(status=503)
        body = await request.read()
        async with arrived:
            callbacks.append((request.content_type, body))
            arrived.notify_all()
        return web.Response(status=204)

    cb_app = web.Application()
    cb_app.router.add_post("/cb", receive)
    cb_server = TestServer(cb_app)
    await cb_server.start_server()
    # 10,000 simulated seconds a second: a day of releases in under 9 s, retries in ms.
    clock = ScaledClock(DEFAULT_EPOCH_SECONDS, speed=10_000)
    cfg = config(large_images_per_day=12_000, max_document_bytes=2_000_000)
    users = [
        UserConfig(
            id=USER_A, name="a", token="token-a", callback_url=str(cb_server.make_url("/cb"))
        )
    ]
    s, _ = make_scheduler(clock, cfg, n_devices=5, users=users)
    s.users[USER_A] = users[0]
    client = TestClient(TestServer(make_app(s)))
    await client.start_server()
    task = asyncio.create_task(s.run())
    try:
        yield Harness(client, s, callbacks, fail, arrived)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await cb_server.close()
        await s.close()


async def post_duis(h: Harness, doc: bytes, auth: dict[str, str] = AUTH_A) -> tuple[int, str]:
    resp = await h.client.post("/duis", data=doc, headers=auth)
    return resp.status, await resp.text()


#: What a User computes for its 11.3 (DUIS returns no hash): the image's FirmwareHash.
LARGE_IMAGE_HASH = parse_image(LARGE_IMAGE).firmware_hash.hex()


async def store_image(h: Harness, counter: int = 1) -> str:
    status, text = await post_duis(h, duis_request("11.1", update_firmware(), counter))
    assert status == 200, text
    assert "<sr:ResponseCode>I99</sr:ResponseCode>" in text
    return LARGE_IMAGE_HASH


async def test_duis_update_activate_read_with_callbacks_and_polling(harness: Harness) -> None:
    h = harness
    fw = await store_image(h)
    assert len(fw) == 64
    status, text = await post_duis(h, duis_request("11.3", activate_firmware(fw), 2))
    assert status == 200, text
    assert "<sr:ResponseCode>I99</sr:ResponseCode>" in text
    (req,) = h.scheduler.requests
    assert req.duis_request_id == f"{A}:{DEV[0]}:2"
    status, text = await post_duis(h, duis_request("11.2", "<sr:ReadFirmwareVersion/>", 3))
    assert status == 200, text
    await h.callbacks_reach(3)
    bodies = [b.decode() for _, b in h.callbacks]
    assert len(bodies) == 3 and all(ct == "application/xml" for ct, _ in h.callbacks)
    assert h.callback_fail == [0]  # the first delivery failed and was retried
    activation = next(b for b in bodies if f"<sr:RequestID>{A}:{DEV[0]}:2<" in b)
    assert f"<sr:ResponseID>{DEV[0]}:{A}:2</sr:ResponseID>" in activation
    assert "<sr:ResponseCode>I0</sr:ResponseCode>" in activation
    assert "<sr:ServiceReference>11.3</sr:ServiceReference>" in activation
    assert "TRT" not in activation  # DUIS has no element for it: the JSON API has it
    r = await h.client.get("/v1/notifications", headers=AUTH_A)
    assert [n["payload"].get("trt_met") for n in await r.json()].count(True) == 1
    # Polling: one document a call, as the callback got it; 204 once there is none.
    ids = []
    for _ in range(3):
        resp = await h.client.get(f"/duis/responses?after={ids[-1] if ids else 0}", headers=AUTH_A)
        assert resp.status == 200
        polled = await resp.text()
        assert polled.count("<sr:Response ") == 1 and "<sr:ResponseID>" in polled
        ids.append(int(resp.headers["X-Last-Id"]))
    assert ids == sorted(ids) and len(set(ids)) == 3
    resp = await h.client.get(f"/duis/responses?after={ids[-1]}", headers=AUTH_A)
    assert resp.status == 204 and await resp.text() == ""
    # The same RequestID twice is refused, whatever the service.
    status, text = await post_duis(h, duis_request("11.3", activate_firmware(fw), 2))
    assert status == 400 and "already used" in text
    status, text = await post_duis(h, duis_request("11.1", update_firmware(), 1))
    assert status == 400 and "already used" in text


@pytest.mark.parametrize(
    ("doc", "status", "needle"),
    [
        (b"<sr:Request", 400, "not well-formed"),
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<r>&b;</r>",
            400,
            "DTD",
        ),
        (
            b'<!DOCTYPE r SYSTEM "file:///etc/passwd"><r/>',
            400,
            "DTD",
        ),
        (duis_request("11.3", activate_firmware("ab" * 32), 9, ns="urn:wrong"), 400, "namespace"),
        (duis_request("11.3", activate_firmware("ab" * 31 + "a"), 9), 400, "64 hex"),
        (duis_request("11.3", activate_firmware("zz" * 32), 9), 400, "64 hex"),
        (duis_request("11.3", activate_firmware("ab" * 32), 9), 400, "no image with hash"),
        (
            duis_request("11.3", activate_firmware("ab" * 32), 9, target="00-DB-12-00-00-00-09-99"),
            400,
            "unknown device",
        ),
        (duis_request("11.1", update_firmware(b"not an image at all"), 9), 400, "not a firmware"),
        (duis_request("11.1", update_firmware(version="020000000"), 9), 400, "1 to 8 char"),
        (duis_request("11.3", "<sr:ReadFirmwareVersion/>", 9), 400, "needs one sr:Activate"),
        (duis_request("4.1", "<sr:ReadFirmwareVersion/>", 9), 400, "ServiceReference"),
        (duis_request("11.2", "<sr:ReadFirmwareVersion/>", 9, sender=B), 403, "sender"),
        (b"<x>" + b"a" * 2_100_000 + b"</x>", 400, "limit"),
    ],
)
async def test_hostile_or_malformed_duis_is_refused_and_nothing_stored(
    harness: Harness, doc: bytes, status: int, needle: str
) -> None:
    h = harness
    got, text = await post_duis(h, doc)
    assert got == status, text
    assert needle in text
    assert "<sr:ResponseCode>E" in text
    assert h.scheduler.requests == [] and h.scheduler.images == {}
    assert h.scheduler.store.notifications(USER_A) == []


async def test_json_api_schedule_flow_status_and_capacity(harness: Harness) -> None:
    c = harness.client
    r = await c.post(
        "/v1/images",
        json={"image_base64": base64.b64encode(LARGE_IMAGE).decode(), "device_ids": DEV},
        headers=AUTH_A,
    )
    assert r.status == 201, await r.text()
    img = await r.json()
    assert img["large"] is True and img["size_bytes"] == 800_000
    r = await c.post("/v1/schedules", json={"devices": 3, "max_per_day": 2}, headers=AUTH_A)
    assert r.status == 201
    proposal = await r.json()
    assert proposal["state"] == "proposed"
    assert [b["devices"] for b in proposal["batches"]] == [2, 1]
    sid = proposal["schedule_id"]
    # Another User cannot see or accept it; the Service Desk can accept for A.
    assert (await c.get(f"/v1/schedules/{sid}", headers=AUTH_B)).status == 404
    assert (await c.post(f"/v1/schedules/{sid}/accept", headers=AUTH_B)).status == 404
    r = await c.post(f"/v1/schedules/{sid}/accept", headers=AUTH_DESK)
    assert r.status == 200 and (await r.json())["state"] == "agreed"
    r = await c.post(
        "/v1/activations",
        json={"firmware_hash": img["firmware_hash"], "device_ids": DEV[:3], "schedule_id": sid},
        headers=AUTH_A,
    )
    assert r.status == 202, await r.text()
    out = await r.json()
    assert out["accepted"] == 3 and list(out["planned"].values()) == [2, 1]
    rid = out["request_ids"][0]
    r = await c.get(f"/v1/requests/{rid}", headers=AUTH_A)
    assert (await r.json())["schedule_id"] == sid
    assert (await c.get(f"/v1/requests/{rid}", headers=AUTH_B)).status == 404
    r = await c.get("/v1/requests", headers=AUTH_B)
    assert (await r.json())["total"] == 0
    r = await c.get("/v1/capacity?from=2025-03-01&days=2", headers=AUTH_B)
    days = await r.json()
    assert [(d["scheduled"], d["free"]) for d in days] == [(2, 11_998), (1, 11_999)]
    r = await c.post(
        "/v1/activations",
        json={"firmware_hash": "ab" * 31, "device_ids": DEV[:1]},
        headers=AUTH_A,
    )
    assert r.status == 400 and (await r.json())["field"] == "firmware_hash"
    r = await c.post("/v1/activations", data=b"{not json", headers=AUTH_A)
    assert r.status == 400 and "not JSON" in (await r.json())["error"]


async def test_auth_health_metrics_and_openapi(harness: Harness) -> None:
    c = harness.client
    assert (await c.get("/v1/requests")).status == 401
    assert (await c.get("/v1/requests", headers={"Authorization": "Bearer nope"})).status == 401
    assert (await c.post("/duis", data=b"<x/>")).status == 401
    assert (await (await c.get("/healthz")).json()) == {"status": "ok"}
    await store_image(harness)
    text = await (await c.get("/metrics")).text()
    assert "smets1_scheduler_requests" in text
    assert 'smets1_scheduler_duis_documents_total{outcome="accepted",service_reference="11.1"}' in (
        text
    )
    assert "00-DB" not in text and "device" not in text.lower().replace("devices", "")
    doc: dict[str, Any] = await (await c.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/activations", "/v1/schedules", "/v1/capacity", "/duis"} <= set(doc["paths"])
    assert "ActivationIn" in doc["components"]["schemas"]


async def test_duis_activation_refused_with_earliest_date_and_held_over_allowance() -> None:
    clock = ScaledClock(DEFAULT_EPOCH_SECONDS, speed=1)
    s, _ = make_scheduler(clock, config(large_images_per_day=2, user_daily_limit=1), n_devices=5)
    client = TestClient(TestServer(make_app(s)))
    await client.start_server()
    try:
        resp = await client.post(
            "/duis", data=duis_request("11.1", update_firmware(), 1), headers=AUTH_A
        )
        assert resp.status == 200, await resp.text()
        fw = LARGE_IMAGE_HASH
        codes = []
        for n, dev in enumerate(DEV[:3]):
            for sender, auth in ((A, AUTH_A), (B, AUTH_B)):
                doc = duis_request("11.3", activate_firmware(fw), 10 + n, dev, sender=sender)
                resp = await client.post("/duis", data=doc, headers=auth)
                codes.append((resp.status, await resp.text()))
        # A and B each get one a day (their allowance); capacity 2 a day for 2 days.
        assert [code for code, _ in codes] == [200] * 6
        assert all("<sr:ResponseCode>I99</sr:ResponseCode>" in text for _, text in codes)
        assert [r.state.value for r in s.requests] == ["waiting"] * 2 + ["held"] * 4
        r = await client.get("/v1/capacity?days=3", headers=AUTH_A)
        assert [d["free"] for d in await r.json()] == [0, 2, 2]
        # Days 1 and 2 filled by others: a third User's 11.3 cannot be met in time: 409.
        s.calendar.book(1, USER_B + 1, 2)
        s.calendar.book(2, USER_B + 1, 2)
        c = format_eui64(USER_C)
        doc = duis_request("11.3", activate_firmware(fw), 99, DEV[4], sender=c)
        resp = await client.post("/duis", data=doc, headers={"Authorization": "Bearer token-c"})
        text = await resp.text()
        assert resp.status == 409, text
        assert "<sr:ResponseCode>E57</sr:ResponseCode>" in text
        assert resp.headers["X-Earliest-Date"] == "2025-03-04"
        assert len(s.requests) == 6
    finally:
        await client.close()
        await s.close()


async def test_duis_cancel_reaches_a_released_future_dated_activation(harness: Harness) -> None:
    h = harness
    fw = await store_image(h)
    later = activate_firmware(fw, "2025-03-01T06:00:00Z")
    status, text = await post_duis(h, duis_request("11.3", later, 2))
    assert status == 200 and "<sr:ResponseCode>I99</sr:ResponseCode>" in text, text
    (req,) = h.scheduler.requests
    dco = h.scheduler.dco
    assert isinstance(dco, FakeDco)
    # Released within moments; then the DCO holds it until 06:00.
    await asyncio.wait_for(dco.holding.wait(), WAIT_SECONDS)
    assert req.device_id in dco.scheduled and req.state.value == "released"
    cancel = activate_firmware(fw, "3000-01-01T00:00:00Z")
    status, text = await post_duis(h, duis_request("11.3", cancel, 3))
    assert status == 200 and "<sr:ResponseCode>I99</sr:ResponseCode>" in text, text
    # The cancellation's own response; the counts are on the JSON API (DUIS has none).
    own = [
        p
        for _, _, _, p in h.scheduler.store.notifications(USER_A)
        if p.get("duis_request_id") == f"{A}:{DEV[0]}:3"
    ]
    assert [(p["cancelled"], p["cancellation_sent"]) for p in own] == [(0, 1)]
    await asyncio.wait_for(h.scheduler.wait_idle(), WAIT_SECONDS)  # its answer came
    assert req.state.value == "cancelled"
