"""`smets1 run`: one process, virtual clock, in-process bus, the whole firmware path.

This module sits at the top with the command line: it is the one place that wires the
components together (fleet ← bus → DCO ← scheduler). The components never import it.

Users' `callback_url`s are not called here: on the virtual clock's loop an HTTP timeout
would expire while the socket waits in real time. Every notification is still stored in
the run's state directory (`scheduler.sqlite`); `smets1 scheduler` delivers callbacks.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from dco_mock.service import Dco
from emulator.fleet import FleetHost, build_devices
from emulator.slots import FlashStore
from scheduler.errors import AdmissionRefused, SchedulerError
from scheduler.requests import Priority, RequestState
from scheduler.service import Scheduler
from smets1.bus import InProcessBus
from smets1.clock import Clock, VirtualClock, to_datetime, wall_seconds
from smets1.config import CampaignConfig, FleetConfig, ImageConfig
from smets1.config_dcc import UserConfig
from smets1.errors import ConfigError
from smets1.eui64 import format_eui64
from smets1.image import ImageError, build_image, parse_image, seeded_body
from smets1.report import hourly_counts, write_report
from smets1.services import DcoApi
from smets1.signing import demo_private_key, load_private_key

#: How often, in simulated seconds, the progress line is considered for printing.
PROGRESS_TICK_SECONDS = 900.0
#: The least wall time between two progress lines.
PROGRESS_WALL_SECONDS = 1.0


def make_image(cfg: ImageConfig) -> bytes:
    """The OTA file a config image names: read from `file`, or built to `size_bytes`."""
    if cfg.file is not None:
        try:
            data = cfg.file.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"images.{cfg.name}.file: cannot read {cfg.file}: {exc.strerror}"
            ) from exc
        try:
            parse_image(data)
        except ImageError as exc:
            raise ConfigError(f"images.{cfg.name}.file: {cfg.file}: {exc}") from exc
        return data
    assert cfg.size_bytes is not None
    key = load_private_key(cfg.key) if cfg.key else demo_private_key(cfg.manufacturer_code)

    def build(body: bytes) -> bytes:
        return build_image(
            manufacturer_code=cfg.manufacturer_code,
            image_type=cfg.image_type,
            file_version=cfg.file_version,
            body=body,
            private_key=key,
            hardware_versions=cfg.hardware_versions,
            header_string=f"smets1-fleet {cfg.name}"[:32],
        )

    overhead = len(build(b""))
    if cfg.size_bytes < overhead:
        raise ConfigError(
            f"images.{cfg.name}.size_bytes: at least {overhead} bytes are needed for the "
            f"header and signature, got {cfg.size_bytes}"
        )
    data = build(seeded_body(cfg.size_bytes - overhead, cfg.seed))
    assert len(data) == cfg.size_bytes
    return data


def devices_by_model(config: FleetConfig) -> dict[str, list[int]]:
    """Every device id of the config, by model, in config order."""
    by_model: dict[str, list[int]] = {}
    for device_id, group in config.device_ids():
        by_model.setdefault(group.model, []).append(device_id)
    return by_model


def build_scheduler(
    config: FleetConfig,
    clock: Clock,
    dco: DcoApi,
    state_dir: Path,
    by_model: dict[str, list[int]],
) -> Scheduler:
    """The scheduler of a config, the same for `smets1 run` and `smets1 scheduler`."""
    # Campaign Users not listed under scheduler.users are registered without a token.
    listed = {u.id for u in config.scheduler.users}
    extra = [UserConfig(id=c.user) for c in config.campaigns if c.user not in listed]
    devices = {d for ids in by_model.values() for d in ids}
    return Scheduler(
        clock, dco, config.scheduler, state_dir=state_dir, devices=devices, users=extra
    )


async def submit_campaign(
    scheduler: Scheduler, c: CampaignConfig, image: bytes, ids: list[int]
) -> None:
    """11.1 for the image, an agreed schedule if the campaign has one, then the 11.3s.

    The schedule is asked for the campaign's devices and the User's held requests,
    which join it when it is agreed. Whatever the scheduler refuses is recorded as a
    refusal of the campaign, as a User's system would see it, not a crash of the run.
    """
    schedule_id = None
    try:
        stored = await scheduler.store_image(c.user, image)
        if c.schedule == "agreed" and scheduler.is_large(stored):
            devices = len(ids) + scheduler.held_count(c.user)
            proposed, _ = scheduler.request_schedule(c.user, devices, max_per_day=c.max_per_day)
            schedule_id = scheduler.accept_schedule(c.user, proposed.schedule_id).schedule_id
        scheduler.submit_activations(
            c.user,
            stored.firmware_hash,
            ids,
            campaign=c.name,
            priority=Priority(c.priority),
            schedule_id=schedule_id,
        )
    except SchedulerError as exc:
        earliest = exc.earliest_day if isinstance(exc, AdmissionRefused) else None
        scheduler.record_refusal(c.user, c.name, len(ids), exc.reason, earliest)


def campaign_devices(c: CampaignConfig, by_model: dict[str, list[int]]) -> list[int]:
    """The devices a campaign selects: `count` of its model's devices from `offset` on."""
    ids = by_model.get(c.devices.model, [])[c.devices.offset :]
    return ids if c.devices.count is None else ids[: c.devices.count]


def peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Run:
    """One run of a fleet config: builds every part, drives the campaigns, sums up."""

    def __init__(self, config: FleetConfig, out_dir: Path, progress: TextIO | None = sys.stderr):
        self.config = config
        self.out_dir = out_dir
        self.progress = progress
        self.clock: Clock = VirtualClock(config.epoch_seconds)
        self.activations_per_hour: list[int] = []

    def execute(self) -> dict[str, Any]:
        wall0 = wall_seconds()
        summary = self.clock.run(self._main(wall0))
        summary["wall_seconds"] = round(wall_seconds() - wall0, 3)
        summary["peak_rss_bytes"] = peak_rss_bytes()
        return summary

    async def _main(self, wall0: float) -> dict[str, Any]:
        cfg = self.config
        state_dir = self.out_dir / "state"
        shutil.rmtree(state_dir, ignore_errors=True)
        images = {i.name: make_image(i) for i in cfg.images}
        bus = InProcessBus()
        flash = FlashStore()
        devices = build_devices(cfg, flash=flash)
        host = FleetHost(self.clock, bus, cfg.name, devices)
        dco = Dco(
            self.clock,
            bus,
            cfg.name,
            1,
            cfg.dco,
            state_dir=state_dir,
            block_size=cfg.block_size_bytes,
        )
        by_model = devices_by_model(cfg)
        scheduler = build_scheduler(cfg, self.clock, dco, state_dir, by_model)
        host.start()
        dco.start()
        started = self.clock.now()

        async def submit(c: CampaignConfig) -> None:
            await self.clock.sleep(c.submit_after_seconds)
            ids = campaign_devices(c, by_model)
            if ids:
                await submit_campaign(scheduler, c, images[c.image], ids)

        if self.progress is not None and any(u.callback_url for u in scheduler.users.values()):
            self.progress.write(
                "note: callback_url is not called under smets1 run (virtual clock); "
                "notifications are kept in the state directory\n"
            )
        releaser = asyncio.create_task(scheduler.run(deliver_callbacks=False))
        ticker = asyncio.create_task(self._progress(scheduler, host, wall0))
        try:
            await asyncio.gather(*(submit(c) for c in cfg.campaigns))
            await scheduler.wait_idle()
        finally:
            for task in (releaser, ticker):
                task.cancel()
            await asyncio.gather(releaser, ticker, return_exceptions=True)
            await scheduler.close()
            await dco.close()
            await bus.close()
        simulated = self.clock.now() - started
        self.activations_per_hour = hourly_counts(
            (r.completed_at for r in scheduler.requests if r.completed_at is not None), started
        )
        return self._summary(scheduler, host, dco, bus, simulated, images)

    async def _progress(self, scheduler: Scheduler, host: FleetHost, wall0: float) -> None:
        last = wall0
        while True:
            await self.clock.sleep(PROGRESS_TICK_SECONDS)
            now = wall_seconds()
            if self.progress is None or now - last < PROGRESS_WALL_SECONDS:
                continue
            last = now
            self.progress.write(self._progress_line(scheduler, now - wall0) + "\n")
            self.progress.flush()

    def _progress_line(self, scheduler: Scheduler, wall: float) -> str:
        states = scheduler.state_counts
        total = len(scheduler.requests)
        done = states[RequestState.DONE]
        return (
            f"[{to_datetime(self.clock.now()):%Y-%m-%d %H:%M} sim | {wall:6.1f}s wall] "
            f"activated {done}/{total}, failed {states[RequestState.FAILED]}, "
            f"in flight {states[RequestState.RELEASED]}, waiting {states[RequestState.WAITING]}, "
            f"held {states[RequestState.HELD]}"
        )

    def _summary(
        self,
        scheduler: Scheduler,
        host: FleetHost,
        dco: Dco,
        bus: InProcessBus,
        simulated: float,
        images: dict[str, bytes],
    ) -> dict[str, Any]:
        return {
            **scheduler_summary(self.config, scheduler, simulated, images),
            "devices": len(host.devices),
            "blocks_delivered": host.counters.blocks_received,
            "bytes_delivered": host.counters.block_bytes_received,
            "blocks_sent": dco.counters.blocks_sent,
            "bytes_sent": dco.counters.bytes_sent,
            "transfer_rounds": dco.counters.rounds,
            "device_states": dict(sorted(host.state_counts().items())),
            "device_transitions": dict(sorted(host.transitions().items())),
            "faults": dict(sorted(host.counters.faults.items())),
            "frames_dropped": dict(sorted(host.counters.frames_dropped.items())),
            "dco_retries": dco.counters.retries,
            "dco_resumes": dco.counters.resumes,
            "bus": {
                "messages": bus.counters.messages_published,
                "bytes": bus.counters.bytes_published,
            },
        }


def scheduler_summary(
    config: FleetConfig, scheduler: Scheduler, simulated: float, images: dict[str, bytes]
) -> dict[str, Any]:
    """What the DCC side knows of a run: every request's outcome, per day, User, campaign."""
    reqs = scheduler.requests
    failed = Counter(r.failure or "unknown" for r in reqs if r.state is RequestState.FAILED)
    per_day = _dated(scheduler, Counter(scheduler.calendar.released_per_day()))
    trt = Counter(r.trt_met for r in reqs)
    states = Counter(r.state for r in reqs)
    return {
        "config": config.name,
        "seed": config.seed,
        "devices": sum(g.count for g in config.devices),
        "requests": len(reqs),
        "images_activated": states[RequestState.DONE],
        "failed": dict(sorted(failed.items())),
        # Released or waiting for their day: not answered when the summary was taken.
        "unfinished": states[RequestState.WAITING] + states[RequestState.RELEASED],
        "simulated_seconds": round(simulated, 3),
        "simulated_days": round(simulated / 86_400, 4),
        "large_images_released_per_day": per_day,
        "max_large_images_released_in_a_day": max(per_day.values(), default=0),
        "large_images_per_day": config.scheduler.large_images_per_day,
        "trt_met": trt[True],
        "trt_missed": trt[False],
        "images": [
            {
                "name": name,
                "size_bytes": len(data),
                "firmware_hash": parse_image(data).firmware_hash.hex(),
            }
            for name, data in images.items()
        ],
        "held_for_schedule": states[RequestState.HELD],
        "refused": sum(r.devices for r in scheduler.refusals),
        "overdue": sum(1 for r in reqs if r.overdue),
        "campaigns": [
            {
                "name": c.name,
                "user": format_eui64(c.user),
                "devices": len(c.requests),
                "large": c.large,
                "activated": sum(1 for r in c.requests if r.state is RequestState.DONE),
                "held": sum(1 for r in c.requests if r.state is RequestState.HELD),
                "refused": sum(f.devices for f in scheduler.refusals if f.campaign == c.name),
                "released_per_day": _per_day(scheduler, c.requests),
                "trt_met": sum(1 for r in c.requests if r.trt_met is True),
                "trt_missed": sum(1 for r in c.requests if r.trt_met is False),
            }
            for c in scheduler.campaigns.values()
        ],
        "users": _per_user(scheduler),
    }


def _dated(scheduler: Scheduler, per_day: Counter[int]) -> dict[str, int]:
    """Day index → count, as ISO date → count in day order, without empty days."""
    return {scheduler.date_of(d) or "": n for d, n in sorted(per_day.items()) if n}


def _per_day(scheduler: Scheduler, reqs: list[Any]) -> dict[str, int]:
    released: Counter[int] = Counter(
        scheduler.calendar.day_of(r.released_at) for r in reqs if r.released_at is not None
    )
    return _dated(scheduler, released)


def _per_user(scheduler: Scheduler) -> dict[str, Any]:
    """Per User: released per day, TRT met and missed, held, refused with reason, and
    each agreed schedule's batches."""
    out: dict[str, Any] = {}
    users = sorted({r.user for r in scheduler.requests} | {f.user for f in scheduler.refusals})
    for user in users:
        reqs = scheduler.requests_of(user)
        released: Counter[int] = Counter(
            scheduler.calendar.day_of(r.released_at)
            for r in reqs
            if r.large and r.released_at is not None
        )
        states = Counter(r.state for r in reqs)
        out[format_eui64(user)] = {
            "requests": len(reqs),
            "large_released_per_day": _dated(scheduler, released),
            "activated": states[RequestState.DONE],
            "failed": states[RequestState.FAILED],
            "trt_met": sum(1 for r in reqs if r.trt_met is True),
            "trt_missed": sum(1 for r in reqs if r.trt_met is False),
            "held_for_schedule": states[RequestState.HELD],
            "held_reason": next(
                (scheduler.held_reason(r) for r in reqs if r.state is RequestState.HELD), None
            ),
            "security": sum(1 for r in reqs if r.priority is Priority.SECURITY),
            "refused": [
                {
                    "campaign": f.campaign,
                    "devices": f.devices,
                    "reason": f.reason,
                    "earliest_date": scheduler.date_of(f.earliest_day),
                }
                for f in scheduler.refusals
                if f.user == user
            ],
            "schedules": [
                {
                    "schedule_id": s.schedule_id,
                    "state": s.state.value,
                    "devices": s.devices,
                    "moves": s.moves,
                    "batches": scheduler.batch_status(s),
                }
                for s in scheduler.schedules_of(user)
            ],
        }
    return out


def run_config(
    config: FleetConfig, out_dir: Path, progress: TextIO | None = sys.stderr
) -> dict[str, Any]:
    """Run a config and write `summary.json` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(config, out_dir, progress)
    summary = run.execute()
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(out_dir / "report.html", summary, run.activations_per_hour)
    return summary
