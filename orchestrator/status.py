"""The status documents of role processes: what each serves on /health and writes at exit.

One model per document, shared by the side that writes it (orchestrator.roles) and the
side that reads it back (orchestrator.distributed merges them into one summary), so a
renamed or missing field fails validation with its name instead of a KeyError.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from dco_mock.service import DcoCounters
from emulator.fleet import FleetCounters
from smets1.mqtt import MqttBus


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClockStatus(_Doc):
    """How far a process runs behind the shared clock, in simulated seconds."""

    lag_seconds: float
    loop_lag_seconds: float
    transport_delay_seconds: float
    lagging: bool
    worst_lag_seconds: float
    lag_episodes: int
    speed: float
    simulated_time: str


class BusStatus(_Doc):
    """An MQTT bus: the connection and what went through it (frames and MQTT messages)."""

    connected: bool
    backlog: int
    messages_published: int
    bytes_published: int
    messages_delivered: int
    messages_received: int
    bytes_received: int
    duplicates_dropped: int
    foreign_messages: int
    republished: int
    mqtt_publishes: int
    mqtt_received: int
    connects: int
    connection_losses: int
    handler_errors: int
    bad_batches: int

    @classmethod
    def of(cls, bus: MqttBus) -> BusStatus:
        c = bus.counters
        return cls(
            connected=bus.connected,
            backlog=bus.backlog,
            messages_published=c.messages_published,
            bytes_published=c.bytes_published,
            messages_delivered=c.messages_delivered,
            messages_received=c.messages_received,
            bytes_received=c.bytes_received,
            duplicates_dropped=c.duplicates_dropped,
            foreign_messages=c.foreign_messages,
            republished=c.republished,
            mqtt_publishes=c.mqtt_publishes,
            mqtt_received=c.mqtt_received,
            connects=c.connects,
            connection_losses=c.connection_losses,
            handler_errors=c.handler_errors,
            bad_batches=c.bad_batches,
        )


class DcoCountersStatus(_Doc):
    images_stored: int
    transfers_started: int
    transfers_ok: int
    transfers_failed: dict[str, int]
    blocks_sent: int
    bytes_sent: int
    frames_sent: int
    frames_received: int
    bad_frames: int
    stray_frames: int
    rounds: int
    in_flight: int
    waiting_for_slot: int
    retries: int
    resumes: int

    @classmethod
    def of(cls, c: DcoCounters) -> DcoCountersStatus:
        return cls(
            images_stored=c.images_stored,
            transfers_started=c.transfers_started,
            transfers_ok=c.transfers_ok,
            transfers_failed=dict(c.transfers_failed),
            blocks_sent=c.blocks_sent,
            bytes_sent=c.bytes_sent,
            frames_sent=c.frames_sent,
            frames_received=c.frames_received,
            bad_frames=c.bad_frames,
            stray_frames=c.stray_frames,
            rounds=c.rounds,
            in_flight=c.in_flight,
            waiting_for_slot=c.waiting_for_slot,
            retries=c.retries,
            resumes=c.resumes,
        )


class FleetCountersStatus(_Doc):
    frames_received: int
    frames_sent: int
    bad_frames: int
    unknown_device_frames: int
    blocks_received: int
    block_bytes_received: int

    @classmethod
    def of(cls, c: FleetCounters) -> FleetCountersStatus:
        return cls(
            frames_received=c.frames_received,
            frames_sent=c.frames_sent,
            bad_frames=c.bad_frames,
            unknown_device_frames=c.unknown_device_frames,
            blocks_received=c.blocks_received,
            block_bytes_received=c.block_bytes_received,
        )


class DcoStatus(_Doc):
    """A DCO worker: `dco-<worker>.json`, and its /health."""

    role: Literal["dco"] = "dco"
    worker: str
    shards: int
    cpu_seconds: float
    clock: ClockStatus
    bus: BusStatus
    dco: DcoCountersStatus


class FleetStatus(_Doc):
    """A fleet shard: `fleet-<shard>.json`, and its /health."""

    role: Literal["fleet"] = "fleet"
    shard: int
    shards: int
    cpu_seconds: float
    devices: int
    clock: ClockStatus
    bus: BusStatus
    fleet: FleetCountersStatus
    device_states: dict[str, int]


class SchedulerStatus(_Doc):
    """The scheduler: `scheduler.json` at exit, holding the campaign summary it wrote
    to `summary.json` (the same keys as `smets1 run`'s summary, from scheduler.summary)."""

    role: Literal["scheduler"] = "scheduler"
    cpu_seconds: float
    wall_seconds: float
    dco_urls: list[str]
    clock: ClockStatus
    requests: dict[str, int]
    summary: dict[str, Any]
