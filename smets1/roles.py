"""The three long-running roles of a distributed run: DCO worker, fleet shard, scheduler.

Like `smets1.runner`, this sits at the top and wires components together; the
components never import it. Every role runs on a `ScaledClock` that all processes share
(epoch, speed, wall0), watches how far it lags behind that clock, and says so in its log
and its health document when it cannot keep up, rather than silently stretching time.

    fleet shard ──MQTT── broker ──MQTT── DCO worker(s) ──HTTP── scheduler
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import secrets
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from dco_mock.http_api import make_app as make_dco_app
from dco_mock.service import Dco
from emulator.fleet import FleetHost, build_devices
from smets1.broker_url import BrokerUrl
from smets1.clock import ScaledClock, to_datetime, wall_seconds
from smets1.config import FleetConfig
from smets1.dco_client import DcoClient
from smets1.mqtt import MqttBus
from smets1.routing import DcoWorkerBus, ShardBus

log = logging.getLogger("smets1.roles")

#: A process is lagging when it is this far behind its clock in simulated time (late
#: enough to matter to links and timeouts) and in wall time (beyond a loop's hiccup).
LAG_WARN_SIMULATED_SECONDS = 300.0
LAG_WARN_WALL_SECONDS = 0.05
LAG_CHECK_WALL_SECONDS = 1.0
#: How often the scheduler logs its progress, wall seconds.
PROGRESS_WALL_SECONDS = 5.0


def client_id(fleet: str, role: str) -> str:
    """Unique per process and stable across its reconnects (the broker keys sessions on it)."""
    return f"smets1-{fleet}-{role}-{secrets.token_hex(4)}"


class LagMonitor:
    """Runs `ScaledClock.watch_lag` and reports when the process falls behind.

    Behind means either of two things, both in simulated seconds: the event loop wakes
    late (the CPU cannot keep up), or frames wait in the MQTT bus before the broker takes
    them (the transport cannot keep up), which delays every device as much.
    """

    def __init__(self, clock: ScaledClock, role: str, bus: MqttBus | None = None) -> None:
        self.clock = clock
        self.role = role
        self.bus = bus
        self.lagging = False
        self.worst_lag_seconds = 0.0
        self.lag_episodes = 0
        self.transport_delay_seconds = 0.0

    @property
    def lag_seconds(self) -> float:
        return max(self.clock.lag_seconds, self.transport_delay_seconds)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.clock.watch_lag(LAG_CHECK_WALL_SECONDS / 2))
            tg.create_task(self._report())

    async def _report(self) -> None:
        speed = self.clock.speed
        while True:
            await asyncio.sleep(LAG_CHECK_WALL_SECONDS)
            if self.bus is not None:
                self.transport_delay_seconds = self.bus.take_worst_delay() * speed
            lag = self.lag_seconds
            self.worst_lag_seconds = max(self.worst_lag_seconds, lag)
            behind = lag > LAG_WARN_SIMULATED_SECONDS and lag / speed > LAG_WARN_WALL_SECONDS
            if behind and not self.lagging:
                self.lag_episodes += 1
                log.warning(
                    "%s cannot keep up: %.0f simulated s (%.2f s wall) behind its clock at "
                    "speed %g (event loop %.0f s late, MQTT publish delay %.0f s, backlog %d); "
                    "simulated time is not being stretched, so results will show it",
                    self.role,
                    lag,
                    lag / speed,
                    speed,
                    self.clock.lag_seconds,
                    self.transport_delay_seconds,
                    self.bus.backlog if self.bus is not None else 0,
                )
            elif self.lagging and not behind:
                log.info("%s caught up with its clock (lag %.1f simulated s)", self.role, lag)
            self.lagging = behind

    def health(self) -> dict[str, Any]:
        return {
            "lag_seconds": round(self.lag_seconds, 3),
            "loop_lag_seconds": round(self.clock.lag_seconds, 3),
            "transport_delay_seconds": round(self.transport_delay_seconds, 3),
            "lagging": self.lagging,
            "worst_lag_seconds": round(self.worst_lag_seconds, 3),
            "lag_episodes": self.lag_episodes,
            "speed": self.clock.speed,
            "simulated_time": to_datetime(self.clock.now()).isoformat(),
        }


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return round(r.ru_utime + r.ru_stime, 3)


def metrics_text(role: str, values: dict[str, float]) -> str:
    """Prometheus text exposition: `smets1_` prefix, `_total` for counters, a role label."""
    lines = []
    for name, value in sorted(values.items()):
        kind = "counter" if name.endswith("_total") else "gauge"
        lines.append(f"# TYPE smets1_{name} {kind}")
        lines.append(f'smets1_{name}{{role="{role}"}} {value}')
    return "\n".join(lines) + "\n"


def bus_values(bus: MqttBus) -> dict[str, float]:
    c = bus.counters
    return {
        "bus_messages_published_total": c.messages_published,
        "bus_bytes_published_total": c.bytes_published,
        "bus_messages_received_total": c.messages_received,
        "bus_bytes_received_total": c.bytes_received,
        "bus_duplicates_dropped_total": c.duplicates_dropped,
        "bus_republished_total": c.republished,
        "bus_connects_total": c.connects,
        "bus_backlog_messages": bus.backlog,
        "bus_connected": 1.0 if bus.connected else 0.0,
    }


def bus_status(bus: MqttBus) -> dict[str, Any]:
    return {"connected": bus.connected, "backlog": bus.backlog, **asdict(bus.counters)}


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


def install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


@contextlib.asynccontextmanager
async def serve_http(app: web.Application, host: str, port: int | None) -> Any:
    """Serve `app` on host:port for the duration of the block; no port, no server."""
    if port is None:
        yield
        return
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("HTTP on %s:%d", host, port)
    try:
        yield
    finally:
        await runner.cleanup()


def _health_app(
    health: Callable[[], tuple[bool, dict[str, Any]]], metrics: Callable[[], str]
) -> web.Application:
    async def get_health(_: web.Request) -> web.Response:
        ok, details = health()
        return web.json_response({"ok": ok, **details}, status=200 if ok else 503)

    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(text=metrics(), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", get_metrics)
    return app


def jsonable(value: Any) -> Any:
    """Counters and the like as JSON: mapping keys become text (tuples joined by '/')."""
    if isinstance(value, dict):
        return {
            "/".join(map(str, k)) if isinstance(k, tuple) else str(k): jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path | None, doc: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(jsonable(doc), indent=2, default=str) + "\n")
    tmp.replace(path)


@dataclass(slots=True)
class RoleOptions:
    """What every role is given: the config, its clock, and where to report."""

    config: FleetConfig
    clock: ScaledClock
    listen_host: str = "0.0.0.0"
    http_port: int | None = None
    #: A JSON status document written when the role stops (and the summary, for the scheduler).
    status_file: Path | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)


# -- the DCO worker ----------------------------------------------------------------------


async def run_dco(
    opts: RoleOptions, broker: BrokerUrl, shards: int, worker: str, state_dir: Path
) -> dict[str, Any]:
    cfg = opts.config
    role = f"dco {worker}"
    install_stop(opts.stop)
    mqtt = MqttBus(broker, client_id(cfg.name, f"dco-{worker}"), connect_timeout_seconds=None)
    bus = DcoWorkerBus(mqtt, cfg.name, worker)
    dco = Dco(
        opts.clock,
        bus,
        cfg.name,
        shards,
        cfg.dco,
        state_dir=state_dir,
        block_size=cfg.block_size_bytes,
    )
    lag = LagMonitor(opts.clock, role, mqtt)

    def status() -> dict[str, Any]:
        return {
            "role": "dco",
            "worker": worker,
            "shards": shards,
            "cpu_seconds": cpu_seconds(),
            "clock": lag.health(),
            "bus": bus_status(mqtt),
            "dco": jsonable(asdict(dco.counters)),
        }

    def health() -> tuple[bool, dict[str, Any]]:
        return mqtt.connected, status()

    def metrics() -> str:
        c = dco.counters
        return metrics_text(
            "dco",
            {
                **bus_values(mqtt),
                "clock_lag_seconds": lag.lag_seconds,
                "dco_transfers_started_total": c.transfers_started,
                "dco_transfers_ok_total": c.transfers_ok,
                "dco_transfers_failed_total": sum(c.transfers_failed.values()),
                "dco_transfers_in_flight": c.in_flight,
                "dco_blocks_sent_total": c.blocks_sent,
                "dco_bytes_sent_total": c.bytes_sent,
            },
        )

    dco.start()
    log.info("%s: connecting to %s", role, broker)
    async with asyncio.TaskGroup() as tg:
        lag_task = tg.create_task(lag.run())
        if await start_unless_stopped(bus, opts.stop):
            async with serve_http(
                make_dco_app(dco, health, metrics), opts.listen_host, opts.http_port
            ):
                log.info("%s ready: fleet %s, %d shard(s)", role, cfg.name, shards)
                await opts.stop.wait()
        lag_task.cancel()
    doc = status()
    await dco.close()
    await bus.close()
    write_json(opts.status_file, doc)
    return doc


# -- the fleet shard ---------------------------------------------------------------------


async def run_fleet(
    opts: RoleOptions, broker: BrokerUrl, shard: int, shards: int
) -> dict[str, Any]:
    cfg = opts.config
    role = f"fleet shard {shard}/{shards}"
    install_stop(opts.stop)
    devices = build_devices(cfg, shard, shards)
    mqtt = MqttBus(broker, client_id(cfg.name, f"fleet-{shard}"), connect_timeout_seconds=None)
    bus = ShardBus(mqtt, cfg.name, shard)
    host = FleetHost(opts.clock, bus, cfg.name, devices, shard=shard)
    lag = LagMonitor(opts.clock, role, mqtt)

    def status() -> dict[str, Any]:
        c = host.counters
        return {
            "role": "fleet",
            "shard": shard,
            "shards": shards,
            "cpu_seconds": cpu_seconds(),
            "devices": len(devices),
            "clock": lag.health(),
            "bus": bus_status(mqtt),
            "fleet": {
                "frames_received": c.frames_received,
                "frames_sent": c.frames_sent,
                "bad_frames": c.bad_frames,
                "unknown_device_frames": c.unknown_device_frames,
                "blocks_received": c.blocks_received,
                "block_bytes_received": c.block_bytes_received,
            },
            "device_states": dict(sorted(host.state_counts().items())),
        }

    def health() -> tuple[bool, dict[str, Any]]:
        return mqtt.connected, status()

    def metrics() -> str:
        c = host.counters
        return metrics_text(
            "fleet",
            {
                **bus_values(mqtt),
                "clock_lag_seconds": lag.lag_seconds,
                "fleet_devices": len(devices),
                "fleet_frames_received_total": c.frames_received,
                "fleet_frames_sent_total": c.frames_sent,
                "fleet_blocks_received_total": c.blocks_received,
                "fleet_block_bytes_received_total": c.block_bytes_received,
            },
        )

    host.start()
    log.info("%s: %d devices, connecting to %s", role, len(devices), broker)
    async with asyncio.TaskGroup() as tg:
        lag_task = tg.create_task(lag.run())
        if await start_unless_stopped(bus, opts.stop):
            async with serve_http(_health_app(health, metrics), opts.listen_host, opts.http_port):
                log.info("%s ready", role)
                await opts.stop.wait()
        lag_task.cancel()
    doc = status()
    await bus.close()
    write_json(opts.status_file, doc)
    return doc


# -- the scheduler -----------------------------------------------------------------------


async def run_scheduler(
    opts: RoleOptions, dco_urls: list[str], state_dir: Path, exit_when_done: bool
) -> dict[str, Any]:
    """The config's campaigns through the DCO over HTTP; the summary when all are answered.

    The scheduler keeps its requests in `state_dir`: a restarted scheduler resumes the
    requests it holds and submits the config's campaigns only into an empty store.
    """
    from scheduler.api import make_app as make_scheduler_app

    # The same steps as `smets1 run`.
    from smets1.runner import (
        build_scheduler,
        campaign_devices,
        devices_by_model,
        make_image,
        scheduler_summary,
        submit_campaign,
    )

    cfg = opts.config
    clock = opts.clock
    install_stop(opts.stop)
    images = {i.name: make_image(i) for i in cfg.images}
    by_model = devices_by_model(cfg)
    lag = LagMonitor(clock, "scheduler")
    wall0 = wall_seconds()
    summary: dict[str, Any] = {}
    async with DcoClient(dco_urls) as dco:
        scheduler = build_scheduler(cfg, clock, dco, state_dir, by_model)
        resumed = len(scheduler.requests)

        def status() -> dict[str, Any]:
            states = Counter(r.state.value for r in scheduler.requests)
            return {"role": "scheduler", "clock": lag.health(), "requests": dict(states)}

        async def submit(c: Any) -> None:
            await clock.sleep_until(clock.epoch + c.submit_after_seconds)
            ids = campaign_devices(c, by_model)
            if ids:
                log.info("campaign %s: %d devices, image %s", c.name, len(ids), c.image)
                await submit_campaign(scheduler, c, images[c.image], ids)

        async def work() -> None:
            if resumed:
                log.info("resuming %d request(s) from %s", resumed, state_dir)
            else:
                await asyncio.gather(*(submit(c) for c in cfg.campaigns))
            await scheduler.wait_idle()

        async def progress() -> None:
            while True:
                await asyncio.sleep(PROGRESS_WALL_SECONDS)
                s = status()["requests"]
                log.info(
                    "[%s sim | %.0fs wall] %s",
                    f"{clock.datetime():%Y-%m-%d %H:%M}",
                    wall_seconds() - wall0,
                    ", ".join(f"{k} {v}" for k, v in sorted(s.items())) or "no requests",
                )

        started = max(clock.epoch, clock.now())
        # The scheduler's own HTTP face: DUIS, the JSON API, /healthz, /metrics.
        app = make_scheduler_app(scheduler)
        async with serve_http(app, opts.listen_host, opts.http_port):
            background = [
                asyncio.create_task(lag.run()),
                asyncio.create_task(scheduler.run()),
                asyncio.create_task(progress()),
            ]
            stopped = asyncio.create_task(opts.stop.wait())
            working = asyncio.create_task(work())
            try:
                await asyncio.wait({working, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if working.done():
                    working.result()
                summary = scheduler_summary(cfg, scheduler, clock.now() - started, images)
                summary.update(
                    mode="distributed",
                    dco_urls=dco_urls,
                    wall_seconds=round(wall_seconds() - wall0, 3),
                    clock=lag.health(),
                    cpu_seconds=cpu_seconds(),
                )
                write_json(opts.status_file, summary)
                log.info(
                    "done: %d/%d activated, failed %s",
                    summary["images_activated"],
                    summary["requests"],
                    summary["failed"] or "none",
                )
                if not exit_when_done:
                    await opts.stop.wait()
            finally:
                for t in [*background, stopped, working]:
                    t.cancel()
                await asyncio.gather(*background, stopped, working, return_exceptions=True)
                await scheduler.close()
    return summary


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)
