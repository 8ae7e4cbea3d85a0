"""The DCO's HTTP API and its client, against a stand-in DCO (no broker needed)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from dco_mock.errors import UnknownImage
from dco_mock.http_api import make_app
from orchestrator.dco_client import DcoClient
from orchestrator.errors import DcoHttpError
from smets1.codes import DeviceState, Reason
from smets1.dco_http import ACTIVATIONS_PATH, CALLS_PATH
from smets1.services import ActivationOutcome, StoredImage, VersionReading

DEVICE = 0x00DB_1200_0000_0042
HASH = hashlib.sha256(b"image").digest()
TOKEN = "shared-dco-token"


class FakeDco:
    def __init__(self) -> None:
        self.images: list[bytes] = []

    async def update_firmware(self, image: bytes) -> StoredImage:
        self.images.append(image)
        return StoredImage(HASH, len(image), 0x02000000, 0x1234, 1, 3, 100.0)

    async def activate_firmware(
        self,
        device_id: int,
        firmware_hash: bytes,
        execution_time: float = 0.0,
        originator: int | None = None,
    ) -> ActivationOutcome:
        if firmware_hash != HASH:
            raise UnknownImage(firmware_hash)
        return ActivationOutcome(
            device_id, True, DeviceState.ACTIVE, Reason.NONE, 0x02000000, 3, 3000, 1.0, 2.5, 1
        )

    async def read_firmware_version(self, device_id: int) -> VersionReading:
        # 0x99 is a code this build does not know: it must still travel.
        return VersionReading(
            device_id, True, 0x02000000, None, DeviceState.ACTIVE, Reason(0x99), 3.0
        )


@pytest.mark.parametrize("channel", [True, False], ids=["channel", "http"])
async def test_round_trip_of_11_1_11_3_11_2_through_two_workers(channel: bool) -> None:
    dcos = [FakeDco(), FakeDco()]
    servers = [TestServer(make_app(d, token=TOKEN)) for d in dcos]
    for s in servers:
        await s.start_server()
    try:
        urls = [str(s.make_url("")) for s in servers]
        async with DcoClient(urls, token=TOKEN, channel=channel) as client:
            stored = await client.update_firmware(b"image-bytes")
            assert stored.firmware_hash == HASH and stored.size_bytes == 11
            assert [d.images for d in dcos] == [[b"image-bytes"], [b"image-bytes"]]
            outcome = await client.activate_firmware(DEVICE, HASH)
            assert outcome.ok and outcome.state is DeviceState.ACTIVE
            assert (outcome.device_id, outcome.bytes_sent, outcome.finished_at) == (
                DEVICE,
                3000,
                2.5,
            )
            reading = await client.read_firmware_version(DEVICE)
            assert reading.running_version == 0x02000000 and reading.pending_version is None
            assert reading.reason.name == "undefined_0x99"
            with pytest.raises(DcoHttpError, match="unknown_image") as err:
                await client.activate_firmware(DEVICE, bytes(32))
            assert err.value.status == 404
    finally:
        for s in servers:
            await s.close()


async def test_unreachable_dco_is_retried_then_reported() -> None:
    async with DcoClient(["http://127.0.0.1:9"], token=TOKEN, retry_seconds=0.3) as client:
        with pytest.raises(DcoHttpError, match="unreachable"):
            await client.read_firmware_version(DEVICE)


class CountingDco(FakeDco):
    """Counts 11.3s; its device runs the old version until told otherwise."""

    def __init__(self, running: int = 0x01000000) -> None:
        super().__init__()
        self.activations = 0
        self.running = running
        #: Called once the first 11.3 is done, before its answer goes.
        self.after_first: list[Callable[[], None]] = []

    async def activate_firmware(
        self,
        device_id: int,
        firmware_hash: bytes,
        execution_time: float = 0.0,
        originator: int | None = None,
    ) -> ActivationOutcome:
        self.activations += 1
        outcome = await super().activate_firmware(
            device_id, firmware_hash, execution_time, originator
        )
        if self.activations == 1:
            for hook in self.after_first:
                hook()
        return outcome

    async def read_firmware_version(self, device_id: int) -> VersionReading:
        state = DeviceState.ACTIVE if self.running == 0x02000000 else DeviceState.RECEIVING
        return VersionReading(device_id, True, self.running, None, state, Reason.NONE, 3.0)


def dropping_first_activation(dco: CountingDco) -> web.Application:
    """The DCO's app, but the first 11.3's connection dies before the answer (a crash):
    its HTTP request's, or the call channel it came on."""
    dropped: list[bool] = []
    channels: list[web.Request] = []

    def drop_channel() -> None:
        if channels:  # else the 11.3 came as an HTTP request
            transport = channels[-1].transport
            assert transport is not None
            transport.abort()

    dco.after_first.append(drop_channel)

    @web.middleware
    async def drop(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == CALLS_PATH:
            channels.append(request)
        response = await handler(request)
        if request.path == ACTIVATIONS_PATH and not dropped:
            dropped.append(True)
            assert request.transport is not None
            request.transport.abort()
        return response

    app = make_app(dco, token=TOKEN)
    app.middlewares.append(drop)
    return app


@pytest.mark.parametrize("channel", [True, False], ids=["channel", "http"])
@pytest.mark.parametrize("activated_before_the_drop", [False, True])
async def test_a_dropped_11_3_is_resumed(activated_before_the_drop: bool, channel: bool) -> None:
    dco = CountingDco(running=0x02000000 if activated_before_the_drop else 0x01000000)
    server = TestServer(dropping_first_activation(dco))
    await server.start_server()
    try:
        url = str(server.make_url(""))
        async with DcoClient([url], token=TOKEN, retry_seconds=5.0, channel=channel) as client:
            await client.update_firmware(b"image-bytes")
            outcome = await client.activate_firmware(DEVICE, HASH)
            assert outcome.ok and outcome.state is DeviceState.ACTIVE
            assert outcome.running_version == 0x02000000
            assert client.retries == 1
            # Sent again only when the device did not already run the image.
            assert dco.activations == (1 if activated_before_the_drop else 2)
    finally:
        await server.close()
