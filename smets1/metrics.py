"""Prometheus metrics through prometheus-client: counters read at scrape time.

Each role keeps plain counters on its hot path (a dataclass field += 1) and hands
prometheus-client a `Sampler` that reads them when /metrics is scraped, so metrics cost
nothing between scrapes. Names carry the `smets1_` prefix and base units; counters end in
`_total` on the wire (prometheus-client adds it); no device id is ever a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from smets1.mqtt import MqttBus

PREFIX = "smets1_"
#: The content type of the text exposition format that generate_latest writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Sample:
    """One value to expose: `name` without the prefix (a counter's without `_total`)."""

    kind: Literal["counter", "gauge"]
    name: str
    help: str
    value: float


#: Returns the samples of one part of a process (its bus, its DCO, its clock).
Sampler = Callable[[], Iterable[Sample]]


class RoleCollector:
    """A prometheus-client collector over samplers; every sample carries `role`."""

    def __init__(self, role: str, samplers: Iterable[Sampler]) -> None:
        self.role = role
        self.samplers = list(samplers)

    def collect(self) -> Iterator[Metric]:
        for sampler in self.samplers:
            for s in sampler():
                family: CounterMetricFamily | GaugeMetricFamily
                if s.kind == "counter":
                    family = CounterMetricFamily(PREFIX + s.name, s.help, labels=["role"])
                else:
                    family = GaugeMetricFamily(PREFIX + s.name, s.help, labels=["role"])
                family.add_metric([self.role], s.value)
                yield family


def role_registry(role: str, samplers: Iterable[Sampler]) -> CollectorRegistry:
    """A registry for one process: its role's samples and the process's CPU and memory."""
    registry = CollectorRegistry()
    registry.register(RoleCollector(role, samplers))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def bus_samples(bus: MqttBus) -> Sampler:
    def sample() -> Iterator[Sample]:
        c = bus.counters
        yield Sample("counter", "bus_messages_published", "Frames published", c.messages_published)
        yield Sample(
            "counter", "bus_bytes_published", "Bytes of frames published", c.bytes_published
        )
        yield Sample("counter", "bus_messages_received", "Frames received", c.messages_received)
        yield Sample("counter", "bus_bytes_received", "Bytes of frames received", c.bytes_received)
        yield Sample(
            "counter",
            "bus_duplicates_dropped",
            "MQTT messages dropped as redeliveries",
            c.duplicates_dropped,
        )
        yield Sample(
            "counter",
            "bus_republished",
            "MQTT messages sent again after a lost connection",
            c.republished,
        )
        yield Sample("counter", "bus_connects", "Connections made to the broker", c.connects)
        yield Sample(
            "gauge",
            "bus_backlog_messages",
            "Frames accepted and not yet acknowledged by the broker",
            bus.backlog,
        )
        yield Sample(
            "gauge", "bus_connected", "1 while connected to the broker", float(bus.connected)
        )

    return sample
