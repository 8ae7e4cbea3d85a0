"""What every role process needs around its role: HTTP serving, signals, status files."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from orchestrator.listener import BoundedSite
from orchestrator.mosquitto import peak_rss_bytes as proc_peak_rss_bytes
from smets1.dco_http import RESERVED_FDS
from smets1.metrics import CONTENT_TYPE, exposition
from smets1.mqtt import MqttBus
from smets1.routing import DcoWorkerBus, ShardBus

log = logging.getLogger("orchestrator.serving")

#: (healthy, the status document as JSON) for /health: 200 when healthy, else 503.
HealthFn = Callable[[], tuple[bool, Mapping[str, Any]]]

#: Connections the kernel holds for a server before it accepts them: a burst waits
#: there, costing no file descriptor, instead of being dropped and retried by the peer
#: (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 4096


def connection_limit() -> int:
    """Connections a server of this process may hold open: its file descriptor limit
    less what the rest of the process needs (smets1.dco_http.RESERVED_FDS)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65_536
    return max(1, soft - RESERVED_FDS)


def client_id(fleet: str, role: str) -> str:
    """Unique per process and stable across its reconnects (the broker keys sessions on it)."""
    return f"smets1-{fleet}-{role}-{secrets.token_hex(4)}"


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return round(r.ru_utime + r.ru_stime, 3)


def peak_rss_bytes() -> int:
    """The most resident memory this process has held since it started: VmHWM where
    /proc has it. Not ru_maxrss there: Linux keeps that across exec, so a role started
    by a large process (the launcher, a test runner) would report that process's peak
    (its fork, up to the exec, has the parent's memory)."""
    own = proc_peak_rss_bytes("self")
    if own is not None:
        return own
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


async def start_unless_stopped(bus: MqttBus | DcoWorkerBus | ShardBus, stop: asyncio.Event) -> bool:
    """Connect, waiting for the broker as long as it takes; False if told to stop first."""
    starting = asyncio.create_task(bus.start())
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for t in (starting, stopping):
        t.cancel()
    await asyncio.gather(starting, stopping, return_exceptions=True)
    if starting in done:
        starting.result()
        return True
    return False


#: Set by `smets1 distributed` for the roles it starts: the launcher's process id.
PARENT_PID_ENV = "SMETS1_PARENT_PID"
PARENT_CHECK_SECONDS = 1.0
#: How long a stopping role's HTTP server waits for requests in flight, wall seconds.
HTTP_SHUTDOWN_SECONDS = 2.0


class GcWatch:
    """How long the garbage collector stops this process: every pause of a role is
    lateness for the frames and timers it holds up (a run that shows lateness spikes
    may find them here: `smets1.serving` logs the worst at the end, and each pause over
    GC_PAUSE_WARN_SECONDS as it happens)."""

    def __init__(self) -> None:
        self.collections = 0
        self.seconds = 0.0
        self.worst_seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.collections += 1
        self.seconds += took
        if took > self.worst_seconds:
            self.worst_seconds = took
        if took > GC_PAUSE_WARN_SECONDS:
            log.warning(
                "garbage collection (generation %d) stopped the process for %.0f ms",
                info.get("generation", -1),
                took * 1000,
            )


GC_PAUSE_WARN_SECONDS = 0.05
GC_WATCH = GcWatch()
#: Allocations between young collections (CPython's default is 700): fewer, so fewer of
#: the older collections that follow them, which are the long pauses.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once a role has built what it keeps for the run (devices, images, sessions'
    bookkeeping): move every object alive now out of the collector's sight
    (`gc.freeze`), so no later collection walks them again: a pause of a role on a
    shared clock is lateness for everything it holds up."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GC_YOUNG_THRESHOLD), gen1, gen2)


def install_stop(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop`: the role finishes cleanly and writes its status.
    A role started by `smets1 distributed` (PARENT_PID_ENV set) stops the same way when
    its launcher is gone, however it went (even `kill -9`): no role outlives its run."""
    if GC_WATCH not in gc.callbacks:
        gc.callbacks.append(GC_WATCH)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    parent = os.environ.get(PARENT_PID_ENV, "")
    if parent.isdigit():
        task = loop.create_task(_stop_when_orphaned(int(parent), stop))
        _WATCHERS.add(task)
        task.add_done_callback(_WATCHERS.discard)


_WATCHERS: set[asyncio.Task[None]] = set()


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("the launcher (pid %d) is gone: stopping", parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PARENT_CHECK_SECONDS)


@contextlib.asynccontextmanager
async def serve_http(app: web.Application, host: str, port: int | None) -> AsyncIterator[None]:
    """Serve `app` on host:port for the duration of the block; no port, no server."""
    if port is None:
        yield
        return
    # A held request (a DCO's 11.3 lasts as long as its transfer) gets this long to end
    # once the role stops, then is cancelled: aiohttp's default would wait 60 s.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_SECONDS)
    await runner.setup()
    site = BoundedSite(
        runner, host, port, max_connections=connection_limit(), backlog=LISTEN_BACKLOG
    )
    await site.start()
    log.info("HTTP on %s:%d", host, port)
    try:
        yield
    finally:
        await runner.cleanup()


def health_app(health: HealthFn, registry: CollectorRegistry) -> web.Application:
    """/health and /metrics, for a role with no HTTP API of its own (a fleet shard)."""

    async def get_health(_: web.Request) -> web.Response:
        ok, status = health()
        return web.json_response({"ok": ok, **status}, status=200 if ok else 503)

    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(body=exposition(registry), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", get_metrics)
    return app


def write_atomically(path: Path, text: str) -> None:
    """Write `text` beside `path`, then rename: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_status(path: Path | None, doc: BaseModel) -> None:
    """Write a status document (orchestrator.status), if the role was given a path."""
    if GC_WATCH.collections:
        log.info(
            "garbage collection: %d collections, %.2f s in all, the longest %.0f ms",
            GC_WATCH.collections,
            GC_WATCH.seconds,
            GC_WATCH.worst_seconds * 1000,
        )
    if path is not None:
        write_atomically(path, doc.model_dump_json(indent=2) + "\n")
