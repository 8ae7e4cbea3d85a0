"""`DcoApi` over HTTP: the scheduler's side of `dco_mock.http_api`.

Given several DCO workers, an 11.1 goes to every worker (each stores the image), and the
11.3 and 11.2 of a device always go to the same worker, chosen by `shard_of`.

An 11.1 is an HTTP request. 11.3s and 11.2s go on the worker's call channel
(`orchestrator.dco_channel`): one WebSocket to each worker, opened by the first call
that needs it and again by the first call after it closed, carrying every call as a
message; an HTTP request each costs several times the CPU at both ends, and an 11.3
would hold its connection for minutes. With `channel=False`, or to a worker that does
not serve the channel (404 to its upgrade: an older DCO), they are HTTP requests too.
Either way a call has the same answers, and the same failures, described below in HTTP
terms: a channel that closes before a call's answer is a connection dropped while the
call was open, a channel refused when it opens is a connection refused (or a 401 or
503, as to any request), and an answer carries the status and document the HTTP route
would (a 503 its Retry-After).

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

Bounds: each worker gets at most `max_in_flight` calls at once (over HTTP one pooled
connection each; an 11.3 holds its connection for its whole transfer); more wait their
turn in the client, holding no socket. A worker that is full answers 503 with
Retry-After: the call waits that long and goes again, for as long as the worker keeps
answering so. An 11.3 turned away so (the worker has no free transfer slot, or its
outbound queue is full) also makes `room_for_release()` false until its Retry-After has
passed: the scheduler's release loop holds its releases meanwhile
(scheduler.release.ReleaseRoom).

A worker that cannot be reached is logged at error level when it goes, every
DOWN_REPORT_SECONDS while it stays away, and when it is back; `problem()` says which
worker and why, for the scheduler's /healthz. With `retry_seconds=None` a call is sent
again for as long as it takes (the scheduler role: a transport failure is no reason to
refuse a User's work), and `gave_up` is set once a worker has been unreachable for
`give_up_seconds`, for a caller that must stop some time (`--exit-when-done`).

Every call carries the token the DCO shares with the scheduler (`Authorization:
Bearer`; a call channel carries it when it opens); a 401 names the setting to check.

Errors: `orchestrator.errors.DcoHttpError`, the DCO answered with an error or could not
be reached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from orchestrator.dco_channel import DcoChannel
from orchestrator.errors import DcoHttpError
from smets1.bus import shard_of
from smets1.codes import DeviceState, Reason
from smets1.dco_http import (
    ACTIVATION_ORDER,
    ACTIVATION_OUTCOME,
    ACTIVATIONS_PATH,
    CALL,
    ERROR,
    IMAGES_PATH,
    RETRY_AFTER_SECONDS,
    STORED_IMAGE,
    TOKEN_ENV,
    UNAUTHORIZED_MESSAGE,
    VERSION_PATH,
    VERSION_READING,
    ActivateCall,
    ActivationOrder,
    Answer,
    Document,
    ErrorDoc,
    ReadVersionCall,
    bearer,
    check_token,
    in_flight_limit,
)
from smets1.eui64 import format_eui64
from smets1.services import ActivationOutcome, StoredImage, VersionReading
from smets1.wire import IMMEDIATE

T = TypeVar("T")

RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0

#: How often a device seen rebooting into its image is read again, wall seconds.
ACTIVATING_POLL_SECONDS = 0.5
#: How long a device is watched rebooting when calls retry for ever, wall seconds.
ACTIVATING_WAIT_SECONDS = 300.0
#: The longest Retry-After honoured as given, seconds (a longer one is cut to this).
RETRY_AFTER_MAX_SECONDS = 30.0
#: How often an unreachable worker is logged again while it stays away, wall seconds.
DOWN_REPORT_SECONDS = 30.0
#: How often a busy worker (503) is logged, wall seconds.
BUSY_REPORT_SECONDS = 30.0

log = logging.getLogger("orchestrator.dco_client")

#: The DCO could not be reached, or the connection broke before its answer was read
#: (refused, reset, closed by a worker that stopped, or a truncated body), or the call
#: channel closed before it (orchestrator.dco_channel.ChannelDropped).
_CONNECTION_FAILED = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
#: What a 401 adds: where the token the client sent comes from.
_TOKEN_HINT = f"the scheduler's dco.token or {TOKEN_ENV} must be the DCO's"


class _Busy(Exception):
    """The worker answered 503: send again after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"busy, retry after {retry_after:g} s")
        self.retry_after = retry_after


class _NoChannel(Exception):
    """The worker does not serve the call channel: its calls go as HTTP requests."""


def _retry_after(value: str | float | None) -> float:
    """Retry-After in seconds (the HTTP-date form is not used by the DCO: the default)."""
    try:
        seconds = float(value) if value is not None else float(RETRY_AFTER_SECONDS)
    except ValueError:
        seconds = float(RETRY_AFTER_SECONDS)
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_SECONDS)


@dataclass(slots=True)
class _Worker:
    """What the client knows of one DCO worker."""

    base: str
    slots: asyncio.Semaphore
    #: Wall time (loop.time) it was first found unreachable; None while it answers.
    down_since: float | None = None
    error: str = ""
    next_down_report: float = 0.0
    busy_answers: int = 0
    next_busy_report: float = 0.0
    #: Calls waiting to be sent again after a failed connection.
    waiting: int = 0
    #: Wall time (loop.time) until which the worker has no room for a new 11.3: it
    #: turned one away (503) with this Retry-After.
    no_room_until: float = 0.0
    #: Its call channel, while one is open.
    channel: DcoChannel | None = None
    #: The channel being opened, which every call that needs it waits for.
    opening: asyncio.Task[DcoChannel] | None = None
    #: It answered the channel's upgrade 404 or 405: 11.3s and 11.2s go over HTTP.
    no_channel: bool = False


class DcoClient:
    """Implements smets1.services.DcoApi against one or more DCO workers."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        token: str,
        retry_seconds: float | None = 60.0,
        max_in_flight: int = 1_000,
        give_up_seconds: float | None = None,
        channel: bool = True,
    ) -> None:
        if not base_urls:
            raise ValueError("at least one DCO URL is needed")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self._headers = bearer(check_token(token, TOKEN_ENV))
        self.retry_seconds = retry_seconds
        self.give_up_seconds = give_up_seconds
        #: 11.3s and 11.2s go on each worker's call channel (else as HTTP requests).
        self.channel = channel
        #: Calls to one worker at once (and connections to it), within the process's
        #: file descriptors (smets1.dco_http.in_flight_limit).
        self.max_in_flight = in_flight_limit(max_in_flight, share=len(self.base_urls))
        self._workers = {
            b: _Worker(b, asyncio.Semaphore(self.max_in_flight)) for b in self.base_urls
        }
        #: Calls sent again after a failed connection.
        self.retries = 0
        #: Calls sent again after a 503 (the worker was full).
        self.busy_retries = 0
        #: Set once a worker has been unreachable for `give_up_seconds`; `gave_up_reason`
        #: says which and why, in one line.
        self.gave_up = asyncio.Event()
        self.gave_up_reason = ""
        #: firmware hash → file version, from the DCO's answers to 11.1.
        self._versions: dict[bytes, int] = {}
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # An 11.3 stays open for its whole transfer: no total timeout. The pool
                # holds as many connections as calls may be in flight, and the call
                # channel's beside them (it holds its connection while it is open).
                connector=aiohttp.TCPConnector(
                    limit=(self.max_in_flight + 1) * len(self.base_urls),
                    limit_per_host=self.max_in_flight + 1,
                ),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                headers=self._headers,
            )
        return self._session

    def room_for_release(self) -> bool:
        """False while a worker that turned an 11.3 away (503) has not yet reached the
        Retry-After it gave: the scheduler holds its releases meanwhile
        (scheduler.release.ReleaseRoom)."""
        now = asyncio.get_running_loop().time()
        return all(w.no_room_until <= now for w in self._workers.values())

    async def wait_for_release_room(self) -> None:
        """Until `room_for_release()`: the longest Retry-After still running."""
        loop = asyncio.get_running_loop()
        while True:
            wait = max(w.no_room_until for w in self._workers.values()) - loop.time()
            if wait <= 0:
                return
            await asyncio.sleep(wait)  # wall time, as the DCO asked

    def problem(self) -> str | None:
        """Why the DCO cannot be used now, in one line (None: every worker answers)."""
        now = asyncio.get_running_loop().time()
        for w in self._workers.values():
            if w.down_since is not None:
                return f"DCO {w.base} unreachable for {now - w.down_since:.0f} s: {w.error}"
        return None

    def _answered(self, w: _Worker) -> None:
        if w.down_since is not None:
            now = asyncio.get_running_loop().time()
            log.warning("DCO %s reachable again after %.0f s", w.base, now - w.down_since)
            w.down_since = None

    def _unreachable(self, w: _Worker, exc: Exception, now: float) -> None:
        w.error = str(exc) or repr(exc)
        if w.down_since is None:
            w.down_since = now
            w.next_down_report = now + DOWN_REPORT_SECONDS
            log.error("DCO %s unreachable: %s; its calls wait and are sent again", w.base, w.error)
        elif now >= w.next_down_report:
            w.next_down_report = now + DOWN_REPORT_SECONDS
            log.error(
                "DCO %s still unreachable after %.0f s: %s; %d call(s) waiting",
                w.base,
                now - w.down_since,
                w.error,
                w.waiting,
            )
        if (
            self.give_up_seconds is not None
            and now - w.down_since >= self.give_up_seconds
            and not self.gave_up.is_set()
        ):
            self.gave_up_reason = (
                f"DCO {w.base} unreachable for {now - w.down_since:.0f} s, given up: {w.error}"
            )
            log.error("%s", self.gave_up_reason)
            self.gave_up.set()

    def _busy(self, w: _Worker, retry_after: float, now: float) -> None:
        self.busy_retries += 1
        w.busy_answers += 1
        if now >= w.next_busy_report:
            w.next_busy_report = now + BUSY_REPORT_SECONDS
            log.warning(
                "DCO %s busy (503, %d answer(s) so far): calls go again after %g s",
                w.base,
                w.busy_answers,
                retry_after,
            )

    async def close(self) -> None:
        for w in self._workers.values():
            if w.opening is not None:
                w.opening.cancel()
                await asyncio.gather(w.opening, return_exceptions=True)
            if w.channel is not None:
                await w.channel.close()
                w.channel = None
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
        w = self._workers[base]
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
                async with w.slots:
                    answer = await send(self._http())
                self._answered(w)
                return answer
            except _Busy as busy:
                self._answered(w)
                self._busy(w, busy.retry_after, loop.time())
                deadline, delay = None, RETRY_FIRST_SECONDS
                await asyncio.sleep(busy.retry_after)  # wall time, as the DCO asked
                continue
            except DcoHttpError:
                self._answered(w)  # an answer, even an error, is from a live worker
                raise
            except _CONNECTION_FAILED as exc:
                now = loop.time()
                if deadline is None and self.retry_seconds is not None:
                    deadline = now + self.retry_seconds
                if deadline is not None and now + delay > deadline:
                    raise DcoHttpError(base, None, "unreachable", str(exc) or repr(exc)) from exc
                self.retries += 1
                if isinstance(exc, aiohttp.ClientConnectorError):
                    self._unreachable(w, exc, now)
                    log.debug("DCO %s unreachable (%s); again in %.1f s", base, exc, delay)
                else:
                    dropped = True
                    log.warning(
                        "DCO %s dropped a request (%r); sending it again in %.1f s",
                        base,
                        exc,
                        delay,
                    )
            w.waiting += 1
            try:
                await asyncio.sleep(delay)  # wall time: the DCO's restart, not simulated time
            finally:
                w.waiting -= 1
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    @staticmethod
    async def _answer(base: str, resp: aiohttp.ClientResponse, doc: Document[T]) -> T:
        """The DCO's answer as `doc`; its error document, or a body that is neither, as
        DcoHttpError."""
        body = await resp.read()
        if resp.status == 503:
            raise _Busy(_retry_after(resp.headers.get("Retry-After")))
        if resp.status != 200:
            try:
                error = ERROR.from_json(body)
            except ValueError:
                error = ErrorDoc("bad_response", body[:200].decode(errors="replace"))
            if resp.status == 401:
                error = ErrorDoc(error.error, f"{error.message} ({_TOKEN_HINT})")
            raise DcoHttpError(base, resp.status, error.error, error.message)
        try:
            return doc.from_json(body)
        except ValueError as exc:
            raise DcoHttpError(base, resp.status, "bad_response", str(exc)) from None

    # -- the call channel --------------------------------------------------------------

    def _on_channel(self, w: _Worker) -> bool:
        return self.channel and not w.no_channel

    async def _channel(self, w: _Worker) -> DcoChannel:
        """The worker's open channel; opened by the first call that finds none, and
        waited for by the others (each gets the same error if it cannot be opened)."""
        channel = w.channel
        if channel is not None and not channel.closed:
            return channel
        if w.opening is None:
            w.opening = asyncio.create_task(self._open_channel(w))
            # Retrieved here too: if every caller waiting for it was cancelled, its
            # error is still not left unread.
            w.opening.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(w.opening)

    async def _open_channel(self, w: _Worker) -> DcoChannel:
        try:
            channel = await DcoChannel.open(self._http(), w.base)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                message = f"{UNAUTHORIZED_MESSAGE} ({_TOKEN_HINT})"
                raise DcoHttpError(w.base, 401, "unauthorized", message) from None
            if exc.status == 503:
                after = exc.headers.get("Retry-After") if exc.headers is not None else None
                raise _Busy(_retry_after(after)) from None
            if exc.status in (404, 405):
                w.no_channel = True
                log.warning(
                    "DCO %s has no call channel (HTTP %d): 11.3s and 11.2s go as HTTP requests",
                    w.base,
                    exc.status,
                )
                raise _NoChannel() from None
            message = f"the call channel was refused: {exc.message}"
            raise DcoHttpError(w.base, exc.status, "bad_response", message) from None
        finally:
            w.opening = None
        w.channel = channel
        return channel

    async def _over_channel(
        self, w: _Worker, message: Callable[[int], bytes], doc: Document[T]
    ) -> T:
        """The call `message(id)` makes, sent on the worker's channel; its answer as
        `doc`, with the same exceptions as an HTTP answer (`_answer`)."""
        channel = await self._channel(w)
        answer = await channel.call(message)
        return self._settle(w.base, answer, doc)

    @staticmethod
    def _settle(base: str, answer: Answer[object], doc: Document[T]) -> T:
        if answer.status == 200:
            try:
                return doc.from_python(answer.body)
            except ValueError as exc:
                raise DcoHttpError(base, 200, "bad_response", str(exc)) from None
        if answer.status == 503:
            raise _Busy(_retry_after(answer.retry_after))
        try:
            error = ERROR.from_python(answer.body)
        except ValueError as exc:
            error = ErrorDoc("bad_response", f"an error answer without its document: {exc}")
        raise DcoHttpError(base, answer.status, error.error, error.message)

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
        w = self._workers[base]
        order = ActivationOrder(device_id, firmware_hash, execution_time, originator)

        def message(call_id: int) -> bytes:
            return CALL.to_json(ActivateCall(call_id, order))

        async def send(http: aiohttp.ClientSession) -> ActivationOutcome:
            try:
                if self._on_channel(w):
                    try:
                        return await self._over_channel(w, message, ACTIVATION_OUTCOME)
                    except _NoChannel:
                        pass
                async with http.post(
                    base + ACTIVATIONS_PATH,
                    data=ACTIVATION_ORDER.to_json(order),
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    return await self._answer(base, resp, ACTIVATION_OUTCOME)
            except _Busy as busy:
                until = asyncio.get_running_loop().time() + busy.retry_after
                w.no_room_until = max(w.no_room_until, until)
                raise

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
        wait = ACTIVATING_WAIT_SECONDS if self.retry_seconds is None else self.retry_seconds
        deadline = loop.time() + wait
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
        w = self._workers[base]

        def message(call_id: int) -> bytes:
            return CALL.to_json(ReadVersionCall(call_id, device_id))

        async def send(http: aiohttp.ClientSession) -> VersionReading:
            if self._on_channel(w):
                try:
                    return await self._over_channel(w, message, VERSION_READING)
                except _NoChannel:
                    pass
            path = VERSION_PATH.format(device_id=format_eui64(device_id))
            async with http.get(base + path) as resp:
                return await self._answer(base, resp, VERSION_READING)

        return await self._call(base, send)
