"""The guard in front of the DCO's HTTP API: the shared bearer token, and the bound on
requests in flight (503 with Retry-After), with the client's side of both."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler

from dco_mock import call_channel
from dco_mock.http_api import GATE_KEY, make_app
from orchestrator.dco_client import DcoClient
from orchestrator.errors import DcoHttpError
from smets1.codes import DeviceState, Reason
from smets1.dco_http import (
    ACTIVATION_ORDER,
    ACTIVATIONS_PATH,
    CALLS_PATH,
    HEALTH_PATH,
    IMAGES_PATH,
    METRICS_PATH,
    PUBLIC_PATHS,
    VERSION_PATH,
    ActivationOrder,
)
from smets1.errors import ConfigError
from smets1.eui64 import format_eui64
from smets1.services import ActivationOutcome, StoredImage, VersionReading

DEVICE = 0x00DB_1200_0000_0042
HASH = hashlib.sha256(b"image").digest()
TOKEN = "0123456789abcdef-shared"


class GatedDco:
    """A stand-in DCO whose 11.3s wait until `release` is set; counts what it is asked."""

    def __init__(self, block: bool = False) -> None:
        self.calls = 0
        self.inside = 0
        self.most_inside = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        if not block:
            self.release.set()

    async def update_firmware(self, image: bytes) -> StoredImage:
        self.calls += 1
        return StoredImage(HASH, len(image), 0x02000000, 0x1234, 1, 3, 100.0)

    async def activate_firmware(
        self,
        device_id: int,
        firmware_hash: bytes,
        execution_time: float = 0.0,
        originator: int | None = None,
    ) -> ActivationOutcome:
        self.calls += 1
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        self.entered.set()
        try:
            await self.release.wait()
            for _ in range(3):  # a few turns of the loop, so that calls overlap
                await asyncio.sleep(0)
        finally:
            self.inside -= 1
        return ActivationOutcome(
            device_id, True, DeviceState.ACTIVE, Reason.NONE, 0x02000000, 3, 3000, 1.0, 2.5, 1
        )

    async def read_firmware_version(self, device_id: int) -> VersionReading:
        self.calls += 1
        return VersionReading(
            device_id, True, 0x02000000, None, DeviceState.ACTIVE, Reason.NONE, 3.0
        )


ORDER = ACTIVATION_ORDER.to_json(ActivationOrder(DEVICE, HASH))
#: Every route that does something, with a body it would accept.
GUARDED = [
    ("POST", IMAGES_PATH, b"image-bytes"),
    ("POST", ACTIVATIONS_PATH, ORDER),
    ("GET", VERSION_PATH, None),
]


def _url(path: str) -> str:
    return path.format(device_id=format_eui64(DEVICE))


def test_every_route_but_health_and_metrics_is_guarded() -> None:
    """If a route is added, it is added here too, and so tested for the token (the call
    channel's, a WebSocket, in test_call_channel.py)."""
    app = make_app(GatedDco(), token=TOKEN)
    served = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert served - PUBLIC_PATHS == {path for _, path, _ in GUARDED} | {CALLS_PATH}
    assert PUBLIC_PATHS == {HEALTH_PATH, METRICS_PATH}


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
    ],
)
async def test_no_token_or_a_wrong_one_is_refused_401(
    method: str, path: str, body: bytes | None, authorization: str | None
) -> None:
    dco = GatedDco()
    headers = {} if authorization is None else {"Authorization": authorization}
    async with TestClient(TestServer(make_app(dco, token=TOKEN))) as client:
        resp = await client.request(method, _url(path), data=body, headers=headers)
        text = await resp.text()
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert json.loads(text)["error"] == "unauthorized"
        assert len(text) < 200 and TOKEN not in text  # short, and gives nothing away
        assert client.app[GATE_KEY].refused_unauthenticated == 1
        # And with the token the same request goes through.
        ok = await client.request(
            method, _url(path), data=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert ok.status == 200
    assert dco.calls == 1  # the refused request never reached the DCO


async def test_health_and_metrics_need_no_token_for_probes_and_scrapers() -> None:
    async with TestClient(TestServer(make_app(GatedDco(), token=TOKEN))) as client:
        assert (await client.get(HEALTH_PATH)).status == 200
        metrics = await client.get(METRICS_PATH)
        assert metrics.status == 200
        assert "smets1_dco_http_refused_unauthenticated_total" in await metrics.text()


def test_a_dco_without_a_token_does_not_start() -> None:
    with pytest.raises(ConfigError, match=r"dco\.token.*SMETS1_DCO_TOKEN"):
        make_app(GatedDco(), token="")
    with pytest.raises(ConfigError, match="visible ASCII"):
        make_app(GatedDco(), token="two words")


@pytest.mark.parametrize("channel", [True, False], ids=["channel", "http"])
async def test_the_client_sends_the_token_and_a_401_names_the_setting(channel: bool) -> None:
    dco = GatedDco()
    server = TestServer(make_app(dco, token=TOKEN))
    await server.start_server()
    try:
        url = str(server.make_url(""))
        async with DcoClient([url], token=TOKEN, channel=channel) as client:
            assert (await client.activate_firmware(DEVICE, HASH)).ok
        async with DcoClient([url], token="not-the-token", channel=channel) as client:
            with pytest.raises(DcoHttpError, match="SMETS1_DCO_TOKEN") as err:
                await client.read_firmware_version(DEVICE)
            assert err.value.status == 401
    finally:
        await server.close()


# -- in flight -----------------------------------------------------------------------


async def test_a_full_dco_answers_503_with_retry_after_and_closes() -> None:
    dco = GatedDco(block=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with TestClient(TestServer(make_app(dco, token=TOKEN, max_in_flight=1))) as client:
        held = asyncio.create_task(client.post(ACTIVATIONS_PATH, data=ORDER, headers=auth))
        await dco.entered.wait()
        busy = await client.post(ACTIVATIONS_PATH, data=ORDER, headers=auth)
        assert busy.status == 503
        assert busy.headers["Retry-After"] == "1"
        assert busy.headers.get("Connection", "").lower() == "close"
        assert (await busy.json())["error"] == "busy"
        # Probes still answer while the DCO is full.
        assert (await client.get(HEALTH_PATH)).status == 200
        dco.release.set()
        assert (await held).status == 200
        assert client.app[GATE_KEY].refused_busy == 1
        assert client.app[GATE_KEY].in_flight == 0


def answering_503_first(dco: GatedDco, times: int, channel: bool) -> web.Application:
    """The DCO's app, but the first `times` 11.3s are answered 503, Retry-After: 0 (on
    the call channel: turned away for want of room; dco_mock.call_channel's
    RETRY_AFTER_SECONDS is for the test to set)."""
    refused: list[int] = []
    if channel:

        def no_room(_at: float) -> str | None:
            if len(refused) < times:
                refused.append(1)
                return "no room yet"
            return None

        return make_app(dco, token=TOKEN, room=no_room)

    @web.middleware
    async def busy(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == ACTIVATIONS_PATH and len(refused) < times:
            refused.append(1)
            return web.json_response(
                {"error": "busy", "message": "full"}, status=503, headers={"Retry-After": "0"}
            )
        return await handler(request)

    app = make_app(dco, token=TOKEN)
    app.middlewares.insert(0, busy)
    return app


@pytest.mark.parametrize("channel", [True, False], ids=["channel", "http"])
async def test_the_client_sends_again_after_retry_after(
    channel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_channel, "RETRY_AFTER_SECONDS", 0)
    dco = GatedDco()
    server = TestServer(answering_503_first(dco, times=3, channel=channel))
    await server.start_server()
    try:
        url = str(server.make_url(""))
        async with DcoClient([url], token=TOKEN, channel=channel) as client:
            outcome = await client.activate_firmware(DEVICE, HASH)
            assert outcome.ok
            assert client.busy_retries == 3
            assert client.retries == 0  # busy is not a failed connection
            assert client.problem() is None
    finally:
        await server.close()


@pytest.mark.parametrize("channel", [True, False], ids=["channel", "http"])
async def test_the_client_keeps_its_calls_within_its_bound(channel: bool) -> None:
    """Ten 11.3s at once through a client bounded to three: the DCO never holds more
    than three, so it never has to refuse one."""
    dco = GatedDco()
    server = TestServer(make_app(dco, token=TOKEN, max_in_flight=3))
    await server.start_server()
    try:
        url = str(server.make_url(""))
        async with DcoClient([url], token=TOKEN, max_in_flight=3, channel=channel) as c:
            devices = [DEVICE + i for i in range(10)]
            outcomes = await asyncio.gather(*(c.activate_firmware(d, HASH) for d in devices))
            assert [o.device_id for o in outcomes] == devices and all(o.ok for o in outcomes)
            assert c.busy_retries == 0
        assert 1 <= dco.most_inside <= 3
    finally:
        await server.close()


@pytest.mark.parametrize("channel", [True, False], ids=["channel", "http"])
async def test_an_11_3_without_room_is_turned_away_and_the_client_holds_releases(
    channel: bool,
) -> None:
    """Backpressure: while the DCO says it has no room (slots taken, outbound queue full)
    it answers a new 11.3 503 with Retry-After, before the DCO sees it; the client then
    says there is no room for releases until that Retry-After has passed."""
    dco = GatedDco()
    no_room: list[str | None] = ["all 1 transfer slots taken"]
    server = TestServer(make_app(dco, token=TOKEN, room=lambda _at: no_room[0]))
    async with TestClient(server) as http:
        resp = await http.post(
            ACTIVATIONS_PATH, data=ORDER, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"] == "no_room"
        assert http.app[GATE_KEY].refused_no_room == 1
        assert dco.calls == 0
        url = str(server.make_url(""))
        async with DcoClient([url], token=TOKEN, channel=channel) as client:
            assert client.room_for_release()
            call = asyncio.create_task(client.activate_firmware(DEVICE, HASH))
            # The first answer: 503, no room (the client has no event to await for it).
            while client.busy_retries == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            assert not client.room_for_release()
            no_room[0] = None  # room again: the call goes through after Retry-After
            outcome = await asyncio.wait_for(call, 30)
            await asyncio.wait_for(client.wait_for_release_room(), 30)
            assert outcome.ok and client.room_for_release()
    assert dco.calls == 1
