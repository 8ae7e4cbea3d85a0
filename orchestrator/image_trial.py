"""`smets1 image trial`: an image through the whole firmware path on emulated devices.

N devices of one model (its link, or a named profile; its faults, or those given) are
built in memory, and the image goes the way `smets1 run` sends it: SRV 11.1 stores it at
the DCO, the scheduler releases an 11.3 per device under the MP230 rules (an agreed
schedule when N is more than a User may send in a day), the DCO moves the blocks through
the fleet host's link and fault models, each device checks the image (codes, hardware
range, slot, FirmwareHash, the manufacturer's signature) and activates it, and SRV 11.2
then reads every device's running version. One process, virtual clock, in-process bus:
a thousand devices take seconds of wall time.

Each device's time is the simulated seconds from the release of its 11.3 to its response,
the span the five-day TRT measures: the transfer, the checks, the reboot, and the 11.2
with which the scheduler confirms the running version before it answers.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dco_mock.service import Dco
from emulator.fleet import FleetHost, build_devices
from emulator.slots import FlashStore
from orchestrator.campaign import submit_campaign
from orchestrator.model_fleet import MAKER_USER, model_fleet
from scheduler.requests import RequestState
from scheduler.service import Scheduler
from smets1.bus import InProcessBus
from smets1.clock import VirtualClock, wall_seconds
from smets1.config import FleetConfig
from smets1.config_dcc import CampaignConfig, DeviceSelection
from smets1.config_fleet import DeviceModelConfig, FaultConfig, LinkProfile
from smets1.image import OtaImage


@dataclass(slots=True)
class TrialResult:
    file: str
    model: str
    devices: int
    link: str
    faults: dict[str, Any] | None
    file_version: int
    agreed_schedule: bool
    activated: int = 0
    #: Failed 11.3s by the device's (or the DCO's) reason code.
    failed: Counter[str] = field(default_factory=Counter)
    #: Devices the scheduler refused to take at all, with its reason.
    refused: Counter[str] = field(default_factory=Counter)
    #: 11.2 readings that show the image's file version running.
    version_confirmed: int = 0
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    image_stored_seconds: float = 0.0
    simulated_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.activated == self.devices == self.version_confirmed

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "model": self.model,
            "devices": self.devices,
            "link": self.link,
            "faults": self.faults,
            "file_version": f"0x{self.file_version:08X}",
            "agreed_schedule": self.agreed_schedule,
            "activated": self.activated,
            "failed": dict(sorted(self.failed.items())),
            "refused": dict(sorted(self.refused.items())),
            "version_confirmed": self.version_confirmed,
            "seconds_per_device_p50": self.p50_seconds,
            "seconds_per_device_p95": self.p95_seconds,
            "image_stored_seconds": round(self.image_stored_seconds, 1),
            "simulated_seconds": round(self.simulated_seconds, 1),
            "wall_seconds": round(self.wall_seconds, 3),
        }


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank `q` quantile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_trial(
    file: str,
    data: bytes,
    image: OtaImage,
    model: DeviceModelConfig,
    devices: int,
    base: FleetConfig | None,
    link: tuple[str, LinkProfile] | None = None,
    faults: FaultConfig | None = None,
    seed: int | None = None,
) -> TrialResult:
    """`devices` of `model` through 11.1, 11.3 and 11.2. `link` (name, profile) replaces
    the model's link and `faults` its faults (None: the model's own)."""
    wall0 = wall_seconds()
    group_faults = faults if faults is not None else model.faults
    config = model_fleet("trial", model, [(devices, link[1] if link else None, faults)], base, seed)
    large = image.size_bytes > config.scheduler.large_image_threshold_bytes
    agreed = large and devices > config.scheduler.user_daily_limit
    result = TrialResult(
        file=file,
        model=model.name,
        devices=devices,
        link=link[0] if link else f"model {model.name}",
        faults=None if group_faults is None else group_faults.model_dump(exclude_defaults=True),
        file_version=image.header.file_version,
        agreed_schedule=agreed,
    )
    clock = VirtualClock(config.epoch_seconds)
    clock.run(_trial(clock, config, data, result))
    result.wall_seconds = wall_seconds() - wall0
    return result


async def _trial(clock: VirtualClock, config: FleetConfig, data: bytes, r: TrialResult) -> None:
    bus = InProcessBus()
    devices = build_devices(config, flash=FlashStore())
    ids = list(devices)
    host = FleetHost(clock, bus, config.name, devices)
    dco = Dco(clock, bus, config.name, 1, config.dco, block_size=config.block_size_bytes)
    scheduler = Scheduler(
        clock,
        dco,
        config.scheduler,
        devices=set(ids),
        suppliers=config.supplier_of(),
    )
    host.start()
    dco.start()
    campaign = CampaignConfig(
        name="trial",
        user=MAKER_USER,
        image="trial",
        devices=DeviceSelection(model=config.models[0].name),
        schedule="agreed" if r.agreed_schedule else "none",
    )
    started = clock.now()
    releaser = asyncio.create_task(scheduler.run(deliver_callbacks=False))
    try:
        await submit_campaign(scheduler, campaign, data, ids)
        await scheduler.wait_idle()
        readings = await asyncio.gather(*(scheduler.read_version(MAKER_USER, d) for d in ids))
        stored = dco.store.images()
    finally:
        releaser.cancel()
        await asyncio.gather(releaser, return_exceptions=True)
        await scheduler.close()
        await dco.close()
        await bus.close()
        host.flush()
    r.simulated_seconds = clock.now() - started
    if stored:
        r.image_stored_seconds = min(i.stored_at for i in stored) - started
    times = []
    for req in scheduler.requests:
        if req.state is RequestState.DONE:
            r.activated += 1
        elif req.state is RequestState.FAILED:
            r.failed[req.failure or "unknown"] += 1
        if req.completed_at is not None and req.released_at is not None:
            times.append(req.completed_at - req.released_at)
    for refusal in scheduler.refusals:
        r.refused[refusal.reason] += refusal.devices
    r.version_confirmed = sum(1 for v in readings if v.ok and v.running_version == r.file_version)
    p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
    r.p50_seconds = None if p50 is None else round(p50, 1)
    r.p95_seconds = None if p95 is None else round(p95, 1)


def render(r: TrialResult) -> str:
    failed = ", ".join(f"{k} {v}" for k, v in sorted(r.failed.items())) or "none"
    lines = [
        f"{r.file}: trial on {r.devices:,} emulated {r.model} device(s), link {r.link},"
        f" faults {', '.join(f'{k}={v}' for k, v in (r.faults or {}).items()) or 'none'}"
        + (", agreed schedule" if r.agreed_schedule else ""),
        f"  activated {r.activated:,}/{r.devices:,}; failed: {failed}",
    ]
    if r.refused:
        refused = ", ".join(f"{k} {v}" for k, v in sorted(r.refused.items()))
        lines.append(f"  refused by the scheduler: {refused}")
    lines += [
        f"  11.2 reads file version 0x{r.file_version:08X} on {r.version_confirmed:,} device(s)",
        f"  per device, 11.3 release to response: p50 {_s(r.p50_seconds)}, p95"
        f" {_s(r.p95_seconds)} (simulated)",
        f"  11.1 stored after {r.image_stored_seconds:,.1f} s; {r.simulated_seconds:,.0f}"
        f" simulated s in all, {r.wall_seconds:.2f} s wall",
    ]
    return "\n".join(lines)


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f} s"
