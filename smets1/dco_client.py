"""`DcoApi` over HTTP: the scheduler's side of `dco_mock.http_api`.

Given several DCO workers, an 11.1 goes to every worker (each stores the image), and the
11.3 and 11.2 of a device always go to the same worker, chosen by `shard_of`.

A request that never reached the DCO (connection refused, DNS) is retried with
exponential backoff for up to `retry_seconds`; one that reached it is not, since an
11.3 sent twice would start a second transfer to the same device.

DcoHttpError (a Smets1Error)   the DCO answered with an error, or could not be reached
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiohttp

from smets1.bus import shard_of
from smets1.dco_http import (
    ACTIVATIONS_PATH,
    IMAGES_PATH,
    VERSION_PATH,
    activation_request_to_json,
    outcome_from_json,
    reading_from_json,
    stored_image_from_json,
)
from smets1.errors import Smets1Error
from smets1.eui64 import format_eui64
from smets1.services import ActivationOutcome, StoredImage, VersionReading

T = TypeVar("T")

RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0


class DcoHttpError(Smets1Error):
    def __init__(self, url: str, status: int | None, code: str, message: str) -> None:
        where = f"HTTP {status}" if status is not None else "unreachable"
        super().__init__(f"DCO {url}: {where} {code}: {message}")
        self.url = url
        self.status = status
        self.code = code


class DcoClient:
    """Implements smets1.services.DcoApi against one or more DCO workers."""

    def __init__(self, base_urls: Sequence[str], retry_seconds: float = 60.0) -> None:
        if not base_urls:
            raise ValueError("at least one DCO URL is needed")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.retry_seconds = retry_seconds
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

    async def _call(self, base: str, send: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_seconds
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                return await send(self._http())
            except aiohttp.ClientConnectorError as exc:
                if loop.time() + delay > deadline:
                    raise DcoHttpError(base, None, "unreachable", str(exc)) from exc
            await asyncio.sleep(delay)  # wall time: the DCO's restart, not simulated time
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    @staticmethod
    async def _json(base: str, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            body = await resp.json()
        except (aiohttp.ContentTypeError, ValueError):
            body = {"error": "bad_response", "message": (await resp.text())[:200]}
        if resp.status != 200:
            raise DcoHttpError(base, resp.status, str(body.get("error")), str(body.get("message")))
        return dict(body)

    async def update_firmware(self, image: bytes) -> StoredImage:
        async def one(base: str) -> StoredImage:
            async def send(http: aiohttp.ClientSession) -> StoredImage:
                async with http.post(
                    base + IMAGES_PATH,
                    data=image,
                    headers={"Content-Type": "application/octet-stream"},
                ) as resp:
                    return stored_image_from_json(await self._json(base, resp))

            return await self._call(base, send)

        stored = await asyncio.gather(*(one(b) for b in self.base_urls))
        return stored[0]

    async def activate_firmware(
        self, device_id: int, firmware_hash: bytes, execution_time: float = 0.0
    ) -> ActivationOutcome:
        base = self._worker(device_id)
        body = activation_request_to_json(device_id, firmware_hash, execution_time)

        async def send(http: aiohttp.ClientSession) -> ActivationOutcome:
            async with http.post(base + ACTIVATIONS_PATH, json=body) as resp:
                return outcome_from_json(await self._json(base, resp))

        return await self._call(base, send)

    async def read_firmware_version(self, device_id: int) -> VersionReading:
        base = self._worker(device_id)
        path = VERSION_PATH.format(device_id=format_eui64(device_id))

        async def send(http: aiohttp.ClientSession) -> VersionReading:
            async with http.get(base + path) as resp:
                return reading_from_json(await self._json(base, resp))

        return await self._call(base, send)
