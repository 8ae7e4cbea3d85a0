"""A fleet shard's Prometheus metrics, read from its counters at scrape time."""

from __future__ import annotations

from emulator.fleet import FleetHost
from smets1.metrics import Metric

FLEET_METRICS: tuple[Metric[FleetHost], ...] = (
    Metric("gauge", "fleet_devices", "Devices this shard serves", lambda h: len(h.devices)),
    Metric("counter", "fleet_frames_received", "Frames from the DCO",
           lambda h: h.counters.frames_received),
    Metric("counter", "fleet_frames_sent", "Frames to the DCO", lambda h: h.counters.frames_sent),
    Metric("counter", "fleet_blocks_received", "Image blocks that reached a device",
           lambda h: h.counters.blocks_received),
    Metric("counter", "fleet_block_bytes_received", "Image bytes that reached a device",
           lambda h: h.counters.block_bytes_received),
)  # fmt: skip
