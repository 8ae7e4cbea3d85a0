"""The DCO's Prometheus metrics, read from its counters at scrape time (smets1.metrics)."""

from __future__ import annotations

from collections.abc import Callable

from dco_mock.background_stats import Tally
from dco_mock.service import Dco
from smets1.metrics import Metric


def _by_kind(read: Callable[[Tally], int]) -> Callable[[Dco], dict[str, int]]:
    """A background count by request kind (none while the DCO carries no background)."""

    def by_kind(d: Dco) -> dict[str, int]:
        if d.background is None:
            return {}
        stats = d.background.stats
        return {name: read(t) for name, t in zip(stats.kind_names, stats.kinds, strict=True)}

    return by_kind


DCO_METRICS: tuple[Metric[Dco], ...] = (
    Metric("counter", "dco_transfers_started", "11.3 transfers started",
           lambda d: d.counters.transfers_started),
    Metric("counter", "dco_transfers_ok", "11.3 transfers that activated",
           lambda d: d.counters.transfers_ok),
    Metric("counter", "dco_transfers_failed", "11.3 transfers that failed",
           lambda d: sum(d.counters.transfers_failed.values())),
    Metric("histogram", "dco_transfer_simulated_seconds",
           "11.3 transfers, from the INITIATE to the device's final answer, simulated seconds",
           lambda d: d.counters.transfer_seconds),
    Metric("gauge", "dco_transfers_in_flight", "11.3 and 11.2 in flight",
           lambda d: d.counters.in_flight),
    Metric("gauge", "dco_transfers_waiting_for_slot",
           "11.3 transfers waiting for a free transfer slot",
           lambda d: d.counters.waiting_for_slot),
    Metric("counter", "dco_blocks_sent", "Image blocks sent to devices",
           lambda d: d.counters.blocks_sent),
    Metric("counter", "dco_sent_bytes", "Image bytes sent to devices",
           lambda d: d.counters.bytes_sent),
    Metric("gauge", "dco_images_processing", "11.1 images being processed",
           lambda d: d.counters.images_processing),
    Metric("gauge", "dco_images_waiting", "11.1 images waiting for a processing worker",
           lambda d: d.counters.images_waiting),
    Metric("counter", "dco_image_processing_simulated_seconds",
           "Simulated seconds spent processing 11.1 images",
           lambda d: d.counters.image_processing_seconds),
    Metric("counter", "dco_background_requests",
           "Background service requests made (meter reads beside the firmware), by kind",
           _by_kind(lambda t: t.requests), label="kind"),
    Metric("counter", "dco_background_met",
           "Background requests answered within their target response time, by kind",
           _by_kind(lambda t: t.met), label="kind"),
    Metric("counter", "dco_background_missed",
           "Background requests answered late or not at all, by kind",
           _by_kind(lambda t: t.missed), label="kind"),
    Metric("gauge", "dco_background_open", "Background requests sent and not yet answered",
           lambda d: 0 if d.background is None else d.background.open_requests),
)  # fmt: skip
