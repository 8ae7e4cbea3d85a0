"""The DCO's side of the call channel (/v1/calls): 11.3s and 11.2s as JSON messages on
one WebSocket (the messages are declared in `smets1.dco_http`).

`dco_mock.http_api` checks the token before the upgrade and hands the open WebSocket to
a `CallChannel`, which reads calls for as long as it stays open. Each call is counted
against the gate's bound on calls served at once (a call beyond it is answered 503,
and an 11.3 for which the DCO has no room too, as the REST route would), then served by
a task of its own (an 11.3 waits minutes for its device) that writes its answer when it
has it, so answers go in the order they are ready. A message that is not a call is
answered 400 naming what is wrong, and the channel stays open.

A channel the client closes leaves its calls running: the DCO goes on with what it was
asked, as it does for an HTTP request whose connection closed, and their answers go
nowhere. When the DCO stops (`Channels.stop`, the app's on_shutdown), a channel takes
no more calls (503), and closes once the calls it holds are answered, or, past the
server's shutdown grace, when aiohttp cancels it: its calls are cancelled with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from dco_mock.errors import UnknownImage
from dco_mock.gate import Gate
from smets1.dco_http import (
    ACTIVATION_ANSWER,
    CALL,
    CALL_ID,
    ERROR_ANSWER,
    RETRY_AFTER_SECONDS,
    VERSION_ANSWER,
    ActivateCall,
    Answer,
    Document,
    ErrorDoc,
    ReadVersionCall,
)
from smets1.services import DcoApi

#: Given an 11.3's execution time, why the DCO has no room for it now (None: it has).
RoomFn = Callable[[float], str | None]

#: How long closing a channel waits for the client's close frame, wall seconds.
CLOSE_TIMEOUT_SECONDS = 2.0

log = logging.getLogger("dco_mock.call_channel")


def _id_of(data: bytes | str) -> int | None:
    """The id of a message that is not a valid call, if it has a readable one."""
    try:
        return CALL_ID.from_json(data).id
    except ValueError:
        return None


def _error(call_id: int | None, status: int, code: str, message: str) -> Answer[ErrorDoc]:
    retry_after = RETRY_AFTER_SECONDS if status == 503 else None
    return Answer(call_id, status, ErrorDoc(code, message), retry_after)


class CallChannel:
    """One open channel: reads its calls, serves each in a task, writes the answers."""

    def __init__(self, ws: web.WebSocketResponse, dco: DcoApi, gate: Gate, room: RoomFn) -> None:
        self._ws = ws
        self._dco = dco
        self._gate = gate
        self._room = room
        self._tasks: set[asyncio.Task[None]] = set()
        #: Set when the DCO stops: no new calls, and the channel closes once idle.
        self.stopping = False
        #: Set once the channel is being torn down (its handler cancelled).
        self._ended = False

    async def serve(self) -> None:
        """Read calls until the channel closes."""
        try:
            async for msg in self._ws:
                if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                    await self._take(msg.data)
                elif msg.type is WSMsgType.ERROR:
                    log.debug("call channel broken: %r", self._ws.exception())
                    break
        except asyncio.CancelledError:
            # The server's shutdown grace is over: the calls still open end here.
            self._ended = True
            for task in self._tasks:
                task.cancel()
            raise

    async def stop(self) -> None:
        """Take no more calls; close now if none is open (else when the last is answered)."""
        self.stopping = True
        if not self._tasks:
            await self._close()

    async def _close(self) -> None:
        if self._ws.closed:
            return
        try:
            await self._ws.close(code=WSCloseCode.GOING_AWAY, message=b"the DCO is stopping")
        except (ConnectionError, TimeoutError) as exc:  # the client went first
            log.debug("call channel closed under us: %r", exc)

    async def _take(self, data: bytes | str) -> None:
        try:
            call = CALL.from_json(data)
        except ValueError as exc:
            await self._send(ERROR_ANSWER, _error(_id_of(data), 400, "bad_request", str(exc)))
            return
        gate = self._gate
        if self.stopping:
            gate.refused_busy += 1
            message = f"the DCO is stopping; send again after {RETRY_AFTER_SECONDS} s"
            await self._send(ERROR_ANSWER, _error(call.id, 503, "busy", message))
            return
        if gate.full():
            gate.refused_busy += 1
            await self._send(ERROR_ANSWER, _error(call.id, 503, "busy", gate.busy_message()))
            return
        if isinstance(call, ActivateCall):
            no_room = self._room(call.order.execution_time)
            if no_room is not None:
                # Backpressure, as on the REST route: the scheduler holds its releases.
                gate.refused_no_room += 1
                message = f"{no_room}; send again after {RETRY_AFTER_SECONDS} s"
                await self._send(ERROR_ANSWER, _error(call.id, 503, "no_room", message))
                return
        gate.in_flight += 1
        task = asyncio.create_task(self._serve(call))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._gate.in_flight -= 1
        if self.stopping and not self._tasks and not self._ended:
            closing = asyncio.create_task(self._close())
            self._tasks.add(closing)  # held until it ends, as the calls are
            closing.add_done_callback(self._tasks.discard)

    async def _serve(self, call: ActivateCall | ReadVersionCall) -> None:
        try:
            answer = await self._answer(call)
        except Exception:
            # What the REST route would answer 500; the channel stays open.
            log.exception("call %d (%s) failed", call.id, call.op)
            answer = (ERROR_ANSWER, _error(call.id, 500, "internal_error", "the DCO failed"))
        await self._send(*answer)

    async def _answer(self, call: ActivateCall | ReadVersionCall) -> tuple[Document[Any], Any]:
        if isinstance(call, ReadVersionCall):
            reading = await self._dco.read_firmware_version(call.device_id)
            return VERSION_ANSWER, Answer(call.id, 200, reading)
        o = call.order
        try:
            outcome = await self._dco.activate_firmware(
                o.device_id, o.firmware_hash, o.execution_time, o.originator
            )
        except UnknownImage as exc:
            return ERROR_ANSWER, _error(call.id, 404, "unknown_image", str(exc))
        return ACTIVATION_ANSWER, Answer(call.id, 200, outcome)

    async def _send(self, doc: Document[Any], answer: Any) -> None:
        if self._ws.closed:
            return  # the client went: the answer goes with it
        try:
            # aiohttp waits for the socket to drain only past its write buffer's limit.
            await self._ws.send_bytes(doc.to_json(answer))
        except ConnectionError:
            log.debug("call %s: the channel closed before its answer", answer.id)


class Channels:
    """The channels a DCO app has open, so that stopping it closes them in good order."""

    def __init__(self) -> None:
        self._open: set[CallChannel] = set()

    async def serve(self, channel: CallChannel) -> None:
        self._open.add(channel)
        try:
            await channel.serve()
        finally:
            self._open.discard(channel)

    def __len__(self) -> int:
        return len(self._open)

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in list(self._open)))
