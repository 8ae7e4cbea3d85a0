"""A scheduler served over real HTTP on a free port of 127.0.0.1, from an event loop in a
thread of its own: for blocking clients (schemathesis, Hypothesis tests that post with
`requests`) that cannot share the test's loop.

    with Served() as served:
        requests.post(served.url + "/duis", data=doc, headers=served.auth)
        served.call(lambda s: len(s.requests))    # read the scheduler on its own loop
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from aiohttp import web

from scheduler.api import make_app
from scheduler.service import Scheduler
from smets1.clock import DEFAULT_EPOCH_SECONDS, ScaledClock
from tests.scheduler.fakes import LARGE_IMAGE, FakeDco, config, make_scheduler

T = TypeVar("T")
#: The longest the test thread waits for the server's loop to do one thing, in seconds.
CALL_SECONDS = 30.0


class Served:
    auth = {"Authorization": "Bearer token-a"}

    def __init__(
        self,
        n_devices: int = 5,
        *,
        speed: float = 1.0,
        run_releases: bool = False,
        fail_devices: frozenset[int] = frozenset(),
        **config_kw: Any,
    ) -> None:
        """`speed`: the clock's; `run_releases`: the release loop runs (11.3s go to a
        FakeDco, which fails `fail_devices`), as in the scheduler role."""
        self._n_devices = n_devices
        self._speed = speed
        self._run_releases = run_releases
        self._fail_devices = fail_devices
        self._releaser: asyncio.Task[None] | None = None
        self._config_kw = {"max_document_bytes": 4 * 1024 * 1024, **config_kw}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""
        self.firmware_hash = ""
        self._scheduler: Scheduler | None = None
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> Served:
        self._thread.start()
        try:
            self._submit(self._start()).result(CALL_SECONDS)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        try:
            if self._scheduler is not None:
                self._submit(self._stop()).result(CALL_SECONDS)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_SECONDS)
            self._loop.close()

    def call(self, fn: Callable[[Scheduler], T]) -> T:
        """`fn(scheduler)` on the server's loop (between requests, never during one)."""

        async def run() -> T:
            assert self._scheduler is not None
            return fn(self._scheduler)

        return self._submit(run()).result(CALL_SECONDS)

    def wait_idle(self) -> None:
        """Until every request submitted so far has its answer (the release loop runs)."""
        assert self._scheduler is not None and self._run_releases
        self._submit(self._scheduler.wait_idle()).result(CALL_SECONDS)

    def stored_rows(self) -> dict[str, int]:
        """Rows of every table of the scheduler's store."""

        def count(s: Scheduler) -> dict[str, int]:
            s.store.flush()
            tables = ("requests", "schedules", "refusals", "images", "notifications")
            return {
                t: s.store.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in (*tables, "duis_requests")
            }

        return self.call(count)

    def _submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _start(self) -> None:
        clock = ScaledClock(DEFAULT_EPOCH_SECONDS, speed=self._speed)
        dco = FakeDco(clock, fail_devices=set(self._fail_devices))
        s, _ = make_scheduler(clock, config(**self._config_kw), n_devices=self._n_devices, dco=dco)
        self._scheduler = s
        if self._run_releases:
            self._releaser = asyncio.create_task(s.run(deliver_callbacks=False))
        # One stored image, so that generated 11.3s can name a hash the scheduler knows.
        stored = await s.store_image(next(iter(s.users)), LARGE_IMAGE)
        self.firmware_hash = stored.firmware_hash.hex()
        self._runner = web.AppRunner(make_app(s))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._releaser is not None:
            self._releaser.cancel()
            await asyncio.gather(self._releaser, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        assert self._scheduler is not None
        await self._scheduler.close()
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in left:
            t.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        if left:
            raise AssertionError(f"the served scheduler left {len(left)} task(s): {left[:3]}")
