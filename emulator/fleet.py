"""The fleet host: the devices of one shard, on a bus and a clock, with links and faults.

It decodes frames from the shard's down topic, holds each one for the time the device's
link takes to carry it, hands it to the device and publishes the answer on the up topic.
Around the sans-IO device it plays the physical world its profile describes: offline
windows, hung links, lost and corrupted blocks, power cuts, refusals and failed boots.
Timers exist only for frames in flight, activations and power cuts, never for idle
devices.

With a `FlashJournal` the host keeps its devices' flash on disk: every device a frame,
timer or power event may have changed is marked, and the replies of one pass of the event
loop are held until one commit has written them all (group commit), so a device never
tells the DCO what its flash would not still say after a kill.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field

from emulator.device import Esme
from emulator.errors import FleetError
from emulator.faults import FaultModel, device_rng
from emulator.flash_journal import FlashJournal
from emulator.model import DeviceModel, DeviceProfile, Link
from emulator.slots import FlashStore, SlotImage
from smets1.bus import Bus, down_topic, shard_of, up_topic
from smets1.clock import Clock
from smets1.codes import DeviceState, Reason
from smets1.config import FleetConfig
from smets1.errors import Smets1Error, WireError
from smets1.signing import demo_private_key, load_verifying_key
from smets1.wire import (
    Activate,
    Blocks,
    Frame,
    Initiate,
    Query,
    Reading,
    ReadRequest,
    ReadVersion,
    decode,
)

log = logging.getLogger("emulator.fleet")

#: Bytes of framing the link carries per frame beyond the payload (IP/TCP/MQTT, roughly).
LINK_OVERHEAD_BYTES = 60


@dataclass(slots=True)
class FleetCounters:
    frames_received: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    bad_frames: int = 0
    unknown_device_frames: int = 0
    blocks_received: int = 0
    block_bytes_received: int = 0
    #: Frames that never reached their device or the DCO, by cause.
    frames_dropped: Counter[str] = field(default_factory=Counter)
    #: Faults that happened, by kind (blocks_lost, power_losses, boot_failures, ...).
    faults: Counter[str] = field(default_factory=Counter)


def build_models(config: FleetConfig) -> dict[str, DeviceModel]:
    models: dict[str, DeviceModel] = {}
    for m in config.models:
        try:
            key = (
                load_verifying_key(m.public_key)  # a public key, or a private one's half
                if m.public_key is not None
                else demo_private_key(m.manufacturer_code).public_key()
            )
        except Smets1Error as exc:
            raise FleetError(f"model {m.name}: {exc}") from exc
        models[m.name] = DeviceModel(
            name=m.name,
            manufacturer_code=m.manufacturer_code,
            image_type=m.image_type,
            hardware_version=m.hardware_version,
            slot_capacity_bytes=m.slot_capacity_bytes,
            reboot_seconds=m.reboot_seconds,
            public_key=key,
            bandwidth_bps=m.link.bandwidth_bps,
            latency_seconds=m.link.latency_seconds,
        )
    return models


def build_devices(
    config: FleetConfig, shard: int = 0, shards: int = 1, flash: FlashStore | None = None
) -> dict[int, Esme]:
    """The devices of `shard` out of `shards`, as the config numbers them."""
    models = build_models(config)
    model_cfg = {m.name: m for m in config.models}
    flash = flash if flash is not None else FlashStore()  # an empty store is falsy
    transitions: Counter[str] = Counter()  # one per fleet, shared by every profile
    profiles: dict[int, DeviceProfile] = {}
    factory: dict[int, SlotImage] = {}
    devices: dict[int, Esme] = {}
    for device_id, group in config.device_ids():
        if shards > 1 and shard_of(device_id, shards) != shard:
            continue
        profile = profiles.get(id(group))
        if profile is None:
            mc = model_cfg[group.model]
            link = group.link or mc.link
            faults = group.faults or mc.faults
            profile = profiles[id(group)] = DeviceProfile(
                models[group.model],
                Link.from_config(link),
                FaultModel.from_config(faults) if faults is not None else None,
                config.seed,
                transitions,
            )
        slot = factory.get(group.firmware_version)
        if slot is None:
            slot = factory[group.firmware_version] = SlotImage(group.firmware_version)
        if device_id in devices:
            raise FleetError(f"device id {device_id:016X} appears twice in the config")
        devices[device_id] = Esme(device_id, profile.model, slot, flash, profile)
    return devices


#: States in which a device's 11.3 has come to an end: its random stream may go.
_SETTLED = frozenset(
    {
        DeviceState.ACTIVE,
        DeviceState.ACTIVATION_FAILED,
        DeviceState.VERIFY_FAILED,
        DeviceState.CANCELLED,
    }
)


def reads_rng(seed: int, shard: int) -> random.Random:
    """The host's random stream for background reads' jitter and dice: reads never make a
    device a stream of its own, so an idle device stays as small as it was."""
    key = b"smets1-fleet reads rng:%d:%d" % (seed, shard)
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def _rng(device: Esme) -> random.Random:
    rng = device.rng
    if rng is None:
        rng = device.rng = device_rng(device.profile.seed, device.device_id, device.rng_streams)
        device.rng_streams += 1
    return rng


class FleetHost:
    """Serves the devices of one shard."""

    def __init__(
        self,
        clock: Clock,
        bus: Bus,
        fleet: str,
        devices: dict[int, Esme],
        shard: int = 0,
        journal: FlashJournal | None = None,
    ) -> None:
        self.clock = clock
        self.bus = bus
        self.devices = devices
        self.shard = shard
        self.journal = journal
        self._held: list[tuple[float, bytes]] = []  # replies waiting for the next commit
        self._answering: dict[int, Esme] = {}  # the devices that sent them
        self._commit_pending = False
        self._down = down_topic(fleet, shard)
        self._up = up_topic(fleet, shard)
        self.counters = FleetCounters()
        #: Made at the first background read that needs a die (jitter, hangs).
        self._reads_rng: random.Random | None = None

    def _read_dice(self) -> random.Random:
        rng = self._reads_rng
        if rng is None:
            seed = next(iter(self.devices.values())).profile.seed if self.devices else 0
            rng = self._reads_rng = reads_rng(seed, self.shard)
        return rng

    def start(self) -> None:
        self.bus.subscribe(self._down, self._on_payload)
        self._resume()

    def _resume(self) -> None:
        """Devices loaded from flash: a shard that stopped power-cycled them all, so an
        activation reboot starts again and a scheduled one is due as planned."""
        if self.journal is None or not self.journal.loaded_devices:
            return
        now = self.clock.now()
        for device in self.devices.values():
            if device.state in (DeviceState.ACTIVATING, DeviceState.ACTIVATION_SCHEDULED):
                self._power_on(device)
        log.info(
            "shard %d: %d device(s) resumed from flash at %s",
            self.shard,
            self.journal.loaded_devices,
            f"{now:.3f}",
        )

    # -- the link -----------------------------------------------------------------------

    def _link_down(self, device: Esme, faults: FaultModel, now: float) -> str | None:
        """Why the device's link carries nothing at `now`, or None if it is up."""
        if device.link_down_until > now:
            return "hang"
        if faults.has_windows and faults.offline(now - self.clock.epoch):
            return "offline"
        return None

    def _on_payload(self, topic: str, payload: bytes) -> None:
        c = self.counters
        c.frames_received += 1
        c.bytes_received += len(payload)
        try:
            frame = decode(payload)
        except WireError:
            c.bad_frames += 1
            return
        device = self.devices.get(frame.device_id)
        if device is None:
            c.unknown_device_frames += 1
            return
        # The downlink carries one frame at a time: this one starts when the last ends.
        # Jitter delays the frame and every frame queued behind it: the link (TCP under
        # MQTT) keeps them in order.
        link = device.profile.link
        now = self.clock.now()
        start = max(now, device.link_free_at)
        if link.jitter_seconds:
            rng = self._read_dice() if type(frame) is ReadRequest else _rng(device)
            start += rng.random() * link.jitter_seconds
        done = start + (len(payload) + LINK_OVERHEAD_BYTES) * 8 / link.bandwidth_bps
        device.link_free_at = done
        self.clock.call_at(done + link.latency_seconds / 2, self._deliver, device, frame)

    def _deliver(self, device: Esme, frame: Frame) -> None:
        c = self.counters
        if device.off_until:  # 0.0 while powered; the hot path asks nothing more
            c.frames_dropped["power_off"] += 1
            return
        faults = device.profile.faults
        if faults is not None:
            now = self.clock.now()
            down = self._link_down(device, faults, now)
            if down is None and faults.hang_probability:
                rng = self._read_dice() if type(frame) is ReadRequest else _rng(device)
                if rng.random() < faults.hang_probability:
                    device.link_down_until = now + faults.hang_seconds
                    c.faults["hangs"] += 1
                    down = "hang"
            if down is not None:
                c.frames_dropped[down] += 1
                return
        if self.journal is not None and not isinstance(frame, (Query, ReadVersion, ReadRequest)):
            self.journal.touch(device)
        reply: Frame | None
        if isinstance(frame, Blocks):
            if faults is not None and (faults.block_loss_rate or faults.block_corruption_rate):
                self._deliver_blocks_with_faults(device, frame, faults)
                return
            c.blocks_received += len(frame.crcs)
            c.block_bytes_received += len(frame.data)
            reply = device.on_blocks(frame)
        elif isinstance(frame, Query):
            reply = device.on_query(frame)
        elif isinstance(frame, Initiate):
            refuse = (
                faults is not None
                and faults.refusal_rate > 0
                and _rng(device).random() < faults.refusal_rate
            )
            if refuse:
                c.faults["refusals"] += 1
            rx_before = device.rx
            reply = device.on_initiate(frame, refuse=refuse)
            if (
                faults is not None
                and faults.power_loss_during_transfer
                and device.rx is not rx_before  # a new transfer, not a resumed one
            ):
                self._maybe_cut_during_transfer(device, faults, reply.reason)
        elif isinstance(frame, Activate):
            before = device.state
            reply, wake = device.on_activate(frame, self.clock.now())
            if wake is not None:
                self.clock.call_at(wake, self._wake, device)
            self._activation_started(device, before)
        elif isinstance(frame, ReadVersion):
            reply = device.on_read_version(frame)
        elif isinstance(frame, ReadRequest):
            reply = device.on_read(frame)
        else:
            c.bad_frames += 1  # an uplink type sent down: ignore it
            return
        if reply is not None:
            self._send(device, reply)

    def _deliver_blocks_with_faults(self, device: Esme, frame: Blocks, faults: FaultModel) -> None:
        """Lose some blocks of the run and corrupt others; hand the rest to the device as
        the runs of consecutive blocks that survived."""
        c = self.counters
        rng = _rng(device)
        bs = device.rx.block_size if device.rx is not None else 0
        n = len(frame.crcs)
        if bs == 0 or len(frame.data) > n * bs:
            device.on_blocks(frame)  # not a run the device can use anyway: let it say so
            return
        data = memoryview(frame.data)
        run_start = 0
        pieces: list[tuple[int, int]] = []  # [start, end) of surviving runs, in blocks
        corrupt: list[int] = []
        for i in range(n):
            if faults.block_loss_rate and rng.random() < faults.block_loss_rate:
                c.faults["blocks_lost"] += 1
                if i > run_start:
                    pieces.append((run_start, i))
                run_start = i + 1
            elif faults.block_corruption_rate and rng.random() < faults.block_corruption_rate:
                corrupt.append(i)
        if n > run_start:
            pieces.append((run_start, n))
        for lo, hi in pieces:
            chunk: bytes | memoryview = data[lo * bs : hi * bs]
            bad = [i for i in corrupt if lo <= i < hi]
            if bad:
                mutable = bytearray(chunk)
                for i in bad:
                    mutable[(i - lo) * bs] ^= 0xFF  # one flipped byte: the CRC-32 catches it
                c.faults["blocks_corrupted"] += len(bad)
                chunk = bytes(mutable)
            c.blocks_received += hi - lo
            c.block_bytes_received += len(chunk)
            device.on_blocks(
                Blocks(
                    frame.device_id,
                    frame.transfer_id,
                    frame.first_block + lo,
                    frame.crcs[lo:hi],
                    chunk,
                )
            )

    def _send(self, device: Esme, reply: Frame) -> None:
        faults = device.profile.faults
        if faults is not None:
            down = self._link_down(device, faults, self.clock.now())
            if down is not None:
                self.counters.frames_dropped[down] += 1
                return
        self.counters.frames_sent += 1
        payload = reply.serialize()
        # Uplink frames are small; they cost the link's latency only. A background read's
        # answer is as large as its kind says: it costs its bytes at the link's rate too.
        link = device.profile.link
        delay = link.latency_seconds / 2
        if type(reply) is Reading:
            delay += (len(payload) + LINK_OVERHEAD_BYTES) * 8 / link.bandwidth_bps
            if link.jitter_seconds:
                delay += self._read_dice().random() * link.jitter_seconds
        elif link.jitter_seconds:
            delay += _rng(device).random() * link.jitter_seconds
        if device.rng is not None and device.state in _SETTLED:
            device.rng = None
        if self.journal is not None and self.journal.changed(device):
            # Said only once the flash that backs it is written (see `_commit`).
            self._answering[device.device_id] = device
            self._held.append((delay, payload))
            if not self._commit_pending:
                self._commit_pending = True
                asyncio.get_running_loop().call_soon(self._commit)
            return
        self.clock.call_later(delay, self.bus.publish, self._up, payload)

    def _commit(self) -> None:
        """Write what changed in this pass of the loop, then send the replies held."""
        self._commit_pending = False
        held, self._held = self._held, []
        answering, self._answering = self._answering, {}
        journal = self.journal
        assert journal is not None
        try:
            journal.commit(answering.values())
        except OSError as exc:
            # Unsaid is safe: the DCO asks again and the device answers from its flash.
            log.error(
                "shard %d: flash journal write failed (%s); %d repl(ies) dropped",
                self.shard,
                exc,
                len(held),
            )
            return
        for delay, payload in held:
            self.clock.call_later(delay, self.bus.publish, self._up, payload)

    def flush(self) -> None:
        """Write whatever is pending (at a clean stop)."""
        if self.journal is not None and self.journal.dirty:
            self.journal.commit()

    # -- activation and power -------------------------------------------------------------

    def _wake(self, device: Esme) -> None:
        if self.journal is not None:
            self.journal.touch(device)
        faults = device.profile.faults
        boot_ok = True
        before = device.state
        if (
            faults is not None
            and faults.boot_failure_rate
            and before is DeviceState.ACTIVATING
            and device.timer_due(self.clock.now())
        ):
            boot_ok = _rng(device).random() >= faults.boot_failure_rate
            if not boot_ok:
                self.counters.faults["boot_failures"] += 1
        reply, wake = device.on_timer(self.clock.now(), boot_ok)
        if wake is not None:
            self.clock.call_at(wake, self._wake, device)
        self._activation_started(device, before)
        if reply is not None:
            self._send(device, reply)

    def _activation_started(self, device: Esme, before: DeviceState) -> None:
        """If the device has just begun its activation reboot, maybe cut its power."""
        faults = device.profile.faults
        if (
            faults is None
            or not faults.power_loss_during_activation
            or before is DeviceState.ACTIVATING
            or device.state is not DeviceState.ACTIVATING
        ):
            return
        rng = _rng(device)
        if rng.random() < faults.power_loss_during_activation:
            at = rng.random() * device.model.reboot_seconds
            self.clock.call_later(at, self._power_cut, device, faults.power_off_seconds)

    def _maybe_cut_during_transfer(self, device: Esme, faults: FaultModel, reason: Reason) -> None:
        rx = device.rx
        if reason is not Reason.NONE or rx is None or device.state is not DeviceState.RECEIVING:
            return
        rng = _rng(device)
        if rng.random() >= faults.power_loss_during_transfer:
            return
        # Somewhere in what is left of the transfer, at the link's speed.
        left_bytes = (rx.block_count - rx.received) * rx.block_size
        at = rng.random() * left_bytes * 8 / device.profile.link.bandwidth_bps
        self.clock.call_later(at, self._power_cut, device, faults.power_off_seconds)

    def _power_cut(self, device: Esme, off_seconds: float) -> None:
        """Cut the device's power now (tests call this too) and restore it later."""
        if not device.powered:
            return
        device.power_off(self.clock.now())
        self.counters.faults["power_losses"] += 1
        self.clock.call_later(off_seconds, self._power_on, device)

    def power_cut(self, device_id: int, off_seconds: float) -> None:
        self._power_cut(self.devices[device_id], off_seconds)

    def _power_on(self, device: Esme) -> None:
        if self.journal is not None:
            self.journal.touch(device)
        wake = device.power_on(self.clock.now())
        if wake is not None:
            self.clock.call_at(wake, self._wake, device)

    # -- what the summary shows ---------------------------------------------------------

    def state_counts(self) -> Counter[str]:
        return Counter(d.state.name.lower() for d in self.devices.values())

    def transitions(self) -> Counter[str]:
        """Entries into each state since the fleet was built."""
        seen: dict[int, Counter[str]] = {}
        for d in self.devices.values():
            t = d.profile.transitions
            seen.setdefault(id(t), t)
        total: Counter[str] = Counter()
        for t in seen.values():
            total.update(t)
        return total
