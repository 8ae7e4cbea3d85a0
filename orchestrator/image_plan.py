"""`smets1 image plan`: what MP230 and the network mean for one image.

Every figure comes from the code a run executes, not from a formula of its own:

* large or not: `scheduler.policy.Limits.is_large` with the config's threshold;
* blocks and runs: `OtaImage.blocks` and the DCO's `run_blocks`;
* transfer time per link profile: devices on each link are sent the image by the DCO
  (dco_mock.service) through the fleet host (emulator.fleet: its link model, frame
  overhead and jitter, and its block loss), on a virtual clock, exactly as `smets1 run`
  does; the time is from the 11.3's start to the device's answer that it holds every
  block, the mean over a few seeded devices;
* campaign days: the scheduler's own policy (`place_unscheduled` for the User's daily
  allowance, `propose` for an agreed schedule, with its fair-share claim on days other
  Users' schedules hold) on a capacity calendar.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from dco_mock.service import Dco
from emulator.fleet import FleetHost, build_devices
from emulator.slots import FlashStore
from orchestrator.model_fleet import MAKER_USER, model_fleet
from scheduler.calendar import Calendar
from scheduler.errors import AdmissionRefused
from scheduler.policy import Limits, Placement, place_unscheduled, propose
from smets1.bus import InProcessBus, up_topic
from smets1.clock import VirtualClock
from smets1.codes import DeviceState
from smets1.config import FleetConfig
from smets1.config_dcc import SchedulerConfig
from smets1.config_fleet import LINK_PROFILES, DeviceModelConfig, FaultConfig, LinkProfile
from smets1.errors import WireError
from smets1.image import OtaImage
from smets1.wire import Status, decode

#: SMETS1 devices that carry large images (MP230): the whole estate.
ESTATE_DEVICES = 670_000
#: Block loss assumed when neither `--loss` nor the model's faults give one.
DEFAULT_LOSS_RATE = 0.02
#: Devices per link (and per loss setting) whose transfer times are averaged.
SAMPLES_PER_LINK = 4
#: Bytes of image copies the devices of one link may assemble at once in a plan.
PLAN_MEMORY_BYTES = 64 * 2**20
#: States in which a device holds every block of the image (checked, well or not).
_ALL_BLOCKS_IN = frozenset({DeviceState.VERIFIED, DeviceState.VERIFY_FAILED})
#: Ids of the other Users whose agreed schedules share the DCC's capacity.
_OTHER_USER_BASE = 0x90B3_D51F_3F00_0000


@dataclass(frozen=True, slots=True)
class Loss:
    block_loss_rate: float
    block_corruption_rate: float
    #: Where the rates come from.
    source: str

    def faults(self) -> FaultConfig:
        return FaultConfig(
            block_loss_rate=self.block_loss_rate,
            block_corruption_rate=self.block_corruption_rate,
        )


def configured_loss(model: DeviceModelConfig | None, source: str, rate: float | None) -> Loss:
    """`rate` (from `--loss`) if given; else the model's configured loss and corruption;
    else DEFAULT_LOSS_RATE."""
    if rate is not None:
        return Loss(rate, 0.0, "--loss")
    if model is not None and model.faults is not None:
        f = model.faults
        if f.block_loss_rate or f.block_corruption_rate:
            return Loss(
                f.block_loss_rate, f.block_corruption_rate, f"model {model.name} in {source}"
            )
    return Loss(DEFAULT_LOSS_RATE, 0.0, "default (the model configures no loss)")


@dataclass(slots=True)
class LinkTiming:
    name: str
    link: LinkProfile
    #: Devices averaged, each way.
    samples: int
    transfer_seconds: float = math.nan
    transfer_seconds_with_loss: float = math.nan
    #: Devices on the lossy link whose transfer did not complete (the DCO gave up).
    incomplete_with_loss: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "link": self.name,
            "bandwidth_bps": self.link.bandwidth_bps,
            "latency_seconds": self.link.latency_seconds,
            "jitter_seconds": self.link.jitter_seconds,
            "transfer_seconds": _rounded(self.transfer_seconds),
            "transfer_seconds_with_loss": _rounded(self.transfer_seconds_with_loss),
            "incomplete_with_loss": self.incomplete_with_loss,
            "samples": self.samples,
        }


def _rounded(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 1)


def plan_links(model: DeviceModelConfig | None) -> dict[str, LinkProfile]:
    """The named link profiles, then the model's own link (if a model is given)."""
    links = {name: LinkProfile(**fields) for name, fields in LINK_PROFILES.items()}
    if model is not None:
        links[f"model {model.name}"] = model.link
    return links


def _transfer_model(image: OtaImage, model: DeviceModelConfig | None) -> DeviceModelConfig:
    """A model that takes the whole image: the image's codes, a slot its size, a hardware
    version in its range. Which key signed it does not matter to the transfer."""
    h = image.header
    return DeviceModelConfig(
        name=model.name if model is not None else "plan",
        manufacturer_code=h.manufacturer_code,
        image_type=h.image_type,
        hardware_version=h.min_hardware_version or 0,
        slot_capacity_bytes=image.size_bytes,
        reboot_seconds=model.reboot_seconds if model is not None else 0.0,
    )


def samples_per_link(size_bytes: int) -> int:
    """Devices per link and loss setting: SAMPLES_PER_LINK, fewer (at least one) when
    the copies of a large image they assemble at once would pass PLAN_MEMORY_BYTES."""
    return max(1, min(SAMPLES_PER_LINK, PLAN_MEMORY_BYTES // (2 * max(1, size_bytes))))


def transfer_times(
    data: bytes,
    image: OtaImage,
    links: dict[str, LinkProfile],
    loss: Loss,
    model: DeviceModelConfig | None,
    base: FleetConfig | None,
) -> tuple[list[LinkTiming], float]:
    """Each link's mean transfer time with and without `loss`, and the seconds the DCO
    took to store the image (11.1, idle DCO), all simulated by the parts a run uses; one
    link at a time, so that no more than `samples_per_link` * 2 devices hold a copy."""
    samples = samples_per_link(image.size_bytes)
    timings = []
    stored_seconds = 0.0
    for name, link in links.items():
        groups: list[tuple[int, LinkProfile | None, FaultConfig | None]] = [
            (samples, link, None),
            (samples, link, loss.faults()),
        ]
        config = model_fleet("plan", _transfer_model(image, model), groups, base)
        clock = VirtualClock(config.epoch_seconds)
        done, stored_seconds = clock.run(_simulate(clock, config, data))
        ids = [d for d, _ in config.device_ids()]
        clean, lossy = ids[:samples], ids[samples:]
        t = LinkTiming(name, link, samples)
        clean_times = [done[d] for d in clean if d in done]
        lossy_times = [done[d] for d in lossy if d in done]
        if clean_times:
            t.transfer_seconds = statistics.fmean(clean_times)
        if lossy_times:
            t.transfer_seconds_with_loss = statistics.fmean(lossy_times)
        t.incomplete_with_loss = len(lossy) - len(lossy_times)
        timings.append(t)
    return timings, stored_seconds


async def _simulate(
    clock: VirtualClock, config: FleetConfig, data: bytes
) -> tuple[dict[int, float], float]:
    bus = InProcessBus()
    devices = build_devices(config, flash=FlashStore())
    host = FleetHost(clock, bus, config.name, devices)
    dco = Dco(clock, bus, config.name, 1, config.dco, block_size=config.block_size_bytes)
    done: dict[int, float] = {}
    started = 0.0

    def watch(_topic: str, payload: bytes) -> None:
        try:
            frame = decode(payload)
        except WireError:
            return
        if (
            isinstance(frame, Status)
            and frame.state in _ALL_BLOCKS_IN
            and frame.device_id not in done
        ):
            done[frame.device_id] = clock.now() - started

    bus.subscribe(up_topic(config.name, "+"), watch)
    host.start()
    dco.start()
    try:
        t0 = clock.now()
        stored = await dco.update_firmware(data)
        started = clock.now()
        await asyncio.gather(
            *(
                dco.activate_firmware(d, stored.firmware_hash, originator=MAKER_USER)
                for d in devices
            )
        )
    finally:
        await dco.close()
        await bus.close()
        host.flush()
    return done, started - t0


@dataclass(slots=True)
class CampaignDays:
    """Days a campaign of `devices` large-image activations takes, by the scheduler's
    policy; None where the policy finds no room within its horizon."""

    devices: int
    per_day_without_schedule: int
    days_without_schedule: int | None
    days_alone: int | None
    days_sharing: int | None
    other_users: int
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "per_day_without_schedule": self.per_day_without_schedule,
            "days_without_schedule": self.days_without_schedule,
            "days_at_capacity_alone": self.days_alone,
            "other_users": self.other_users,
            "days_at_capacity_sharing": self.days_sharing,
            "notes": self.notes,
        }


def _calendar(cfg: SchedulerConfig, epoch: float) -> Calendar:
    # Peak windows shape the hours of a day, not how many a day releases: left out.
    return Calendar(epoch, cfg.large_images_per_day, [], cfg.peak_timezone)


def per_day_without_schedule(limits: Limits, cal: Calendar) -> int:
    """How many unscheduled large requests of one User the policy plans on one day."""
    n = 0
    while n < limits.capacity:
        decision = place_unscheduled(cal, limits, MAKER_USER, 0)
        if decision.placement is not Placement.PLANNED or decision.day != 0:
            break
        n += 1
    return n


def _schedule_days(
    limits: Limits, cal: Calendar, devices: int, owners: dict[int, int]
) -> tuple[int | None, str | None]:
    try:
        proposal = propose(cal, limits, MAKER_USER, devices, 0, None, owners)
    except AdmissionRefused as exc:
        return None, str(exc)
    days = sorted(proposal.batches)
    return days[-1] - days[0] + 1, None


def campaign_days(cfg: SchedulerConfig, epoch: float, devices: int, others: int) -> CampaignDays:
    limits = Limits.from_config(cfg)
    per_day = per_day_without_schedule(limits, _calendar(cfg, epoch))
    out = CampaignDays(devices, per_day, math.ceil(devices / per_day), None, None, others)
    out.days_alone, why = _schedule_days(limits, _calendar(cfg, epoch), devices, {})
    if why:
        out.notes.append(f"agreed schedule alone: {why}")
    shared = _calendar(cfg, epoch)
    owners: dict[int, int] = {}
    for j in range(others):
        owners[j + 1] = _OTHER_USER_BASE + j
    if others:
        # Each other User holds an agreed schedule with an equal part of every day.
        share, extra = divmod(limits.capacity, others)
        for day in range(limits.horizon_days):
            for j in range(others):
                cal_n = share + (1 if j < extra else 0)
                if cal_n:
                    shared.reserve(day, j + 1, cal_n)
    out.days_sharing, why = _schedule_days(limits, shared, devices, owners)
    if why:
        out.notes.append(f"agreed schedule sharing with {others} other User(s): {why}")
    return out


@dataclass(slots=True)
class Plan:
    file: str
    size_bytes: int
    large_threshold_bytes: int
    large: bool
    block_size: int
    blocks: int
    run_blocks: int
    runs: int
    image_processing_seconds: float
    loss: Loss
    links: list[LinkTiming]
    devices_per_day: int
    needs_agreed_schedule: bool
    schedule_reason: str
    campaign: CampaignDays | None
    estate: CampaignDays | None
    model: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "model": self.model,
            "size_bytes": self.size_bytes,
            "large_threshold_bytes": self.large_threshold_bytes,
            "large": self.large,
            "bytes_over_threshold": self.size_bytes - self.large_threshold_bytes,
            "block_size": self.block_size,
            "blocks": self.blocks,
            "run_blocks": self.run_blocks,
            "runs": self.runs,
            "image_processing_seconds": round(self.image_processing_seconds, 1),
            "loss": {
                "block_loss_rate": self.loss.block_loss_rate,
                "block_corruption_rate": self.loss.block_corruption_rate,
                "source": self.loss.source,
            },
            "links": [t.as_json() for t in self.links],
            "devices": self.devices_per_day,
            "needs_agreed_schedule": self.needs_agreed_schedule,
            "schedule_reason": self.schedule_reason,
            "campaign": None if self.campaign is None else self.campaign.as_json(),
            "estate": None if self.estate is None else self.estate.as_json(),
        }


def make_plan(
    file: str,
    data: bytes,
    image: OtaImage,
    devices: int,
    others: int,
    model: DeviceModelConfig | None,
    base: FleetConfig | None,
    loss: Loss,
) -> Plan:
    fleet = base if base is not None else _default_fleet()
    sched = fleet.scheduler
    limits = Limits.from_config(sched)
    block_size = fleet.block_size_bytes
    run_blocks = fleet.dco.run_blocks
    epoch = fleet.epoch_seconds
    size = image.size_bytes
    large = limits.is_large(size)
    links, stored_seconds = transfer_times(data, image, plan_links(model), loss, model, base)
    blocks = image.blocks(block_size)
    if not large:
        needs, why = (
            False,
            (
                f"not large ({size:,} bytes, at most {limits.large_threshold_bytes:,}): MP230's"
                " daily limits do not apply"
            ),
        )
    elif devices > limits.capacity:
        needs, why = (
            True,
            (
                f"{devices:,} a day is more than the DCC's capacity of {limits.capacity:,} large"
                " images a day: no schedule releases that many in one day"
            ),
        )
    elif devices > limits.user_daily_limit:
        needs, why = (
            True,
            (
                f"{devices:,} a day is more than {limits.user_daily_limit:,} large images a day"
                " for one User without a schedule"
            ),
        )
    else:
        needs, why = (
            False,
            (
                f"{devices:,} a day is within {limits.user_daily_limit:,} large images a day for"
                " one User without a schedule"
            ),
        )
    return Plan(
        file=file,
        size_bytes=size,
        large_threshold_bytes=limits.large_threshold_bytes,
        large=large,
        block_size=block_size,
        blocks=blocks,
        run_blocks=run_blocks,
        runs=math.ceil(blocks / run_blocks),
        image_processing_seconds=stored_seconds,
        loss=loss,
        links=links,
        devices_per_day=devices,
        needs_agreed_schedule=needs,
        schedule_reason=why,
        campaign=campaign_days(sched, epoch, devices, others) if large else None,
        estate=campaign_days(sched, epoch, ESTATE_DEVICES, others) if large else None,
        model=None if model is None else model.name,
    )


def _default_fleet() -> FleetConfig:
    return model_fleet("plan", _placeholder_model(), [(1, None, None)])


def _placeholder_model() -> DeviceModelConfig:
    return DeviceModelConfig(
        name="plan", manufacturer_code=0, image_type=0, hardware_version=0, slot_capacity_bytes=1
    )


def render(plan: Plan) -> str:
    """The plan for a person."""
    p = plan
    over = p.size_bytes - p.large_threshold_bytes
    if p.large:
        size_line = f"large: yes, {over:,} bytes over the {p.large_threshold_bytes:,} threshold"
    else:
        size_line = (
            f"large: no, {-over:,} bytes under the {p.large_threshold_bytes:,} threshold"
            if over
            else f"large: no, exactly {p.large_threshold_bytes:,} bytes (large is over it)"
        )
    lines = [
        f"{p.file}: {p.size_bytes:,} bytes" + (f", for model {p.model}" if p.model else ""),
        f"  {size_line} (MP230)",
        f"  blocks: {p.blocks:,} of {p.block_size:,} bytes, in {p.runs:,} runs of up to"
        f" {p.run_blocks} blocks",
        f"  11.1 at an idle DCO: {p.image_processing_seconds:,.1f} s to store",
        f"  transfer time per link (11.3 start to all blocks in, mean of {p.links[0].samples}"
        f" devices; loss {p.loss.block_loss_rate:g}"
        + (f", corruption {p.loss.block_corruption_rate:g}" if p.loss.block_corruption_rate else "")
        + f", {p.loss.source}):",
    ]
    width = max(len(t.name) for t in p.links)
    for t in p.links:
        lossy = _seconds(t.transfer_seconds_with_loss)
        if t.incomplete_with_loss:
            lossy += f" ({t.incomplete_with_loss} of {t.samples} did not complete)"
        lines.append(
            f"    {t.name:<{width}}  {t.link.bandwidth_bps:>9,.0f} bit/s, latency"
            f" {t.link.latency_seconds:g} s: {_seconds(t.transfer_seconds)} without loss,"
            f" {lossy} with"
        )
    lines.append(
        f"  {p.devices_per_day:,} devices a day: "
        + ("needs an agreed schedule" if p.needs_agreed_schedule else "no agreed schedule needed")
        + f" ({p.schedule_reason})"
    )
    for label, days in (("campaign", p.campaign), ("estate", p.estate)):
        if days is None:
            continue
        lines.append(
            f"  {label} of {days.devices:,}: {_days(days.days_without_schedule)} at"
            f" {days.per_day_without_schedule:,} a day without a schedule;"
            f" {_days(days.days_alone)} at the DCC's capacity alone;"
            f" {_days(days.days_sharing)} sharing it with {days.other_users} other User(s)"
        )
        lines.extend(f"    note: {n}" for n in days.notes)
    return "\n".join(lines)


def _seconds(x: float) -> str:
    if math.isnan(x):
        return "did not complete"
    return f"{x:,.0f} s" if x >= 100 else f"{x:,.1f} s"


def _days(n: int | None) -> str:
    return "no room within the horizon" if n is None else f"{n:,} day{'s' if n != 1 else ''}"
