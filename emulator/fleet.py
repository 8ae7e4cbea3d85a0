"""The fleet host: the devices of one shard, on a bus and a clock.

It decodes frames from the shard's down topic, holds each one for the time the device's
link takes to carry it, hands it to the device and publishes the answer on the up topic.
Timers exist only for frames in flight and for activations, never for idle devices.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from emulator.device import DeviceModel, Esme
from emulator.errors import FleetError
from emulator.slots import FlashStore, SlotImage
from smets1.bus import Bus, down_topic, shard_of, up_topic
from smets1.clock import Clock
from smets1.config import FleetConfig
from smets1.errors import Smets1Error, WireError
from smets1.signing import demo_private_key, load_public_key
from smets1.wire import Activate, Blocks, Frame, Initiate, Query, ReadVersion, decode

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
    states: Counter[str] = field(default_factory=Counter)


def build_models(config: FleetConfig) -> dict[str, DeviceModel]:
    models: dict[str, DeviceModel] = {}
    for m in config.models:
        try:
            key = (
                load_public_key(m.public_key)
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
    flash = flash or FlashStore()
    factory: dict[int, SlotImage] = {}
    devices: dict[int, Esme] = {}
    for device_id, group in config.device_ids():
        if shards > 1 and shard_of(device_id, shards) != shard:
            continue
        slot = factory.get(group.firmware_version)
        if slot is None:
            slot = factory[group.firmware_version] = SlotImage(group.firmware_version)
        if device_id in devices:
            raise FleetError(f"device id {device_id:016X} appears twice in the config")
        devices[device_id] = Esme(device_id, models[group.model], slot, flash)
    return devices


class FleetHost:
    """Serves the devices of one shard."""

    def __init__(
        self,
        clock: Clock,
        bus: Bus,
        fleet: str,
        devices: dict[int, Esme],
        shard: int = 0,
    ) -> None:
        self.clock = clock
        self.bus = bus
        self.devices = devices
        self.shard = shard
        self._down = down_topic(fleet, shard)
        self._up = up_topic(fleet, shard)
        self.counters = FleetCounters()

    def start(self) -> None:
        self.bus.subscribe(self._down, self._on_payload)

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
        m = device.model
        now = self.clock.now()
        start = max(now, device.link_free_at)
        done = start + (len(payload) + LINK_OVERHEAD_BYTES) * 8 / m.bandwidth_bps
        device.link_free_at = done
        self.clock.call_at(done + m.latency_seconds / 2, self._deliver, device, frame)

    def _deliver(self, device: Esme, frame: Frame) -> None:
        reply: Frame | None
        if isinstance(frame, Blocks):
            self.counters.blocks_received += len(frame.crcs)
            self.counters.block_bytes_received += len(frame.data)
            reply = device.on_blocks(frame)
        elif isinstance(frame, Query):
            reply = device.on_query(frame)
        elif isinstance(frame, Initiate):
            reply = device.on_initiate(frame)
        elif isinstance(frame, Activate):
            reply, wake = device.on_activate(frame, self.clock.now())
            if wake is not None:
                self.clock.call_at(wake, self._wake, device)
        elif isinstance(frame, ReadVersion):
            reply = device.on_read_version(frame)
        else:
            self.counters.bad_frames += 1  # an uplink type sent down: ignore it
            return
        if reply is not None:
            self._send(device, reply)

    def _wake(self, device: Esme) -> None:
        reply, wake = device.on_timer(self.clock.now())
        if wake is not None:
            self.clock.call_at(wake, self._wake, device)
        if reply is not None:
            self._send(device, reply)

    def _send(self, device: Esme, reply: Frame) -> None:
        self.counters.frames_sent += 1
        payload = reply.serialize()
        # Uplink frames are small; they cost the link's latency only.
        self.clock.call_later(device.model.latency_seconds / 2, self.bus.publish, self._up, payload)

    def state_counts(self) -> Counter[str]:
        return Counter(d.state.name.lower() for d in self.devices.values())
