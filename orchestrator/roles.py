"""The three long-running roles of a distributed run: DCO worker, fleet shard, scheduler.

Each wires its role's component to the transports of a process of its own, on a
`ScaledClock` that all processes share, and writes a status document
(orchestrator.status) when it stops. The scheduler leads the clock and announces it on
the broker; the DCO and the fleet follow it, and wait for it before they take any work
(smets1.shared_clock):

    fleet shard ──MQTT── broker ──MQTT── DCO worker(s) ──HTTP── scheduler
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from dco_mock.http_api import make_app as make_dco_app
from dco_mock.metrics import DCO_METRICS
from dco_mock.service import Dco
from emulator.device import Esme
from emulator.flash_journal import FlashJournal
from emulator.fleet import FleetHost, build_devices
from emulator.metrics import FLEET_METRICS
from emulator.slots import FlashStore
from orchestrator.autospeed import (
    SPEED_METRICS,
    TICK_WALL_SECONDS,
    LatenessReport,
    SpeedController,
    lateness_topic,
)
from orchestrator.campaign import (
    build_scheduler,
    campaign_batches,
    campaign_devices,
    campaign_summary,
    devices_by_model,
    make_images,
    submit_campaign,
)
from orchestrator.dco_client import DcoClient
from orchestrator.errors import DcoGaveUp
from orchestrator.lag import LAG_METRICS, LagMonitor
from orchestrator.report_data import hourly_counts
from orchestrator.serving import (
    client_id,
    cpu_seconds,
    health_app,
    install_stop,
    peak_rss_bytes,
    serve_http,
    settle_heap,
    start_unless_stopped,
    write_atomically,
    write_status,
)
from orchestrator.status import BusStatus, DcoStatus, FleetStatus, SchedulerStatus
from scheduler.api import REGISTRY
from scheduler.api import make_app as make_scheduler_app
from scheduler.summary import SchedulerSummary
from smets1.broker_url import BrokerUrl
from smets1.clock import ScaledClock, wall_seconds
from smets1.config import CampaignConfig, FleetConfig
from smets1.dco_http import in_flight_limit
from smets1.errors import Smets1Error
from smets1.heap import built_to_last
from smets1.lateness import lateness_threshold_seconds
from smets1.metrics import BUS_METRICS, RoleCollector, role_registry, sampler
from smets1.mqtt import MqttBus
from smets1.routing import DcoWorkerBus, ShardBus
from smets1.shared_clock import FOLLOW_WAIT_SECONDS, ClockFollower, ClockLeader

log = logging.getLogger("orchestrator.roles")
_S = TypeVar("_S", bound=BaseModel)

#: How often the scheduler logs its progress, wall seconds.
PROGRESS_WALL_SECONDS = 5.0
#: How long a scheduler told to exit when done waits for an unreachable DCO, wall seconds.
DCO_GIVE_UP_SECONDS = 300.0


@dataclass(slots=True)
class RoleOptions:
    """What every role is given: the config, its clock, and where to report."""

    config: FleetConfig
    clock: ScaledClock
    listen_host: str = "0.0.0.0"
    http_port: int | None = None
    #: The role's status document, written when it stops (orchestrator.status).
    status_file: Path | None = None
    #: The bearer token of the DCO's HTTP API (dco.token, or SMETS1_DCO_TOKEN).
    dco_token: str = ""
    #: A follower gives up when no clock is announced in this long, wall seconds.
    clock_wait_seconds: float = FOLLOW_WAIT_SECONDS
    #: The leader only: start a new clock whose simulated time is the epoch at this
    #: Unix time, instead of now or the run's saved clock (--wall0).
    wall0: float | None = None
    #: The leader only: `--speed auto` (orchestrator.autospeed) slows and speeds the
    #: clock to what every role keeps up with.
    auto_speed: bool = False
    #: The run's name (--run, SMETS1_RUN): its processes share topics, client ids and a
    #: clock of their own on the broker, so a new run takes nothing of an earlier one's.
    run: str = ""
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def fleet(self) -> str:
        """The run's name on the broker: `<config name>`, or `<config name>.<run>`."""
        return topic_namespace(self.config.name, self.run)


def topic_namespace(config_name: str, run: str = "") -> str:
    """Where a run's topics live (`smets1/<this>/...`) and what its client ids start with."""
    return f"{config_name}.{run}" if run else config_name


async def _serve_until_stopped(
    opts: RoleOptions,
    bus: DcoWorkerBus | ShardBus,
    follower: ClockFollower,
    lag: LagMonitor,
    app: web.Application,
    ready: str,
    start: Callable[[], None],
) -> None:
    """Connect (as long as it takes), join the shared clock (ClockError past
    `opts.clock_wait_seconds`), then `start` the component, serve `app` and watch the
    lag until told to stop."""
    settle_heap()  # what the role keeps is built: its pause comes before the clock counts
    if not await start_unless_stopped(bus, opts.stop):
        return
    joining = asyncio.create_task(follower.wait(opts.clock_wait_seconds))
    stopping = asyncio.create_task(opts.stop.wait())
    await asyncio.wait({joining, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for t in (joining, stopping):
        t.cancel()
    await asyncio.gather(joining, stopping, return_exceptions=True)
    if not joining.done() or joining.cancelled():
        return
    joining.result()  # ClockError: no clock in time
    start()
    async with asyncio.TaskGroup() as tg:
        lag_task = tg.create_task(lag.run())
        async with serve_http(app, opts.listen_host, opts.http_port):
            log.info("%s", ready)
            await opts.stop.wait()
        lag_task.cancel()


def _reporter(mqtt: MqttBus, fleet: str, name: str) -> Callable[[LatenessReport], None]:
    """A follower's recent lateness, every check, to the leader (for `--speed auto`)."""
    topic = lateness_topic(fleet, name)

    def report(r: LatenessReport) -> None:
        if r.sequence:  # not before the run's clock is known
            mqtt.publish(topic, replace(r, role=name).encode())

    return report


def _follow(
    opts: RoleOptions, mqtt: MqttBus, role: str, name: str
) -> tuple[ClockFollower, LagMonitor]:
    """What every follower role runs: the shared clock, and its lag and lateness watched
    and reported to the leader as `name`."""
    cfg = opts.config
    follower = ClockFollower(opts.clock, mqtt, opts.fleet, role)
    lag = LagMonitor(
        opts.clock,
        role,
        mqtt,
        threshold_seconds=lateness_threshold_seconds(cfg),
        on_report=_reporter(mqtt, opts.fleet, name),
    )
    return follower, lag


# -- the DCO worker ----------------------------------------------------------------------


async def run_dco(
    opts: RoleOptions, broker: BrokerUrl, shards: int, worker: str, state_dir: Path
) -> DcoStatus:
    cfg = opts.config
    role = f"dco {worker}"
    install_stop(opts.stop)
    mqtt = MqttBus(
        broker,
        client_id(opts.fleet, f"dco-{worker}"),
        connect_timeout_seconds=None,
        clock=opts.clock,
        max_queued_bytes=cfg.dco.max_outbound_bytes,
    )
    bus = DcoWorkerBus(mqtt, opts.fleet, worker)
    dco = Dco(
        opts.clock,
        bus,
        opts.fleet,
        shards,
        cfg.dco,
        state_dir=state_dir,
        block_size=cfg.block_size_bytes,
        max_in_flight_bytes=cfg.dco.max_in_flight_bytes,
    )
    follower, lag = _follow(opts, mqtt, role, f"dco-{worker}")
    registry = role_registry(
        "dco",
        [sampler(mqtt, BUS_METRICS), sampler(lag, LAG_METRICS), sampler(dco, DCO_METRICS)],
    )

    budget = dco.in_flight

    def status() -> DcoStatus:
        return DcoStatus(
            worker=worker,
            shards=shards,
            cpu_seconds=cpu_seconds(),
            peak_rss_bytes=peak_rss_bytes(),
            clock=lag.status(),
            lateness=lag.lateness_status(),
            bus=BusStatus.of(mqtt),
            dco=dco.counters,
            in_flight_bytes_limit=budget.limit if budget else 0,
            in_flight_bytes_peak=budget.peak if budget else 0,
            in_flight_waits=budget.waits if budget else 0,
            pipe=None if dco.pipe is None else dco.pipe.summary(),
        )

    def health() -> tuple[bool, dict[str, Any]]:
        # `room`: whether a new 11.3 is taken now (else the reason it is turned away).
        room = {"room": dco.no_room_for() or "ok", "free_transfer_slots": dco.free_slots}
        return mqtt.connected, {**status().model_dump(mode="json"), **room}

    if cfg.background is not None:
        log.warning(
            "%s: the config's background traffic is carried under `smets1 run` only (issue"
            " 16); this DCO carries firmware alone",
            role,
        )
    limit = in_flight_limit(cfg.dco.http_max_in_flight)
    if limit < cfg.dco.http_max_in_flight:
        log.warning(
            "%s: serves %d HTTP requests at once, not dco.http_max_in_flight %d: the "
            "process may open too few files (ulimit -n) for more",
            role,
            limit,
            cfg.dco.http_max_in_flight,
        )
    app = make_dco_app(
        dco, health, registry, token=opts.dco_token, max_in_flight=limit, room=dco.no_room_for
    )
    log.info("%s: connecting to %s", role, broker)
    ready = f"{role} ready: fleet {opts.fleet}, {shards} shard(s)"
    await _serve_until_stopped(opts, bus, follower, lag, app, ready, dco.start)
    doc = status()
    await dco.close()
    await bus.close()
    write_status(opts.status_file, doc)
    return doc


# -- the fleet shard ---------------------------------------------------------------------


async def run_fleet(
    opts: RoleOptions,
    broker: BrokerUrl,
    shard: int,
    shards: int,
    state_dir: Path | None = None,
) -> FleetStatus:
    """Serve one shard's devices; with `state_dir`, their flash lives there
    (emulator.flash_journal) and a restarted shard resumes each device from it."""
    cfg = opts.config
    role = f"fleet shard {shard}/{shards}"
    install_stop(opts.stop)
    flash = FlashStore()
    devices = build_devices(cfg, shard, shards, flash=flash)
    journal = None
    if state_dir is not None:
        journal = FlashJournal.open(
            state_dir, devices, flash, fleet=cfg.name, shard=shard, shards=shards
        )
        log.info(
            "%s: flash in %s, %d device(s) not as built", role, state_dir, journal.loaded_devices
        )
    try:
        with built_to_last():
            return await _serve_fleet(opts, broker, shard, shards, devices, journal)
    finally:
        if journal is not None:
            journal.close()


async def _serve_fleet(
    opts: RoleOptions,
    broker: BrokerUrl,
    shard: int,
    shards: int,
    devices: dict[int, Esme],
    journal: FlashJournal | None,
) -> FleetStatus:
    role = f"fleet shard {shard}/{shards}"
    mqtt = MqttBus(
        broker,
        client_id(opts.fleet, f"fleet-{shard}"),
        connect_timeout_seconds=None,
        clock=opts.clock,
    )
    bus = ShardBus(mqtt, opts.fleet, shard)
    host = FleetHost(opts.clock, bus, opts.fleet, devices, shard=shard, journal=journal)
    follower, lag = _follow(opts, mqtt, role, f"fleet-{shard}")
    registry = role_registry(
        "fleet",
        [sampler(mqtt, BUS_METRICS), sampler(lag, LAG_METRICS), sampler(host, FLEET_METRICS)],
    )

    def status() -> FleetStatus:
        return FleetStatus(
            shard=shard,
            shards=shards,
            cpu_seconds=cpu_seconds(),
            peak_rss_bytes=peak_rss_bytes(),
            devices=len(devices),
            clock=lag.status(),
            lateness=lag.lateness_status(),
            bus=BusStatus.of(mqtt),
            fleet=host.counters,
            device_states=dict(sorted(host.state_counts().items())),
            device_transitions=dict(sorted(host.transitions().items())),
        )

    def health() -> tuple[bool, dict[str, Any]]:
        return mqtt.connected, status().model_dump(mode="json")

    log.info("%s: %d devices, connecting to %s", role, len(devices), broker)
    app = health_app(health, registry)
    await _serve_until_stopped(opts, bus, follower, lag, app, f"{role} ready", host.start)
    host.flush()
    doc = status()
    await bus.close()
    write_status(opts.status_file, doc)
    return doc


# -- the scheduler -----------------------------------------------------------------------


async def run_scheduler(
    opts: RoleOptions,
    broker: BrokerUrl,
    dco_urls: list[str],
    state_dir: Path,
    exit_when_done: bool,
    summary_file: Path | None = None,
    dco_give_up_seconds: float = DCO_GIVE_UP_SECONDS,
) -> SchedulerStatus:
    """The config's campaigns through the DCO over HTTP; the summary when every request
    has its answer, or as it stands when told to stop first (then `unfinished` counts
    what was still open).

    The scheduler keeps its requests in `state_dir`: a restarted scheduler resumes the
    requests it holds and submits each config campaign it has not submitted yet (the
    store records each one, so none goes twice and none is lost to a kill).

    A DCO that cannot be reached refuses nothing: every call waits and is sent again,
    the log says so at error level and /healthz answers 503 with the reason. With
    `exit_when_done`, a DCO unreachable for `dco_give_up_seconds` ends the run with
    DcoGaveUp (its status written as it stands, no summary).

    The scheduler leads the run's clock: before anything time-based it connects to
    `broker` and announces the clock (a new one, or the one its state folder saved, so
    a restarted scheduler goes on with the same clock).
    """
    cfg = opts.config
    install_stop(opts.stop)
    mqtt = MqttBus(broker, client_id(opts.fleet, "scheduler"), clock=opts.clock)
    leader = ClockLeader(
        opts.clock, mqtt, opts.fleet, state_dir, wall0=opts.wall0, named_run=bool(opts.run)
    )
    control = None
    if opts.auto_speed:
        control = SpeedController(lateness_threshold_seconds(cfg))

        def on_report(_topic: str, data: bytes) -> None:
            try:
                report = LatenessReport.decode(data)
            except ValueError as exc:
                log.warning("a lateness report that does not decode: %s", exc)
                return
            if control is not None and leader.current is not None:
                control.observe(report, leader.current.sequence)

        mqtt.subscribe(lateness_topic(opts.fleet), on_report)
    log.info("scheduler: connecting to %s to lead the clock", broker)
    await mqtt.start()  # BusError when the broker cannot be reached in time
    try:
        settle_heap()  # before the clock starts: a pause now is nobody's lateness
        await leader.start()
        return await _schedule(
            opts,
            leader,
            control,
            dco_urls,
            state_dir,
            exit_when_done,
            summary_file,
            dco_give_up_seconds,
        )
    finally:
        await mqtt.close()


async def _auto_speed(leader: ClockLeader, control: SpeedController) -> None:
    """`--speed auto`: every tick, the controller's decision, through the leader."""
    clock = leader.clock
    control.record(clock.now(), clock.speed, "start")
    log.info(
        "automatic speed: starting at %g (ceiling %g, floor %g; slower when a role is "
        "late by over %g s, faster after %d calm ticks under %g s)",
        clock.speed,
        control.ceiling,
        control.floor,
        control.decrease_fraction * control.threshold_seconds,
        control.calm_ticks,
        control.calm_fraction * control.threshold_seconds,
    )
    while True:
        await asyncio.sleep(TICK_WALL_SECONDS)  # wall time: reports come once a second
        if leader.speed_requests:
            control.disable(f"a speed was asked for by hand ({clock.speed:g}); it is kept")
        change = control.tick(clock.speed)
        if change is None:
            continue
        announcement = leader.set_speed(change.speed)
        control.record(announcement.origin_sim, change.speed, change.reason)
        log.info("automatic speed: %s", change.reason)


async def _schedule(
    opts: RoleOptions,
    leader: ClockLeader,
    control: SpeedController | None,
    dco_urls: list[str],
    state_dir: Path,
    exit_when_done: bool,
    summary_file: Path | None,
    dco_give_up_seconds: float,
) -> SchedulerStatus:
    cfg = opts.config
    clock = opts.clock
    images = make_images(cfg)
    by_model = devices_by_model(cfg)

    # The scheduler takes no device traffic: its lateness is that of its own timers.
    def own_report(report: LatenessReport) -> None:
        if control is not None and leader.current is not None:
            control.observe(replace(report, role="scheduler"), leader.current.sequence)

    lag = LagMonitor(
        clock,
        "scheduler",
        threshold_seconds=lateness_threshold_seconds(cfg),
        on_report=own_report,
    )
    wall0 = wall_seconds()
    done: SchedulerStatus
    client = DcoClient(
        dco_urls,
        token=opts.dco_token,
        retry_seconds=None,
        max_in_flight=cfg.dco.http_max_in_flight,
        give_up_seconds=dco_give_up_seconds if exit_when_done else None,
    )
    async with client as dco:
        scheduler = build_scheduler(cfg, clock, dco, state_dir, by_model)
        resumed = len(scheduler.requests)

        def by_state() -> dict[str, int]:
            return dict(Counter(r.state.value for r in scheduler.requests))

        async def submit(c: CampaignConfig) -> None:
            ids = campaign_devices(c, by_model, cfg)
            for at, batch, batch_ids in campaign_batches(c, ids):
                await clock.sleep_until(clock.epoch + at)
                if await submit_campaign(scheduler, batch, images[c.image], batch_ids):
                    log.info(
                        "campaign %s: %d devices, image %s", batch.name, len(batch_ids), c.image
                    )

        async def work() -> None:
            if resumed:
                log.info("resuming %d request(s) from %s", resumed, state_dir)
            await asyncio.gather(*(submit(c) for c in cfg.campaigns))
            await scheduler.wait_idle()

        async def progress() -> None:
            while True:
                await asyncio.sleep(PROGRESS_WALL_SECONDS)
                s = by_state()
                problem = dco.problem()
                log.info(
                    "[%s sim | %.0fs wall] %s%s",
                    f"{clock.datetime():%Y-%m-%d %H:%M}",
                    wall_seconds() - wall0,
                    ", ".join(f"{k} {v}" for k, v in sorted(s.items())) or "no requests",
                    "" if problem is None else f"; waiting: {problem}",
                )

        def status(summary: SchedulerSummary) -> SchedulerStatus:
            return SchedulerStatus(
                cpu_seconds=cpu_seconds(),
                peak_rss_bytes=peak_rss_bytes(),
                wall_seconds=round(wall_seconds() - wall0, 3),
                dco_urls=dco_urls,
                clock=lag.status(),
                lateness=lag.lateness_status(),
                requests=by_state(),
                releases_held=scheduler.releases_held[0],
                releases_held_seconds=round(scheduler.releases_held[1], 3),
                summary=summary,
                activations_per_hour=hourly_counts(
                    (r.completed_at for r in scheduler.requests if r.completed_at is not None),
                    started,
                ),
                speed_control=None if control is None else control.status(clock.speed),
            )

        def health_clock() -> dict[str, Any]:
            doc: dict[str, Any] = {
                "speed": clock.speed,
                "speed_mode": "fixed",
                "lag_seconds": round(lag.lag_seconds, 3),
            }
            if control is not None:
                doc.update(
                    speed_mode="auto", speed_control=control.state(), changes=control.changes
                )
            return doc

        started = max(clock.epoch, clock.now())
        # The scheduler's own HTTP face: DUIS, the JSON API, /healthz, /metrics.
        app = make_scheduler_app(scheduler, problem=dco.problem, clock=health_clock)
        samplers = [sampler(lag, LAG_METRICS)]
        if control is not None:
            samplers.append(sampler(control, SPEED_METRICS))
        app[REGISTRY].register(RoleCollector("scheduler", samplers))
        async with serve_http(app, opts.listen_host, opts.http_port):
            background = [
                asyncio.create_task(lag.run()),
                asyncio.create_task(leader.run()),
                asyncio.create_task(scheduler.run()),
                asyncio.create_task(progress()),
            ]
            if control is not None:
                background.append(asyncio.create_task(_auto_speed(leader, control)))
            stopped = asyncio.create_task(opts.stop.wait())
            working = asyncio.create_task(work())
            gave_up = asyncio.create_task(dco.gave_up.wait())
            try:
                await asyncio.wait({working, stopped, gave_up}, return_when=asyncio.FIRST_COMPLETED)
                if working.done():
                    working.result()
                summary = campaign_summary(scheduler, cfg, clock.now() - started, images)
                done = status(summary)
                write_status(opts.status_file, done)
                if gave_up.done() and not working.done():
                    raise DcoGaveUp(dco.gave_up_reason)
                if summary_file is not None:
                    text = json.dumps(done.summary_document(), indent=2) + "\n"
                    write_atomically(summary_file, text)
                log.info(
                    "done: %d/%d activated, failed %s",
                    summary.images_activated,
                    summary.requests,
                    summary.failed or "none",
                )
                if not exit_when_done:
                    await opts.stop.wait()
            finally:
                for t in [*background, stopped, working, gave_up]:
                    t.cancel()
                await asyncio.gather(*background, stopped, working, gave_up, return_exceptions=True)
                await scheduler.close()
    return done


# -- the whole run's results, read from the running processes -----------------------------

#: How long the scheduler keeps trying a process whose status it cannot read, wall seconds.
COLLECT_WAIT_SECONDS = 120.0


class StatusUnreadable(Smets1Error):
    """A fleet shard's or DCO worker's status could not be read at the end of a run."""


def read_status(url: str, doc: type[_S], wait_seconds: float = COLLECT_WAIT_SECONDS) -> _S:
    """The status a DCO worker or fleet shard serves on `url`/health (503 while its broker
    is away still carries it), tried again until `wait_seconds` have passed."""
    health = url.rstrip("/") + "/health"
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            try:
                with urllib.request.urlopen(health, timeout=5.0) as resp:
                    body = resp.read()
            except urllib.error.HTTPError as exc:  # 503: not connected, the status is there
                body = exc.read()
            return doc.model_validate_json(body)
        except (OSError, ValidationError) as exc:
            if time.monotonic() >= deadline:
                raise StatusUnreadable(f"cannot read the status at {health}: {exc}") from None
        time.sleep(1.0)


def collect_statuses(
    fleet_urls: list[str], dco_urls: list[str], wait_seconds: float = COLLECT_WAIT_SECONDS
) -> tuple[list[FleetStatus], list[DcoStatus]]:
    """Every fleet shard's and DCO worker's status as it stands, in the order given."""
    fleets = [read_status(u, FleetStatus, wait_seconds) for u in fleet_urls]
    dcos = [read_status(u, DcoStatus, wait_seconds) for u in dco_urls]
    return fleets, dcos
