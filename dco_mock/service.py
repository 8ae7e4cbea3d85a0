"""The DCO: stores images (SRV 11.1), sends and activates them (11.3), reads versions (11.2).

It implements `smets1.services.DcoApi` in process. Each 11.3 or 11.2 in flight is one
coroutine with an inbox of the frames its device sends back; nothing runs for devices
that have no request open. A lost frame is recovered by asking the device for its bitmap
and sending the runs it lacks, never by resending the whole image.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dco_mock.store import HeldImage, ImageStore
from smets1.bus import Bus, down_topic, shard_of, up_topic
from smets1.clock import Clock
from smets1.codes import DeviceState, Reason
from smets1.config import DcoConfig
from smets1.errors import WireError
from smets1.services import ActivationOutcome, StoredImage, VersionReading
from smets1.wire import (
    IMMEDIATE,
    NO_VERSION,
    Activate,
    Activation,
    Blocks,
    Frame,
    Initiate,
    Query,
    ReadVersion,
    Status,
    Version,
    decode,
)

_F = TypeVar("_F", bound=Frame)

_FINAL_ACTIVATION = frozenset(
    {DeviceState.ACTIVE, DeviceState.ACTIVATION_FAILED, DeviceState.CANCELLED}
)


@dataclass(slots=True)
class DcoCounters:
    images_stored: int = 0
    transfers_started: int = 0
    transfers_ok: int = 0
    transfers_failed: Counter[str] = field(default_factory=Counter)
    blocks_sent: int = 0
    bytes_sent: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    bad_frames: int = 0
    stray_frames: int = 0
    rounds: int = 0
    in_flight: int = 0


class _Failed(Exception):
    def __init__(self, state: DeviceState, reason: Reason) -> None:
        self.state = state
        self.reason = reason


def missing_runs(status: Status, run_blocks: int) -> list[tuple[int, int]]:
    """(first block, count) runs of the blocks the device's bitmap lacks."""
    count = status.block_count
    if status.received == 0 or len(status.bitmap) * 8 < count:
        return [(b, min(run_blocks, count - b)) for b in range(0, count, run_blocks)]
    runs: list[tuple[int, int]] = []
    bitmap = status.bitmap
    start = -1
    for i in range(status.first_missing, count):
        held = bitmap[i >> 3] >> (i & 7) & 1
        if not held and start < 0:
            start = i
        if start >= 0 and (held or i - start + 1 == run_blocks or i == count - 1):
            end = i if held else i + 1
            runs.append((start, end - start))
            start = -1
    return runs


class Dco:
    """The DCO mock on a bus."""

    def __init__(
        self,
        clock: Clock,
        bus: Bus,
        fleet: str,
        shards: int,
        config: DcoConfig,
        state_dir: Path | None = None,
        block_size: int = 1024,
    ) -> None:
        self.clock = clock
        self.bus = bus
        self.fleet = fleet
        self.shards = shards
        self.config = config
        self.block_size = block_size
        self.store = ImageStore(state_dir, block_size)
        self.counters = DcoCounters()
        self._next_transfer = 1
        self._inbox: dict[tuple[int, int], asyncio.Queue[Frame]] = {}
        self._slots = asyncio.Semaphore(config.max_concurrent_transfers)

    def start(self) -> None:
        self.bus.subscribe(up_topic(self.fleet, "+"), self._on_payload)

    async def close(self) -> None:
        self.store.close()

    # -- bus ----------------------------------------------------------------------------

    def _on_payload(self, topic: str, payload: bytes) -> None:
        self.counters.frames_received += 1
        try:
            frame = decode(payload)
        except WireError:
            self.counters.bad_frames += 1
            return
        inbox = self._inbox.get((frame.device_id, frame.transfer_id))
        if inbox is None:
            self.counters.stray_frames += 1  # an answer to a request already closed
            return
        inbox.put_nowait(frame)

    def _send(self, frame: Frame) -> None:
        payload = frame.serialize()
        self.counters.frames_sent += 1
        self.bus.publish(down_topic(self.fleet, shard_of(frame.device_id, self.shards)), payload)

    async def _receive(
        self, inbox: asyncio.Queue[Frame], kind: type[_F], timeout: float
    ) -> _F | None:
        """The next frame of `kind` within `timeout` simulated seconds, or None."""
        deadline = self.clock.now() + timeout
        while True:
            left = deadline - self.clock.now()
            if left <= 0:
                return None
            try:
                frame = await self.clock.timeout(left, inbox.get())
            except TimeoutError:
                return None
            if isinstance(frame, kind):
                return frame

    def _open(self, device_id: int) -> tuple[int, asyncio.Queue[Frame]]:
        tid = self._next_transfer
        self._next_transfer = tid % 0xFFFF_FFFF + 1
        inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self._inbox[(device_id, tid)] = inbox
        return tid, inbox

    # -- SRV 11.1 -----------------------------------------------------------------------

    async def update_firmware(self, image: bytes) -> StoredImage:
        info = self.store.store(image, self.clock.now())
        self.counters.images_stored = len(self.store.images())
        return info

    # -- SRV 11.3 -----------------------------------------------------------------------

    async def activate_firmware(
        self, device_id: int, firmware_hash: bytes, execution_time: float = IMMEDIATE
    ) -> ActivationOutcome:
        held = self.store.get(firmware_hash)
        async with self._slots:
            c = self.counters
            c.transfers_started += 1
            c.in_flight += 1
            started = self.clock.now()
            tid, inbox = self._open(device_id)
            sent = [0, 0]  # blocks, bytes
            rounds = 0
            try:
                rounds = await self._transfer(device_id, tid, inbox, held, sent)
                final = await self._activate(device_id, tid, inbox, firmware_hash, execution_time)
                ok = final.state is DeviceState.ACTIVE
                outcome = ActivationOutcome(
                    device_id,
                    ok,
                    final.state,
                    final.reason,
                    final.running_version,
                    sent[0],
                    sent[1],
                    started,
                    self.clock.now(),
                    rounds,
                )
            except _Failed as failed:
                outcome = ActivationOutcome(
                    device_id,
                    False,
                    failed.state,
                    failed.reason,
                    NO_VERSION,
                    sent[0],
                    sent[1],
                    started,
                    self.clock.now(),
                    rounds,
                )
            finally:
                del self._inbox[(device_id, tid)]
                c.in_flight -= 1
            if outcome.ok:
                c.transfers_ok += 1
            else:
                c.transfers_failed[outcome.reason.name.lower()] += 1
            return outcome

    async def _transfer(
        self,
        device_id: int,
        tid: int,
        inbox: asyncio.Queue[Frame],
        held: HeldImage,
        sent: list[int],
    ) -> int:
        """Move every block the device lacks; return the rounds it took."""
        cfg = self.config
        info = held.info
        status: Status | None = None
        for _ in range(cfg.max_rounds):
            self._send(
                Initiate(device_id, tid, info.size_bytes, held.block_size, info.firmware_hash)
            )
            status = await self._receive(inbox, Status, cfg.reply_timeout_seconds)
            if status is not None:
                break
        if status is None:
            raise _Failed(DeviceState.IDLE, Reason.TIMEOUT)
        rounds = 0
        while True:
            if status.reason is not Reason.NONE:
                raise _Failed(status.state, status.reason)
            if status.state is DeviceState.VERIFIED:
                return rounds
            if status.state is DeviceState.VERIFY_FAILED:
                raise _Failed(status.state, status.reason)
            if rounds >= cfg.max_rounds:
                raise _Failed(status.state, Reason.INCOMPLETE)
            rounds += 1
            self.counters.rounds += 1
            if not status.complete:
                for first, count in missing_runs(status, cfg.run_blocks):
                    crcs, data = held.run(first, count)
                    self._send(Blocks(device_id, tid, first, crcs, data))
                    sent[0] += count
                    sent[1] += len(data)
                    self.counters.blocks_sent += count
                    self.counters.bytes_sent += len(data)
            self._send(Query(device_id, tid))
            answer = await self._receive(inbox, Status, cfg.reply_timeout_seconds)
            if answer is not None:
                status = answer

    async def _activate(
        self,
        device_id: int,
        tid: int,
        inbox: asyncio.Queue[Frame],
        firmware_hash: bytes,
        execution_time: float,
    ) -> Activation:
        timeout = self.config.reply_timeout_seconds
        if execution_time != IMMEDIATE:
            timeout += max(0.0, execution_time - self.clock.now())
        self._send(Activate(device_id, tid, execution_time, firmware_hash))
        while True:
            answer = await self._receive(inbox, Activation, timeout)
            if answer is None:
                raise _Failed(DeviceState.VERIFIED, Reason.TIMEOUT)
            if answer.reason is not Reason.NONE or answer.state in _FINAL_ACTIVATION:
                return answer

    # -- SRV 11.2 -----------------------------------------------------------------------

    async def read_firmware_version(self, device_id: int) -> VersionReading:
        tid, inbox = self._open(device_id)
        try:
            self._send(ReadVersion(device_id, tid))
            answer = await self._receive(inbox, Version, self.config.reply_timeout_seconds)
        finally:
            del self._inbox[(device_id, tid)]
        now = self.clock.now()
        if answer is None:
            return VersionReading(
                device_id, False, NO_VERSION, None, DeviceState.IDLE, Reason.TIMEOUT, now
            )
        pending = None if answer.pending_version == NO_VERSION else answer.pending_version
        return VersionReading(
            device_id, True, answer.running_version, pending, answer.state, Reason.NONE, now
        )
