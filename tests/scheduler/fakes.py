"""A fake DcoApi and builders for the scheduler tests: no fleet, no bus, any clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from scheduler.service import Scheduler
from smets1.clock import DEFAULT_EPOCH_SECONDS, Clock, VirtualClock
from smets1.codes import DeviceState, Reason
from smets1.config_dcc import SchedulerConfig, UserConfig
from smets1.image import build_image, parse_image, seeded_body
from smets1.services import ActivationOutcome, StoredImage, VersionReading
from smets1.signing import demo_private_key
from smets1.wire import is_cancellation

T = TypeVar("T")
ACME = 0x1234
USER_A = 0x90B3_D51F_3001_0000
USER_B = 0x90B3_D51F_3002_0000
USER_C = 0x90B3_D51F_3003_0000
DESK = 0x90B3_D51F_30FF_0000
DEVICE_BASE = 0x00DB_1200_0000_0000
DAY = 86_400.0
EPOCH = DEFAULT_EPOCH_SECONDS


def devices(n: int, first: int = 1) -> list[int]:
    return [DEVICE_BASE + first + i for i in range(n)]


def image_of_size(size: int, version: int = 0x02000000, seed: int = 1) -> bytes:
    """A signed OTA file of exactly `size` bytes."""

    def build(body: bytes) -> bytes:
        return build_image(
            manufacturer_code=ACME,
            image_type=1,
            file_version=version,
            body=body,
            private_key=demo_private_key(ACME),
            hardware_versions=(1, 5),
        )

    overhead = len(build(b""))
    data = build(seeded_body(size - overhead, seed))
    assert len(data) == size
    return data


LARGE_IMAGE = image_of_size(800_000)


@dataclass
class FakeDco:
    """Answers 11.3 after `activation_seconds` (per device if given), 11.1 after
    `store_seconds`; records every call.

    A future ExecutionDateTime holds the activation until then; an 11.3 with a far-future
    one (`smets1.wire.is_cancellation`) cancels a held activation, as the DCO and the
    device do, and answers NO_TRANSFER if none is held."""

    clock: Clock
    activation_seconds: float = 600.0
    per_device_seconds: dict[int, float] = field(default_factory=dict)
    fail_devices: set[int] = field(default_factory=set)
    activations: list[tuple[int, float]] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)
    images: dict[bytes, StoredImage] = field(default_factory=dict)
    cancels: list[tuple[int, float]] = field(default_factory=list)
    #: The originator of every 11.3 (and cancellation) sent, by device.
    originators: dict[int, list[int | None]] = field(default_factory=dict)
    #: Devices whose activation is held for its ExecutionDateTime.
    scheduled: dict[int, asyncio.Event] = field(default_factory=dict)
    #: Set whenever an activation starts to be held (tests await it, never poll).
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    #: How long an 11.1 takes to be stored (the DCO's processing time), and when each
    #: 11.1 reached the DCO.
    store_seconds: float = 0.0
    stores: list[float] = field(default_factory=list)

    async def update_firmware(self, image: bytes) -> StoredImage:
        self.stores.append(self.clock.now())
        if self.store_seconds:
            await self.clock.sleep(self.store_seconds)
        parsed = parse_image(image)
        h = parsed.header
        stored = StoredImage(
            parsed.firmware_hash,
            len(image),
            h.file_version,
            h.manufacturer_code,
            h.image_type,
            parsed.blocks(1024),
            self.clock.now(),
        )
        self.images[stored.firmware_hash] = stored
        return stored

    async def activate_firmware(
        self,
        device_id: int,
        firmware_hash: bytes,
        execution_time: float = 0.0,
        originator: int | None = None,
    ) -> ActivationOutcome:
        self.originators.setdefault(device_id, []).append(originator)
        started = self.clock.now()
        if is_cancellation(execution_time, started):
            self.cancels.append((device_id, started))
            held = self.scheduled.get(device_id)
            if held is not None:
                held.set()
            return self._outcome(
                device_id,
                held is not None,
                DeviceState.CANCELLED if held else DeviceState.IDLE,
                Reason.CANCELLED if held else Reason.NO_TRANSFER,
                0,
                started,
            )
        self.activations.append((device_id, started))
        await self.clock.sleep(self.per_device_seconds.get(device_id, self.activation_seconds))
        if execution_time > self.clock.now():
            held = self.scheduled[device_id] = asyncio.Event()
            self.holding.set()
            try:
                await self.clock.timeout(execution_time - self.clock.now(), held.wait())
                return self._outcome(
                    device_id, False, DeviceState.CANCELLED, Reason.CANCELLED, 0, started
                )
            except TimeoutError:
                pass
            finally:
                del self.scheduled[device_id]
        ok = device_id not in self.fail_devices
        version = self.images[firmware_hash].file_version
        if ok:
            self.versions[device_id] = version
        return self._outcome(
            device_id,
            ok,
            DeviceState.ACTIVE if ok else DeviceState.VERIFY_FAILED,
            Reason.NONE if ok else Reason.BAD_SIGNATURE,
            version if ok else 0,
            started,
        )

    def _outcome(
        self, device_id: int, ok: bool, state: DeviceState, reason: Reason, version: int, t: float
    ) -> ActivationOutcome:
        return ActivationOutcome(
            device_id, ok, state, reason, version, 1, 1024, t, self.clock.now(), 1
        )

    async def read_firmware_version(self, device_id: int) -> VersionReading:
        return VersionReading(
            device_id,
            True,
            self.versions.get(device_id, 0x01000000),
            None,
            DeviceState.ACTIVE,
            Reason.NONE,
            self.clock.now(),
        )


def config(**kw: Any) -> SchedulerConfig:
    base: dict[str, Any] = {
        "large_images_per_day": 12_000,
        "users": [
            {"id": USER_A, "name": "a", "token": "token-a"},
            {"id": USER_B, "name": "b", "token": "token-b"},
            {"id": USER_C, "name": "c", "token": "token-c"},
            {"id": DESK, "name": "desk", "token": "token-desk", "service_desk": True},
        ],
    }
    base.update(kw)
    return SchedulerConfig.model_validate(base)


def make_scheduler(
    clock: Clock,
    cfg: SchedulerConfig | None = None,
    state_dir: Path | None = None,
    n_devices: int = 2_000,
    dco: FakeDco | None = None,
    users: list[UserConfig] | None = None,
    suppliers: Callable[[int], int | None] | None = None,
) -> tuple[Scheduler, FakeDco]:
    dco = dco or FakeDco(clock)
    s = Scheduler(
        clock,
        dco,
        cfg or config(),
        state_dir=state_dir,
        devices=set(devices(n_devices)),
        users=users or [],
        suppliers=suppliers,
    )
    return s, dco


def run_virtual(body: Callable[[VirtualClock], Awaitable[T]]) -> T:
    """Run `body(clock)` on a fresh virtual clock at the default epoch."""
    clock = VirtualClock()
    return clock.run(_wrap(body, clock))


async def _wrap(body: Callable[[VirtualClock], Awaitable[T]], clock: VirtualClock) -> T:
    return await body(clock)


async def running(s: Scheduler) -> asyncio.Task[None]:
    task = asyncio.create_task(s.run())
    await asyncio.sleep(0)
    return task


async def cut_off() -> None:
    """What a killed process does to its coroutines: each stops where it stands (no
    close(), no flush). Cancelled here rather than left for the runner to cancel, so the
    leak guard sees a test that meant it."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in others:
        t.cancel()
    await asyncio.gather(*others, return_exceptions=True)


async def stop(s: Scheduler, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await s.close()
