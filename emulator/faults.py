"""Faults: what goes wrong with a device, and the random stream that decides when.

A `FaultModel` is part of the `DeviceProfile` (emulator.model) that every device of one
config group shares. The fleet host applies link and faults around the sans-IO `Esme`;
the device never draws a random number itself, it is told (`refuse=`, `boot_ok=`,
`power_off()`).

Every random choice comes from the device's own stream, `device_rng(seed, device_id, n)`,
made the first time it is needed, so the same config and seed repeat exactly, whatever the
sharding, and a device without faults or jitter never holds one (a `random.Random` is
2.5 KiB). The host drops the stream when the device's 11.3 settles (active, failed,
cancelled) and makes stream n+1 when it next needs one, so a fleet that has been through
a campaign is as small as before it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from smets1.config_fleet import FaultConfig, TimeWindow


@dataclass(frozen=True, slots=True)
class FaultModel:
    """`FaultConfig` as plain numbers for the hot path; see there for each field."""

    block_loss_rate: float = 0.0
    block_corruption_rate: float = 0.0
    hang_probability: float = 0.0
    hang_seconds: float = 1_800.0
    power_loss_during_transfer: float = 0.0
    power_loss_during_activation: float = 0.0
    power_off_seconds: float = 600.0
    boot_failure_rate: float = 0.0
    refusal_rate: float = 0.0
    #: (start, duration, every or 0) in seconds from the run's epoch.
    offline_windows: tuple[tuple[float, float, float], ...] = ()
    online_windows: tuple[tuple[float, float, float], ...] = ()

    @classmethod
    def from_config(cls, cfg: FaultConfig) -> FaultModel:
        return cls(
            block_loss_rate=cfg.block_loss_rate,
            block_corruption_rate=cfg.block_corruption_rate,
            hang_probability=cfg.hang_probability,
            hang_seconds=cfg.hang_seconds,
            power_loss_during_transfer=cfg.power_loss_during_transfer,
            power_loss_during_activation=cfg.power_loss_during_activation,
            power_off_seconds=cfg.power_off_seconds,
            boot_failure_rate=cfg.boot_failure_rate,
            refusal_rate=cfg.refusal_rate,
            offline_windows=_windows(cfg.offline_windows),
            online_windows=_windows(cfg.online_windows),
        )

    @property
    def has_windows(self) -> bool:
        return bool(self.offline_windows or self.online_windows)

    def offline(self, since_epoch: float) -> bool:
        """Whether the device is out of reach at this moment (seconds from the epoch)."""
        if self.online_windows and not _inside(self.online_windows, since_epoch):
            return True
        return _inside(self.offline_windows, since_epoch)


def _windows(windows: list[TimeWindow]) -> tuple[tuple[float, float, float], ...]:
    return tuple((w.start_seconds, w.duration_seconds, w.every_seconds or 0.0) for w in windows)


def _inside(windows: tuple[tuple[float, float, float], ...], since_epoch: float) -> bool:
    for start, duration, every in windows:
        t = since_epoch - start
        if t < 0:
            continue
        if every:
            t %= every
        if t < duration:
            return True
    return False


def device_rng(seed: int, device_id: int, stream: int = 0) -> random.Random:
    """The device's own random stream: fixed by (seed, device id, stream number), the same
    on every machine and Python (not `hash()`, which is salted per process)."""
    key = b"smets1-fleet device rng:%d:%d:%d" % (seed, device_id, stream)
    digest = hashlib.sha256(key).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
