"""The call channel (/v1/calls): 11.3s and 11.2s as messages on one WebSocket, against
the DCO's own app served on a port, raw and through `DcoClient`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from dco_mock.http_api import GATE_KEY, make_app
from dco_mock.service import Dco
from emulator.fleet import FleetHost, build_devices
from orchestrator.dco_client import DcoClient
from orchestrator.errors import DcoHttpError
from orchestrator.mosquitto import free_port
from smets1.bus import InProcessBus
from smets1.clock import ScaledClock
from smets1.dco_http import (
    ACTIVATION_ORDER,
    CALL,
    CALLS_PATH,
    ActivationOrder,
    ReadVersionCall,
    bearer,
)
from smets1.eui64 import format_eui64
from tests.dco_mock.harness import FIRST, fleet_config
from tests.dco_mock.test_http_guard import DEVICE, HASH, TOKEN, GatedDco
from tests.factories import make_image

AUTH = bearer(TOKEN)


def _order(device: int = DEVICE, firmware_hash: bytes = HASH) -> dict[str, Any]:
    return json.loads(ACTIVATION_ORDER.to_json(ActivationOrder(device, firmware_hash)))


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestServer, GatedDco]]:
    dco = GatedDco(block=True)
    server = TestServer(make_app(dco, token=TOKEN, max_in_flight=1))
    await server.start_server()
    try:
        yield server, dco
    finally:
        dco.release.set()
        await server.close()


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"],
)
async def test_a_wrong_token_is_refused_401_before_the_upgrade(
    served: tuple[TestServer, GatedDco], authorization: str | None
) -> None:
    server, dco = served
    headers = {} if authorization is None else {"Authorization": authorization}
    async with aiohttp.ClientSession(headers=headers) as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(server.make_url(CALLS_PATH))
        assert refused.value.status == 401
        assert refused.value.headers is not None
        assert refused.value.headers["WWW-Authenticate"] == "Bearer"
    assert server.app is not None and server.app[GATE_KEY].refused_unauthenticated == 1
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.ws_connect(server.make_url(CALLS_PATH)) as ws:
            await ws.send_bytes(CALL.to_json(ReadVersionCall(1, DEVICE)))
            answer = json.loads((await ws.receive()).data)
            assert answer["id"] == 1 and answer["status"] == 200
    assert dco.calls == 1  # the refused channel never reached the DCO


async def test_a_call_beyond_the_bound_is_answered_busy_and_one_without_room_no_room(
    served: tuple[TestServer, GatedDco],
) -> None:
    server, dco = served
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.ws_connect(server.make_url(CALLS_PATH)) as ws:
            # The channel itself holds none of the one call the DCO serves at once.
            await ws.send_json({"id": 1, "op": "activate", "order": _order()})
            await dco.entered.wait()
            await ws.send_json({"id": 2, "op": "read_version", "device_id": format_eui64(DEVICE)})
            busy = json.loads((await ws.receive()).data)
            assert (busy["id"], busy["status"], busy["retry_after"]) == (2, 503, 1)
            assert busy["body"]["error"] == "busy" and "in flight" in busy["body"]["message"]
            assert server.app is not None
            gate = server.app[GATE_KEY]
            assert (gate.in_flight, gate.refused_busy) == (1, 1)
            dco.release.set()
            done = json.loads((await ws.receive()).data)
            assert (done["id"], done["status"]) == (1, 200)
            assert done["body"]["ok"] is True
            assert gate.in_flight == 0
    assert dco.calls == 1


async def test_the_client_sends_a_call_turned_away_busy_again_after_retry_after(
    served: tuple[TestServer, GatedDco],
) -> None:
    server, dco = served
    async with DcoClient([str(server.make_url(""))], token=TOKEN) as client:
        held = asyncio.create_task(client.activate_firmware(DEVICE, HASH))
        await dco.entered.wait()  # the one call the DCO serves at once
        turned_away = asyncio.create_task(client.read_firmware_version(DEVICE))
        while client.busy_retries == 0:  # noqa: ASYNC110 (no event to await for it)
            await asyncio.sleep(0.01)
        assert not turned_away.done()
        dco.release.set()
        assert (await held).ok and (await turned_away).ok
        assert client.retries == 0 and client.problem() is None
    assert server.app is not None and server.app[GATE_KEY].refused_busy >= 1


async def test_an_11_3_without_room_gets_no_room_with_retry_after() -> None:
    dco = GatedDco()
    server = TestServer(make_app(dco, token=TOKEN, room=lambda _at: "all 2 transfer slots taken"))
    await server.start_server()
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.ws_connect(server.make_url(CALLS_PATH)) as ws:
                await ws.send_json({"id": 9, "op": "activate", "order": _order()})
                answer = json.loads((await ws.receive()).data)
        assert (answer["id"], answer["status"], answer["retry_after"]) == (9, 503, 1)
        assert answer["body"]["error"] == "no_room"
        assert "transfer slots taken" in answer["body"]["message"]
        assert server.app is not None and server.app[GATE_KEY].refused_no_room == 1
        assert dco.calls == 0
    finally:
        await server.close()


DEVICE_TEXT = format_eui64(DEVICE)


@pytest.mark.parametrize(
    ("message", "call_id", "names"),
    [
        ("not json", None, "call: Invalid JSON"),
        ("[1, 2]", None, "call: Input should be an object"),
        ('{"op": "read_version", "device_id": "<dev>"}', None, "id: Field required"),
        ('{"id": 1, "op": "fly"}', 1, "op: Input tag 'fly'"),
        ('{"id": 2}', 2, "op: missing"),
        ('{"id": 3, "op": "read_version"}', 3, "device_id: Field required"),
        ('{"id": 4, "op": "read_version", "device_id": "zz"}', 4, "device_id: Value error"),
        ('{"id": 5, "op": "activate"}', 5, "order: Field required"),
        (
            '{"id": 6, "op": "activate", "order": {"device_id": "<dev>", "firmware_hash": "ab"}}',
            6,
            "order.firmware_hash: Value error, expected a SHA-256",
        ),
        ('{"id": "seven", "op": "read_version", "device_id": "<dev>"}', None, "id:"),
    ],
)
@pytest.mark.parametrize("frame", ["text", "binary"])
async def test_a_malformed_call_gets_a_400_naming_what_is_wrong_and_the_channel_stays(
    message: str, call_id: int | None, names: str, frame: str
) -> None:
    dco = GatedDco()
    server = TestServer(make_app(dco, token=TOKEN))
    await server.start_server()
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.ws_connect(server.make_url(CALLS_PATH)) as ws:
                message = message.replace("<dev>", DEVICE_TEXT)
                if frame == "text":
                    await ws.send_str(message)
                else:
                    await ws.send_bytes(message.encode())
                answer = json.loads((await ws.receive()).data)
                assert (answer["id"], answer["status"]) == (call_id, 400), answer
                assert answer["body"]["error"] == "bad_request"
                assert answer["body"]["message"].startswith(names), answer
                assert "Traceback" not in answer["body"]["message"]
                # The channel is still open, and serves the next call.
                await ws.send_json({"id": 99, "op": "read_version", "device_id": DEVICE_TEXT})
                after = json.loads((await ws.receive()).data)
                assert (after["id"], after["status"]) == (99, 200)
        assert dco.calls == 1
    finally:
        await server.close()


async def test_calls_of_one_client_share_one_channel_and_are_answered_as_they_are_ready() -> None:
    dco = GatedDco(block=True)
    upgrades: list[str] = []

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == CALLS_PATH:
            upgrades.append(request.path)
        return await handler(request)

    app = make_app(dco, token=TOKEN)
    app.middlewares.insert(0, count)
    server = TestServer(app)
    await server.start_server()
    try:
        async with DcoClient([str(server.make_url(""))], token=TOKEN) as client:
            held = asyncio.create_task(client.activate_firmware(DEVICE, HASH))
            readings = await asyncio.gather(
                *(client.read_firmware_version(DEVICE + i) for i in range(20))
            )
            # The 11.2s were answered while the 11.3 sent before them is still open.
            assert [r.device_id for r in readings] == [DEVICE + i for i in range(20)]
            assert not held.done()
            dco.release.set()
            assert (await held).ok
        assert upgrades == [CALLS_PATH]
    finally:
        await server.close()


# -- a client's view of answers it cannot read -------------------------------------------


def _answering(*answers: str) -> web.Application:
    """A stand-in DCO whose channel answers each call with the next of `answers`
    (`{id}` filled in); a new channel starts again from the first."""

    async def calls(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        given = iter(answers)
        async for msg in ws:
            call_id = json.loads(msg.data)["id"]
            text = next(given, None)
            if text is None:
                break
            await ws.send_str(text.replace("{id}", str(call_id)))
        return ws

    app = web.Application()
    app.router.add_get(CALLS_PATH, calls)
    return app


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ('{"id": {id}, "status": 200, "body": {"device_id": "nope"}}', "device_id"),
        ('{"id": {id}, "status": "two hundred"}', "status"),
        ('{"id": {id}, "status": 418, "body": "teapot"}', "error answer without its document"),
    ],
)
async def test_an_answer_the_client_cannot_read_is_a_bad_response_for_its_call(
    answer: str, says: str
) -> None:
    server = TestServer(_answering(answer))
    await server.start_server()
    try:
        async with DcoClient([str(server.make_url(""))], token=TOKEN) as client:
            with pytest.raises(DcoHttpError, match="bad_response") as err:
                await client.read_firmware_version(DEVICE)
            assert says in str(err.value)
            assert client.retries == 0  # an answer, even one not understood, is final
    finally:
        await server.close()


async def test_an_answer_that_names_no_call_closes_the_channel_and_the_call_goes_again() -> None:
    reading = (
        '{"id": {id}, "status": 200, "body": {"device_id": "<dev>", "ok": true, '
        '"running_version": 33554432, "pending_version": null, "state": 1, "reason": 0, '
        '"read_at": 3.0}}'
    ).replace("<dev>", DEVICE_TEXT)
    server = TestServer(_answering_once_garbage(reading))
    await server.start_server()
    try:
        async with DcoClient([str(server.make_url(""))], token=TOKEN) as client:
            got = await client.read_firmware_version(DEVICE)
            assert got.ok and got.device_id == DEVICE
            # Dropped with the first channel, sent again on a second, answered there.
            assert client.retries == 1
    finally:
        await server.close()


def _answering_once_garbage(good: str) -> web.Application:
    """The first channel ever opened answers garbage; every later one answers `good`."""
    opened: list[int] = []

    async def calls(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        opened.append(1)
        first = len(opened) == 1
        async for msg in ws:
            call_id = json.loads(msg.data)["id"]
            await ws.send_str("garbage" if first else good.replace("{id}", str(call_id)))
        return ws

    app = web.Application()
    app.router.add_get(CALLS_PATH, calls)
    return app


# -- against the real DCO and fleet --------------------------------------------------------


@pytest.fixture
async def real_dco() -> AsyncIterator[tuple[str, bytes]]:
    """The DCO of a six-device fleet on an in-process bus, at 200 times real time,
    serving its app on a free port: its URL and the hash of the image it stores."""
    cfg = fleet_config([{"count": 6}], link={"bandwidth_bps": 1_000_000, "latency_seconds": 0.1})
    clock = ScaledClock(cfg.epoch_seconds, speed=200.0)
    bus = InProcessBus()
    host = FleetHost(clock, bus, cfg.name, build_devices(cfg))
    dco = Dco(clock, bus, cfg.name, 1, cfg.dco, block_size=cfg.block_size_bytes)
    host.start()
    dco.start()
    stored = await dco.update_firmware(make_image(4_000))
    runner = web.AppRunner(make_app(dco, token=TOKEN))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", stored.firmware_hash
    finally:
        await runner.cleanup()
        await dco.close()
        await bus.close()


async def test_11_3_and_11_2_through_the_channel_answer_as_through_http(
    real_dco: tuple[str, bytes],
) -> None:
    url, firmware_hash = real_dco
    async with (
        DcoClient([url], token=TOKEN, channel=True) as over_channel,
        DcoClient([url], token=TOKEN, channel=False) as over_http,
    ):
        before = [
            await over_channel.read_firmware_version(FIRST + 1),
            await over_http.read_firmware_version(FIRST + 1),
        ]
        outcomes = await asyncio.gather(
            over_channel.activate_firmware(FIRST, firmware_hash),
            over_http.activate_firmware(FIRST + 1, firmware_hash),
        )
        after = [
            await over_channel.read_firmware_version(FIRST + 1),
            await over_http.read_firmware_version(FIRST + 1),
        ]
        with pytest.raises(DcoHttpError, match="unknown_image") as by_channel:
            await over_channel.activate_firmware(FIRST + 2, bytes(32))
        with pytest.raises(DcoHttpError, match="unknown_image") as by_http:
            await over_http.activate_firmware(FIRST + 2, bytes(32))
        assert over_channel.retries == over_http.retries == 0
    assert by_channel.value.status == by_http.value.status == 404
    assert str(by_channel.value) == str(by_http.value)

    def without_time(x: Any, *fields: str) -> dict[str, Any]:
        d = {f: getattr(x, f) for f in x.__slots__ if f not in fields}
        return d

    a, b = (without_time(o, "device_id", "started_at", "finished_at") for o in outcomes)
    assert a == b and a["ok"] and a["blocks_sent"] > 0
    assert without_time(before[0], "read_at") == without_time(before[1], "read_at")
    assert without_time(after[0], "read_at") == without_time(after[1], "read_at")
    assert after[0].running_version == a["running_version"] != before[0].running_version
