"""An aiohttp site that never accepts more connections than the process can hold.

asyncio's own accept loop takes every connection the kernel has queued, and when the
process runs out of file descriptors (EMFILE) it reports each failed attempt through the
loop's exception handler, a traceback each, and on CPython 3.11 goes on trying the rest
of its backlog in the same turn: a burst of 2,000 clients against `ulimit -n 1024` logged
over 100,000 tracebacks and starved the loop. `BoundedSite` accepts by itself instead:
while `max_connections` are open it stops reading the listening socket, so a burst waits
in the kernel's listen queue (no descriptor, no log) until a connection closes. An accept
that fails all the same (descriptors taken by something else) pauses it for
ACCEPT_PAUSE_SECONDS and is logged once per ACCEPT_ERROR_REPORT_SECONDS with a count.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web
from yarl import URL

log = logging.getLogger("orchestrator.listener")

#: How long accepting stops after it failed for want of a resource, wall seconds.
ACCEPT_PAUSE_SECONDS = 0.5
#: How often failed accepts are logged, wall seconds.
ACCEPT_ERROR_REPORT_SECONDS = 10.0
_OUT_OF = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class _Counted(asyncio.Protocol):
    """The server's protocol for one connection, telling the site when it closes."""

    def __init__(self, inner: asyncio.Protocol, closed: Callable[[], None]) -> None:
        self.inner = inner
        self.closed = closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            self.closed()


class BoundedSite(web.BaseSite):
    """A TCP site on host:port holding at most `max_connections` connections at once."""

    __slots__ = (
        "_failed",
        "_host",
        "_loop",
        "_max",
        "_next_report",
        "_open",
        "_port",
        "_reading",
        "_sock",
        "_tasks",
        "_unreported",
    )

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int, backlog: int
    ) -> None:
        super().__init__(runner, backlog=backlog)
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self._host = host
        self._port = port
        self._max = max_connections
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open = 0
        self._reading = False
        self._failed = 0
        self._unreported = 0
        self._next_report = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def failed_accepts(self) -> int:
        """Accepts that failed for want of a resource (EMFILE and the like)."""
        return self._failed

    async def start(self) -> None:
        await super().start()
        self._loop = asyncio.get_running_loop()
        sock = socket.create_server((self._host, self._port), backlog=self._backlog)
        sock.setblocking(False)
        self._sock = sock
        self._read(True)

    async def stop(self) -> None:
        self._read(False)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().stop()

    def _read(self, on: bool) -> None:
        if self._loop is None or self._sock is None or on == self._reading:
            return
        if on:
            self._loop.add_reader(self._sock.fileno(), self._accept)
        else:
            self._loop.remove_reader(self._sock.fileno())
        self._reading = on

    def _accept(self) -> None:
        assert self._sock is not None and self._loop is not None
        while self._open < self._max:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _OUT_OF:
                    raise
                self._out_of(exc)
                return
            conn.setblocking(False)
            self._open += 1
            task = self._loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._read(False)  # full: the rest wait in the kernel's queue

    def _out_of(self, exc: OSError) -> None:
        assert self._loop is not None
        self._failed += 1
        self._unreported += 1
        now = self._loop.time()
        if now >= self._next_report:
            self._next_report = now + ACCEPT_ERROR_REPORT_SECONDS
            log.error(
                "%s: cannot accept connections: %s (%d time(s) since the last report, "
                "%d open); new ones wait in the listen queue",
                self.name,
                exc.strerror or exc,
                self._unreported,
                self._open,
            )
            self._unreported = 0
        self._read(False)
        self._loop.call_later(ACCEPT_PAUSE_SECONDS, self._read, True)

    async def _serve(self, conn: socket.socket) -> None:
        assert self._loop is not None
        server = self._runner.server
        assert server is not None
        counted = [True]  # this connection is in `_open` until closed, once

        def closed() -> None:
            if counted:
                counted.clear()
                self._open -= 1
                if self._open < self._max and self._sock is not None:
                    self._read(True)

        try:
            await self._loop.connect_accepted_socket(lambda: _Counted(server(), closed), conn)
        except asyncio.CancelledError:
            conn.close()
            closed()
            raise
        except OSError as exc:  # the peer went before the transport was made
            log.debug("%s: a connection failed as it was accepted: %r", self.name, exc)
            conn.close()
            closed()
