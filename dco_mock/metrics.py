"""The DCO's Prometheus metrics, read from its counters at scrape time (smets1.metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dco_mock.service import Dco
from smets1.metrics import Metric

if TYPE_CHECKING:
    from dco_mock.http_api import Gate

DCO_METRICS: tuple[Metric[Dco], ...] = (
    Metric("counter", "dco_transfers_started", "11.3 transfers started",
           lambda d: d.counters.transfers_started),
    Metric("counter", "dco_transfers_ok", "11.3 transfers that activated",
           lambda d: d.counters.transfers_ok),
    Metric("counter", "dco_transfers_failed", "11.3 transfers that failed",
           lambda d: sum(d.counters.transfers_failed.values())),
    Metric("gauge", "dco_transfers_in_flight", "11.3 and 11.2 in flight",
           lambda d: d.counters.in_flight),
    Metric("gauge", "dco_transfers_waiting_for_slot",
           "11.3 transfers waiting for a free transfer slot",
           lambda d: d.counters.waiting_for_slot),
    Metric("counter", "dco_blocks_sent", "Image blocks sent to devices",
           lambda d: d.counters.blocks_sent),
    Metric("counter", "dco_bytes_sent", "Image bytes sent to devices",
           lambda d: d.counters.bytes_sent),
)  # fmt: skip

#: The HTTP API's guard (dco_mock.http_api.Gate).
HTTP_METRICS: tuple[Metric[Gate], ...] = (
    Metric("gauge", "dco_http_requests_in_flight", "HTTP requests being served",
           lambda g: g.in_flight),
    Metric("gauge", "dco_http_requests_max_in_flight", "HTTP requests served at most at once",
           lambda g: g.max_in_flight),
    Metric("counter", "dco_http_refused_busy",
           "HTTP requests answered 503 (Retry-After): too many in flight",
           lambda g: g.refused_busy),
    Metric("counter", "dco_http_refused_unauthenticated",
           "HTTP requests answered 401: no valid bearer token",
           lambda g: g.refused_unauthenticated),
)  # fmt: skip
