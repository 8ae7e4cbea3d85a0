"""A fleet shard's Prometheus samples, read from its counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from emulator.fleet import FleetHost
from smets1.metrics import Sample, Sampler


def fleet_samples(host: FleetHost) -> Sampler:
    def sample() -> Iterator[Sample]:
        c = host.counters
        yield Sample("gauge", "fleet_devices", "Devices this shard serves", len(host.devices))
        yield Sample("counter", "fleet_frames_received", "Frames from the DCO", c.frames_received)
        yield Sample("counter", "fleet_frames_sent", "Frames to the DCO", c.frames_sent)
        yield Sample(
            "counter",
            "fleet_blocks_received",
            "Image blocks that reached a device",
            c.blocks_received,
        )
        yield Sample(
            "counter",
            "fleet_block_bytes_received",
            "Image bytes that reached a device",
            c.block_bytes_received,
        )

    return sample
