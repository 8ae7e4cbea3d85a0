"""`DcoApi` over HTTP: the scheduler's side of `dco_mock.http_api`.

Given several DCO workers, an 11.1 goes to every worker (each stores the image), and the
11.3 and 11.2 of a device always go to the same worker, chosen by `shard_of`.

A request whose connection fails is sent again with exponential backoff, for up to
`retry_seconds` of wall time after the first failure in a row: refused before it reached
the DCO (a worker starting or restarting), or dropped while it was open (an 11.3 stays
open for its whole transfer, so a worker that restarts mid-campaign drops every 11.3 it
held). Every call is safe to repeat: an 11.1 stores by hash, an 11.2 only reads, and a
repeated 11.3 finds the device holding the blocks it already received (its bitmap), so
the transfer resumes where it stopped and nothing the scheduler accepted is lost. An
answer from the DCO, even an error, is final.

One case needs more than sending again: the worker may have died after it told the
device to activate. A device rebooting into the image refuses a new transfer (busy),
and one already running it would take the image a second time and reboot again. So
before an 11.3 whose connection dropped is sent again, the client reads the device's
version (11.2): activating, it waits for the reboot to end; running the image's version
already, the 11.3 is answered from that reading, without a transfer.

Errors: `orchestrator.errors.DcoHttpError`, the DCO answered with an error or could not
be reached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aiohttp

from orchestrator.errors import DcoHttpError
from smets1.bus import shard_of
from smets1.codes import DeviceState, Reason
from smets1.dco_http import (
    ACTIVATION_ORDER,
    ACTIVATION_OUTCOME,
    ACTIVATIONS_PATH,
    ERROR,
    IMAGES_PATH,
    STORED_IMAGE,
    VERSION_PATH,
    VERSION_READING,
    ActivationOrder,
    Document,
    ErrorDoc,
)
from smets1.eui64 import format_eui64
from smets1.services import ActivationOutcome, StoredImage, VersionReading
from smets1.wire import IMMEDIATE

T = TypeVar("T")

RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0

#: How often a device seen rebooting into its image is read again, wall seconds.
ACTIVATING_POLL_SECONDS = 0.5

log = logging.getLogger("orchestrator.dco_client")

#: The DCO could not be reached, or the connection broke before its answer was read
#: (refused, reset, closed by a worker that stopped, or a truncated body).
_CONNECTION_FAILED = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


class DcoClient:
    """Implements smets1.services.DcoApi against one or more DCO workers."""

    def __init__(self, base_urls: Sequence[str], retry_seconds: float = 60.0) -> None:
        if not base_urls:
            raise ValueError("at least one DCO URL is needed")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.retry_seconds = retry_seconds
        #: Calls sent again after a failed connection.
        self.retries = 0
        #: firmware hash → file version, from the DCO's answers to 11.1.
        self._versions: dict[bytes, int] = {}
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # An 11.3 stays open for its whole transfer: no total timeout, and no cap
                # on connections (each 11.3 in flight holds one).
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> DcoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _worker(self, device_id: int) -> str:
        return self.base_urls[shard_of(device_id, len(self.base_urls))]

    async def _call(
        self,
        base: str,
        send: Callable[[aiohttp.ClientSession], Awaitable[T]],
        resume: Callable[[], Awaitable[T | None]] | None = None,
    ) -> T:
        """`send` until it is answered; after a dropped connection, `resume` first (if
        given): a result from it stands for the answer the connection lost."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # set by the first failure of a streak
        delay = RETRY_FIRST_SECONDS
        dropped = False
        while True:
            try:
                if dropped and resume is not None:
                    settled = await resume()
                    if settled is not None:
                        return settled
                    dropped = False
                return await send(self._http())
            except _CONNECTION_FAILED as exc:
                now = loop.time()
                if deadline is None:
                    deadline = now + self.retry_seconds
                if now + delay > deadline:
                    raise DcoHttpError(base, None, "unreachable", str(exc) or repr(exc)) from exc
                self.retries += 1
                if isinstance(exc, aiohttp.ClientConnectorError):
                    log.debug("DCO %s unreachable (%s); again in %.1f s", base, exc, delay)
                else:
                    dropped = True
                    log.warning(
                        "DCO %s dropped a request (%r); sending it again in %.1f s",
                        base,
                        exc,
                        delay,
                    )
            await asyncio.sleep(delay)  # wall time: the DCO's restart, not simulated time
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    @staticmethod
    async def _answer(base: str, resp: aiohttp.ClientResponse, doc: Document[T]) -> T:
        """The DCO's answer as `doc`; its error document, or a body that is neither, as
        DcoHttpError."""
        body = await resp.read()
        if resp.status != 200:
            try:
                error = ERROR.from_json(body)
            except ValueError:
                error = ErrorDoc("bad_response", body[:200].decode(errors="replace"))
            raise DcoHttpError(base, resp.status, error.error, error.message)
        try:
            return doc.from_json(body)
        except ValueError as exc:
            raise DcoHttpError(base, resp.status, "bad_response", str(exc)) from None

    async def update_firmware(self, image: bytes) -> StoredImage:
        async def one(base: str) -> StoredImage:
            async def send(http: aiohttp.ClientSession) -> StoredImage:
                async with http.post(
                    base + IMAGES_PATH,
                    data=image,
                    headers={"Content-Type": "application/octet-stream"},
                ) as resp:
                    return await self._answer(base, resp, STORED_IMAGE)

            return await self._call(base, send)

        stored = await asyncio.gather(*(one(b) for b in self.base_urls))
        self._versions[stored[0].firmware_hash] = stored[0].file_version
        return stored[0]

    async def activate_firmware(
        self,
        device_id: int,
        firmware_hash: bytes,
        execution_time: float = 0.0,
        originator: int | None = None,
    ) -> ActivationOutcome:
        base = self._worker(device_id)
        body = ACTIVATION_ORDER.to_json(
            ActivationOrder(device_id, firmware_hash, execution_time, originator)
        )

        async def send(http: aiohttp.ClientSession) -> ActivationOutcome:
            async with http.post(
                base + ACTIVATIONS_PATH,
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp:
                return await self._answer(base, resp, ACTIVATION_OUTCOME)

        async def resume() -> ActivationOutcome | None:
            return await self._activated_already(device_id, firmware_hash, execution_time)

        return await self._call(base, send, resume)

    async def _activated_already(
        self, device_id: int, firmware_hash: bytes, execution_time: float
    ) -> ActivationOutcome | None:
        """After a dropped 11.3: the device's own word if it already runs the image
        (waiting out an activation reboot first); None when the 11.3 must go again."""
        version = self._versions.get(firmware_hash)
        if version is None or execution_time != IMMEDIATE:
            return None  # a future-dated 11.3 or a cancellation is simply sent again
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_seconds
        while True:
            reading = await self.read_firmware_version(device_id)
            if reading.state is not DeviceState.ACTIVATING or loop.time() > deadline:
                break
            await asyncio.sleep(ACTIVATING_POLL_SECONDS)  # wall time, as the retries
        if not (
            reading.ok
            and reading.state is DeviceState.ACTIVE
            and reading.running_version == version
        ):
            return None
        log.info(
            "device %s already runs the image: the dropped 11.3 is answered",
            format_eui64(device_id),
        )
        return ActivationOutcome(
            device_id,
            True,
            DeviceState.ACTIVE,
            Reason.NONE,
            version,
            0,
            0,
            reading.read_at,
            reading.read_at,
            0,
        )

    async def read_firmware_version(self, device_id: int) -> VersionReading:
        base = self._worker(device_id)
        path = VERSION_PATH.format(device_id=format_eui64(device_id))

        async def send(http: aiohttp.ClientSession) -> VersionReading:
            async with http.get(base + path) as resp:
                return await self._answer(base, resp, VERSION_READING)

        return await self._call(base, send)
