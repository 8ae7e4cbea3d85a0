"""Prometheus metrics through prometheus-client: counters read at scrape time.

Each role keeps plain counters on its hot path (a dataclass field += 1) and declares, as
data, which of them to expose (`Metric`: kind, name, help, how to read it); a
`RoleCollector` reads them when /metrics is scraped, so metrics cost nothing between
scrapes. Names carry the `smets1_` prefix and base units; counters end in `_total` on the
wire (prometheus-client adds it); no device id is ever a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.core import Metric as Family

from smets1.histogram import Buckets
from smets1.mqtt import MqttBus

PREFIX = "smets1_"
#: What /metrics answers with: the content type of what `generate_latest` writes.
CONTENT_TYPE = CONTENT_TYPE_LATEST

S = TypeVar("S")


#: What a Metric reads: a value, a histogram, or one value per label value.
Value = float | Buckets | Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Metric(Generic[S]):
    """One value to expose, read from a source object of type S at scrape time.

    `name` has no prefix (and a counter's no `_total`); a histogram's `read` returns its
    `Buckets`."""

    kind: Literal["counter", "gauge", "histogram"]
    name: str
    help: str
    read: Callable[[S], Value]
    #: The label of a metric whose `read` returns one value per label value (a mapping).
    label: str | None = None


#: Returns the metrics of one part of a process, each with its current value.
Sampler = Callable[[], Iterable[tuple[Metric[Any], Value]]]


def sampler(source: S, metrics: Sequence[Metric[S]]) -> Sampler:
    """Read `metrics` from `source` whenever scraped."""

    def sample() -> Iterator[tuple[Metric[Any], Value]]:
        for m in metrics:
            yield m, m.read(source)

    return sample


class RoleCollector:
    """A prometheus-client collector over samplers; every sample carries `role`."""

    def __init__(self, role: str, samplers: Iterable[Sampler]) -> None:
        self.role = role
        self.samplers = list(samplers)

    def collect(self) -> Iterator[Family]:
        for sample in self.samplers:
            for m, value in sample():
                if isinstance(value, Buckets):
                    hist = HistogramMetricFamily(PREFIX + m.name, m.help, labels=["role"])
                    hist.add_metric([self.role], value.cumulative(), value.total)
                    yield hist
                    continue
                kind = CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily
                if isinstance(value, Mapping):
                    family = kind(PREFIX + m.name, m.help, labels=["role", m.label or "key"])
                    for key, v in sorted(value.items()):
                        family.add_metric([self.role, key], v)
                else:
                    family = kind(PREFIX + m.name, m.help, labels=["role"])
                    family.add_metric([self.role], value)
                yield family


def role_registry(role: str, samplers: Iterable[Sampler]) -> CollectorRegistry:
    """A registry for one process: its role's samples and the process's CPU and memory."""
    registry = CollectorRegistry()
    registry.register(RoleCollector(role, samplers))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


BUS_METRICS: tuple[Metric[MqttBus], ...] = (
    Metric("counter", "bus_messages_published", "Frames published",
           lambda b: b.counters.messages_published),
    Metric("counter", "bus_published_bytes", "Bytes of frames published",
           lambda b: b.counters.bytes_published),
    Metric("counter", "bus_messages_received", "Frames received",
           lambda b: b.counters.messages_received),
    Metric("counter", "bus_received_bytes", "Bytes of frames received",
           lambda b: b.counters.bytes_received),
    Metric("counter", "bus_duplicates_dropped", "MQTT messages dropped as redeliveries",
           lambda b: b.counters.duplicates_dropped),
    Metric("counter", "bus_republished", "MQTT messages sent again after a lost connection",
           lambda b: b.counters.republished),
    Metric("counter", "bus_connects", "Connections made to the broker",
           lambda b: b.counters.connects),
    Metric("gauge", "bus_backlog_messages",
           "Frames accepted and not yet acknowledged by the broker", lambda b: b.backlog),
    Metric("gauge", "bus_connected", "1 while connected to the broker",
           lambda b: float(b.connected)),
)  # fmt: skip
