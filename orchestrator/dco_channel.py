"""The client's side of a DCO worker's call channel (/v1/calls, `smets1.dco_http`): one
WebSocket that carries the scheduler's 11.3s and 11.2s as messages, each with an id.

`DcoChannel.call` sends a call and waits for its answer; one reader task per channel
reads the answers, in whatever order the DCO has them, and hands each to the call with
its id. Nothing else runs per call: no task, no connection, no HTTP request.

When the channel closes or breaks, every call still waiting on it fails with
`ChannelDropped`, an aiohttp connection error, so that `DcoClient` handles it as a
dropped HTTP request: sent again, after backoff, on a new channel (an 11.3 first
resumed from an 11.2 reading). An answer the client cannot read is a `DcoHttpError`
`bad_response` for its call; one that names no call at all closes the channel (every
call on it goes again), since the client can no longer tell which call it answered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from orchestrator.errors import DcoHttpError
from smets1.dco_http import ANSWER, CALL_ID, CALLS_PATH, Answer

log = logging.getLogger("orchestrator.dco_channel")


class ChannelDropped(aiohttp.ClientConnectionError):
    """The call channel closed before the call's answer came: send it again."""


class DcoChannel:
    """One open call channel to a DCO worker at `base`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, base: str) -> None:
        self._ws = ws
        self.base = base
        self._pending: dict[int, asyncio.Future[Answer[Any]]] = {}
        self._ids = itertools.count(1)
        #: Set once the channel is closed or broken: no call is sent on it any more.
        self.closed = False
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, base: str) -> DcoChannel:
        """The channel to `base`; aiohttp's errors if it cannot be opened (refused, or
        WSServerHandshakeError with the DCO's status: 401, 503, 404 from an older DCO)."""
        # No compression (small messages, a local network) and no heartbeat: a channel
        # holds its calls as long as an HTTP request would, and a dead peer is seen by
        # the connection, as it is for an HTTP request.
        ws = await http.ws_connect(base + CALLS_PATH, compress=0, autoping=True)
        return cls(ws, base)

    def __len__(self) -> int:
        """Calls waiting for their answers."""
        return len(self._pending)

    async def call(self, message: Callable[[int], bytes]) -> Answer[Any]:
        """Send the call `message(id)` makes, and wait for its answer: ChannelDropped if
        the channel closes first, DcoHttpError if the answer cannot be read."""
        if self.closed:
            raise ChannelDropped(f"the call channel to {self.base} is closed")
        call_id = next(self._ids)
        answer: asyncio.Future[Answer[Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = answer
        try:
            try:
                # aiohttp waits for the socket to drain only past its write buffer's limit.
                await self._ws.send_bytes(message(call_id))
            except ConnectionError as exc:  # the transport is closing under us
                raise ChannelDropped(f"the call channel to {self.base} closed: {exc}") from exc
            return await answer
        finally:
            del self._pending[call_id]
            if answer.done() and not answer.cancelled():
                answer.exception()  # dropped while it was being sent: read, not left over

    async def close(self) -> None:
        self.closed = True
        await self._ws.close()
        await self._reader

    async def _read(self) -> None:
        why = "was closed by the DCO"
        try:
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.BINARY or msg.type is aiohttp.WSMsgType.TEXT:
                    if not self._resolve(msg.data):
                        why = "was closed by the client: an answer named no call"
                        await self._ws.close()
                        break
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    why = f"broke: {self._ws.exception()!r}"
                    break
            else:
                code = self._ws.close_code
                if code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE:
                    why = "lost its connection"
                elif code is not None:
                    why = f"was closed by the DCO (code {code})"
        except Exception as exc:  # whatever breaks the reader breaks the channel
            why = f"broke: {exc!r}"
        finally:
            self._drop(why)

    def _resolve(self, data: bytes | str) -> bool:
        """Hand an answer to its call; False if it names no call."""
        try:
            answer = ANSWER.from_json(data)
        except ValueError as exc:
            try:
                call_id: int | None = CALL_ID.from_json(data).id
            except ValueError:
                call_id = None
            if call_id is None:
                log.error(
                    "DCO %s: an answer that names no call (%s): %r", self.base, exc, data[:200]
                )
                return False
            waiting = self._pending.get(call_id)
            if waiting is not None and not waiting.done():
                waiting.set_exception(DcoHttpError(self.base, None, "bad_response", str(exc)))
            return True
        if answer.id is None:
            # The DCO could not read the id of a call this client sent: which is unknown.
            log.error("DCO %s could not read a call: %s", self.base, answer.body)
            return False
        waiting = self._pending.get(answer.id)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)
        # else: its caller stopped waiting (cancelled); the answer has no one to go to.
        return True

    def _drop(self, why: str) -> None:
        self.closed = True
        for waiting in self._pending.values():
            if not waiting.done():
                waiting.set_exception(
                    ChannelDropped(f"the call channel to {self.base} {why} before the answer")
                )
