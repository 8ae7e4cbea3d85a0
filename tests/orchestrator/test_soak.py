"""A soak in process: several simulated days, every fault of the device model on at
realistic rates, two Users, and each component killed and started again part-way.

Everything runs on one virtual clock with the in-process bus. A "kill" is what kill -9
does to that component's coroutines: they stop where they stand, nothing is flushed or
closed, and the bus stops delivering to it; the new instance opens the same state
directory. The DCO line stands in for the HTTP client between scheduler and DCO: a call
that the dead DCO dropped is sent again to the new one (orchestrator.dco_client does the
same over HTTP).

At the end the invariants of issue 10 must hold: every accepted request ends in exactly
one final state, each device runs what the scheduler reports for it, the counts add up,
and no device was flashed twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from dco_mock.service import Dco
from emulator.flash_journal import FlashJournal
from emulator.fleet import FleetHost, build_devices
from emulator.slots import FlashStore
from orchestrator.campaign import (
    build_scheduler,
    campaign_devices,
    campaign_summary,
    devices_by_model,
    make_images,
    submit_campaign,
)
from scheduler.requests import RequestState
from scheduler.service import Scheduler
from smets1.bus import Bus, BusCounters, Handler, InProcessBus
from smets1.clock import VirtualClock
from smets1.codes import DeviceState
from smets1.config import FleetConfig
from smets1.services import ActivationOutcome, StoredImage, VersionReading
from tests.factories import ACME

T = TypeVar("T")
A = "90-B3-D5-1F-30-01-00-00"
B = "90-B3-D5-1F-30-02-00-00"
OLD, NEW = 0x01000000, 0x02000000
DAY = 86_400.0

#: Realistic rates: a few per cent of transfers meet each fault, none meets all.
FAULTS = {
    "block_loss_rate": 0.01,
    "block_corruption_rate": 0.003,
    "hang_probability": 0.002,
    "hang_seconds": 900,
    "power_loss_during_transfer": 0.03,
    "power_loss_during_activation": 0.02,
    "power_off_seconds": 1_800,
    "boot_failure_rate": 0.01,
    "refusal_rate": 0.01,
    "offline_windows": [{"start_seconds": 3_600, "duration_seconds": 3_600, "every_seconds": DAY}],
}


def soak_config() -> FleetConfig:
    group = {"model": "acme-e1", "firmware_version": OLD, "faults": FAULTS}
    return FleetConfig.model_validate(
        {
            "name": "soak",
            "seed": 11,
            "models": [
                {
                    "name": "acme-e1",
                    "manufacturer_code": ACME,
                    "image_type": 1,
                    "hardware_version": 3,
                    "slot_capacity_bytes": 262_144,
                    "reboot_seconds": 60,
                    "link": "gprs",
                }
            ],
            "devices": [
                {**group, "count": 360, "supplier": A},
                {**group, "count": 240, "supplier": B},
            ],
            "images": [
                {
                    "name": "acme-2",
                    "manufacturer_code": ACME,
                    "image_type": 1,
                    "file_version": NEW,
                    "size_bytes": 60_000,
                    "hardware_versions": [1, 5],
                }
            ],
            "scheduler": {
                "large_image_threshold_bytes": 50_000,
                "large_images_per_day": 250,
                "user_daily_limit": 120,
                "peak_windows": [{"start_hour": 16, "end_hour": 19}],
                "users": [{"id": A, "token": "a"}, {"id": B, "token": "b"}],
            },
            "campaigns": [
                {"name": "a-scheduled", "user": A, "image": "acme-2", "schedule": "agreed",
                 "max_per_day": 90, "devices": {"model": "acme-e1"}},
                {"name": "b-day1", "user": B, "image": "acme-2",
                 "devices": {"model": "acme-e1", "count": 120}},
                {"name": "b-day2", "user": B, "image": "acme-2", "submit_after_seconds": DAY,
                 "devices": {"model": "acme-e1", "count": 120, "offset": 120}},
            ],
            "dco": {"reply_timeout_seconds": 600, "retry_initial_seconds": 120},
        }
    )  # fmt: skip


class Plug(Bus):
    """One component's connection to the shared bus; `cut()` is its death: nothing more
    reaches it, and nothing it still sends goes out."""

    def __init__(self, inner: Bus) -> None:
        self.inner = inner
        self.alive = True

    @property
    def counters(self) -> BusCounters:  # type: ignore[override]
        return self.inner.counters

    def cut(self) -> None:
        self.alive = False

    def publish(self, topic: str, payload: bytes, sent_at: float | None = None) -> None:
        if self.alive:
            self.inner.publish(topic, payload)

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        def guarded(topic: str, payload: bytes) -> None:
            if self.alive:
                handler(topic, payload)

        self.inner.subscribe(topic_filter, guarded)

    async def close(self) -> None:
        self.cut()


class DcoLine:
    """The scheduler's line to whichever DCO is up: a call the dead DCO dropped goes
    again to the next one, as the HTTP client does after a refused connection."""

    def __init__(self) -> None:
        self.dco: Dco | None = None
        self.up = asyncio.Event()
        self.calls: set[asyncio.Task[Any]] = set()
        self.resent = 0

    def connect(self, dco: Dco) -> None:
        self.dco = dco
        self.up.set()

    def drop(self) -> None:
        self.up.clear()
        self.dco = None
        for t in self.calls:
            t.cancel()

    async def _call(self, fn: Callable[[Dco], Awaitable[T]]) -> T:
        while True:
            await self.up.wait()
            assert self.dco is not None
            inner = asyncio.ensure_future(fn(self.dco))
            self.calls.add(inner)
            try:
                await asyncio.wait([inner])
            finally:
                self.calls.discard(inner)
                inner.cancel()
            if not inner.cancelled():
                return inner.result()
            self.resent += 1

    async def update_firmware(self, image: bytes) -> StoredImage:
        return await self._call(lambda d: d.update_firmware(image))

    async def activate_firmware(
        self,
        device_id: int,
        firmware_hash: bytes,
        execution_time: float = 0.0,
        originator: int | None = None,
    ) -> ActivationOutcome:
        return await self._call(
            lambda d: d.activate_firmware(device_id, firmware_hash, execution_time, originator)
        )

    async def read_firmware_version(self, device_id: int) -> VersionReading:
        return await self._call(lambda d: d.read_firmware_version(device_id))


class Plant:
    """Scheduler, DCO and fleet on one clock and bus, each of which can be killed."""

    def __init__(self, cfg: FleetConfig, state: Path, clock: VirtualClock) -> None:
        self.cfg = cfg
        self.state = state
        self.clock = clock
        self.bus = InProcessBus()
        self.images = make_images(cfg)
        self.by_model = devices_by_model(cfg)
        self.line = DcoLine()
        self.kills: Counter[str] = Counter()
        #: Fault counters of every fleet host that ran (a restart starts its own).
        self.faults: Counter[str] = Counter()

    # -- fleet --------------------------------------------------------------------------

    def start_fleet(self) -> None:
        """The fleet on its flash journal: factory state the first time, else what the
        journal holds."""
        self.fleet_plug = Plug(self.bus)
        flash = FlashStore()
        devices = build_devices(self.cfg, flash=flash)
        self.journal = FlashJournal.open(self.state / "fleet", devices, flash, fleet=self.cfg.name)
        self.host = FleetHost(
            self.clock, self.fleet_plug, self.cfg.name, devices, journal=self.journal
        )
        self.host.start()

    def kill_fleet(self) -> None:
        """Its devices lose RAM (what was not yet committed) and the process its lock; the
        dead host's timers may still fire, but nothing they do is written or sent."""
        self.kills["fleet"] += 1
        self.faults.update(self.host.counters.faults)
        self.fleet_plug.cut()
        self.host.journal = None
        self.journal.close()

    # -- DCO ----------------------------------------------------------------------------

    def start_dco(self) -> None:
        self.dco_plug = Plug(self.bus)
        self.dco = Dco(
            self.clock,
            self.dco_plug,
            self.cfg.name,
            1,
            self.cfg.dco,
            state_dir=self.state / "dco",
            block_size=self.cfg.block_size_bytes,
        )
        self.dco.start()
        self.line.connect(self.dco)

    def kill_dco(self) -> None:
        self.kills["dco"] += 1
        self.dco_plug.cut()
        self.line.drop()  # its coroutines stop where they stand; nothing is closed

    # -- scheduler ----------------------------------------------------------------------

    def start_scheduler(self) -> None:
        s = build_scheduler(self.cfg, self.clock, self.line, self.state / "sched", self.by_model)
        self.scheduler = s
        self.sched_tasks = [
            asyncio.create_task(s.run(deliver_callbacks=False)),
            *(asyncio.create_task(self._submit(s, c)) for c in self.cfg.campaigns),
        ]

    async def _submit(self, s: Scheduler, c: Any) -> None:
        await self.clock.sleep_until(self.clock.epoch + c.submit_after_seconds)
        ids = campaign_devices(c, self.by_model, self.cfg)
        await submit_campaign(s, c, self.images[c.image], ids)

    async def kill_scheduler(self) -> None:
        self.kills["scheduler"] += 1
        # The release coroutines and callbacks die with it; the store is not flushed.
        tasks = [*self.sched_tasks, *self.scheduler._tasks._tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def submissions_done(self) -> None:
        await asyncio.gather(*self.sched_tasks[1:])

    async def until(self, what: Callable[[], bool], step: float = 30.0) -> None:
        """Until `what` holds, looked at every `step` simulated seconds."""
        while not what():
            await self.clock.sleep(step)


def test_soak_days_of_faults_two_users_and_a_restart_of_each_component(tmp_path: Path) -> None:
    cfg = soak_config()
    clock = VirtualClock()
    plant = Plant(cfg, tmp_path, clock)

    async def main() -> dict[str, Any]:
        plant.start_fleet()
        plant.start_dco()
        plant.start_scheduler()
        epoch = clock.epoch
        # Mid-transfer on day 0, between B's campaigns, then the DCO on day 1.
        await clock.sleep_until(epoch + 0.45 * DAY)
        await plant.until(lambda: plant.dco.counters.in_flight > 0)
        await plant.kill_scheduler()
        await clock.sleep(600)
        plant.start_scheduler()
        await clock.sleep_until(epoch + 1.3 * DAY)
        await plant.until(lambda: plant.dco.counters.in_flight > 0)
        plant.kill_dco()
        await clock.sleep(900)
        plant.start_dco()
        # The fleet, on day 2 with transfers and activations under way.
        await clock.sleep_until(epoch + 2.4 * DAY)
        await plant.until(lambda: plant.dco.counters.in_flight > 0)
        plant.kill_fleet()
        await clock.sleep(300)
        plant.start_fleet()
        await plant.submissions_done()
        await plant.scheduler.wait_idle()
        s = plant.scheduler
        summary = campaign_summary(s, cfg, clock.now() - epoch, plant.images).model_dump()
        await plant.kill_scheduler()
        await s.close()
        await plant.dco.close()
        plant.journal.close()
        return summary

    summary = clock.run(main())
    s = plant.scheduler
    devices = plant.host.devices
    assert plant.kills == {"scheduler": 2, "dco": 1, "fleet": 1}
    assert plant.journal.loaded_devices > 400  # the restarted fleet came back from flash
    assert plant.line.resent > 0, "the DCO died with no call open: the restart proved nothing"
    assert summary["simulated_days"] >= 3

    # Every accepted request ends in exactly one final state; no device has two.
    states = Counter(r.state for r in s.requests)
    final = {RequestState.DONE, RequestState.FAILED, RequestState.HELD, RequestState.CANCELLED}
    assert set(states) <= final, states
    by_device = Counter(r.device_id for r in s.requests)
    assert max(by_device.values()) == 1
    assert len(s.requests) + summary["refused"] == 600

    # The counts add up.
    done, failed = states[RequestState.DONE], states[RequestState.FAILED]
    assert summary["requests"] == len(s.requests)
    assert summary["images_activated"] == done
    assert sum(summary["failed"].values()) == failed
    assert summary["trt_met"] + summary["trt_missed"] == done + failed
    assert summary["held_for_schedule"] == states[RequestState.HELD]
    assert summary["unfinished"] == 0

    # Each device runs what the scheduler says of it.
    report = {r.device_id: r for r in s.requests}
    for device_id, dev in devices.items():
        req = report.get(device_id)
        running = dev.active.file_version
        if req is not None and req.state is RequestState.DONE:
            assert running == NEW, f"{device_id:016X}: done, but runs {running:08X}"
            assert req.running_version == NEW
        else:
            assert running == OLD, f"{device_id:016X}: {req and req.state} but runs {running:08X}"

    # No device was flashed twice: its flash counts one activation if it runs the image.
    assert all(d.activations == (d.active.file_version == NEW) for d in devices.values())
    assert states[RequestState.DONE] > 400
    # The faults were really on.
    faults = plant.faults + plant.host.counters.faults
    assert all(
        faults[k] > 0
        for k in (
            "blocks_lost",
            "blocks_corrupted",
            "power_losses",
            "hangs",
            "refusals",
            "boot_failures",
        )
    ), faults
    assert summary["failed"], "no request failed: the faults were too kind to prove anything"
    assert DeviceState.ACTIVE.name.lower() in plant.host.state_counts()
