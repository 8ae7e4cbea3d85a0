"""A fleet shard's Prometheus metrics, read from its counters at scrape time."""

from __future__ import annotations

from emulator.fleet import FleetHost
from smets1.codes import DeviceState
from smets1.metrics import Metric


def _by_state(host: FleetHost) -> dict[str, float]:
    """Every state with its count (zero included, so that a series does not vanish)."""
    counts = host.state_counts()
    return {s.name.lower(): counts.get(s.name.lower(), 0) for s in DeviceState}


FLEET_METRICS: tuple[Metric[FleetHost], ...] = (
    Metric("gauge", "fleet_devices", "Devices this shard serves", lambda h: len(h.devices)),
    Metric("gauge", "fleet_devices_by_state", "Devices this shard serves, by state",
           lambda h: _by_state(h), label="state"),
    Metric("counter", "fleet_frames_received", "Frames from the DCO",
           lambda h: h.counters.frames_received),
    Metric("counter", "fleet_frames_sent", "Frames to the DCO", lambda h: h.counters.frames_sent),
    Metric("counter", "fleet_blocks_received", "Image blocks that reached a device",
           lambda h: h.counters.blocks_received),
    Metric("counter", "fleet_received_block_bytes", "Image bytes that reached a device",
           lambda h: h.counters.block_bytes_received),
)  # fmt: skip
