"""The DCO's Prometheus samples, read from its counters at scrape time (smets1.metrics)."""

from __future__ import annotations

from collections.abc import Iterator

from dco_mock.service import Dco
from smets1.metrics import Sample, Sampler


def dco_samples(dco: Dco) -> Sampler:
    def sample() -> Iterator[Sample]:
        c = dco.counters
        yield Sample(
            "counter", "dco_transfers_started", "11.3 transfers started", c.transfers_started
        )
        yield Sample("counter", "dco_transfers_ok", "11.3 transfers that activated", c.transfers_ok)
        yield Sample(
            "counter",
            "dco_transfers_failed",
            "11.3 transfers that failed",
            sum(c.transfers_failed.values()),
        )
        yield Sample("gauge", "dco_transfers_in_flight", "11.3 and 11.2 in flight", c.in_flight)
        yield Sample(
            "gauge",
            "dco_transfers_waiting_for_slot",
            "11.3 transfers waiting for a free transfer slot",
            c.waiting_for_slot,
        )
        yield Sample("counter", "dco_blocks_sent", "Image blocks sent to devices", c.blocks_sent)
        yield Sample("counter", "dco_bytes_sent", "Image bytes sent to devices", c.bytes_sent)

    return sample
