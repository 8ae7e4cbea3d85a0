"""The status documents of role processes: what each serves on /health and writes at exit.

One model per document, shared by the side that writes it (orchestrator.roles) and the
side that reads it back (orchestrator.distributed merges them into one summary), so a
renamed or missing field fails validation with its name instead of a KeyError. The
components' own counters (slotted dataclasses) travel as they are: pydantic validates
them, so no second declaration of their fields exists.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from dco_mock.service import DcoCounters
from emulator.fleet import FleetCounters
from scheduler.summary import SchedulerSummary
from smets1.lateness import LatenessMeter
from smets1.mqtt import MqttBus, MqttCounters


class _Doc(BaseModel):
    # A tolerant reader: a field a newer role adds does not stop an older launcher.
    model_config = ConfigDict(extra="ignore")


class ClockStatus(_Doc):
    """The shared clock as a process follows it (simulated time, the speed in force, the
    leader's announcement it follows) and how far the process runs behind it, in
    simulated seconds."""

    lag_seconds: float
    loop_lag_seconds: float
    transport_delay_seconds: float
    lagging: bool
    worst_lag_seconds: float
    lag_episodes: int
    speed: float
    simulated_time: str
    #: Simulated Unix seconds when the document was made.
    simulated_seconds: float = 0.0
    #: The leader's announcement in force (smets1.shared_clock): 0 before the first.
    clock_sequence: int = 0


class LatenessStatus(_Doc):
    """How late what a process handles arrives, end to end, in simulated seconds
    (smets1.lateness): MQTT messages for a DCO worker and a fleet shard (sender's queue,
    broker, network and this process's loop together), its own timers for the scheduler,
    which takes no messages."""

    #: What was measured: "messages" or "timers".
    of: Literal["messages", "timers"]
    samples: int
    worst_seconds: float
    p99_seconds: float
    mean_seconds: float
    #: The most a valid run may show (smets1.lateness.lateness_threshold_seconds).
    threshold_seconds: float
    #: How late the process's own timers fired at worst (the watch's sleep, checked
    #: every second): a process frozen or starved while no message waits for it.
    timers_worst_seconds: float = 0.0
    #: Over the threshold in the last check.
    late: bool
    #: Samples per bucket index of smets1.lateness.BUCKET_BOUNDS_SECONDS (empty ones left
    #: out), so that the launcher adds the histograms of every process exactly.
    buckets: dict[int, int]

    @classmethod
    def of_meter(
        cls,
        meter: LatenessMeter,
        threshold_seconds: float,
        late: bool,
        of: Literal["messages", "timers"] = "messages",
        timers_worst_seconds: float = 0.0,
    ) -> LatenessStatus:
        return cls(
            of=of,
            samples=meter.count,
            worst_seconds=round(meter.worst, 6),
            p99_seconds=round(meter.p99, 6),
            mean_seconds=round(meter.total / meter.count, 6) if meter.count else 0.0,
            threshold_seconds=threshold_seconds,
            timers_worst_seconds=round(timers_worst_seconds, 6),
            late=late,
            buckets={i: n for i, n in enumerate(meter.buckets) if n},
        )


class BusStatus(_Doc):
    """An MQTT bus: the connection, and what went through it (frames and MQTT messages)."""

    connected: bool
    backlog: int
    counters: MqttCounters

    @classmethod
    def of(cls, bus: MqttBus) -> BusStatus:
        return cls(connected=bus.connected, backlog=bus.backlog, counters=bus.counters)


class DcoStatus(_Doc):
    """A DCO worker: `dco-<worker>.json`, and its /health."""

    role: Literal["dco"] = "dco"
    worker: str
    shards: int
    cpu_seconds: float
    #: The most resident memory the process held so far (orchestrator.serving).
    peak_rss_bytes: int = 0
    clock: ClockStatus
    lateness: LatenessStatus
    bus: BusStatus
    #: The DCO's own counters (dco_mock.service), as they are.
    dco: DcoCounters
    #: Bytes of blocks out to devices unanswered (dco_mock.service.ByteBudget): the
    #: bound, the most at once, and the rounds that waited for room under it.
    in_flight_bytes_limit: int = 0
    in_flight_bytes_peak: int = 0
    in_flight_waits: int = 0
    #: The DCO's outbound capacity (dco_mock.pipe.Pipe.summary); None: unlimited.
    pipe: dict[str, float] | None = None


class FleetStatus(_Doc):
    """A fleet shard: `fleet-<shard>.json`, and its /health."""

    role: Literal["fleet"] = "fleet"
    shard: int
    shards: int
    cpu_seconds: float
    #: The most resident memory the process held so far (orchestrator.serving).
    peak_rss_bytes: int = 0
    devices: int
    clock: ClockStatus
    lateness: LatenessStatus
    bus: BusStatus
    #: The fleet host's own counters (emulator.fleet), as they are.
    fleet: FleetCounters
    device_states: dict[str, int]
    #: Entries into each device state since the shard's devices were built (the
    #: in-process summary's `device_transitions`, this shard's share).
    device_transitions: dict[str, int] = {}


class SpeedControlStatus(_Doc):
    """`--speed auto` (orchestrator.autospeed): the controller's state and the speeds
    it set, each with the simulated moment and the reason."""

    state: str
    speed: float
    start_speed: float
    min_speed: float
    max_speed: float
    changes: int
    ceiling: float
    floor: float
    limit: float | None = None
    ignored_reports: int = 0
    disabled_reason: str | None = None
    history: list[dict[str, Any]] = []


class SchedulerStatus(_Doc):
    """The scheduler: `scheduler.json` at exit, holding the campaign summary it wrote
    to `summary.json` (scheduler.summary: the same keys as `smets1 run`'s summary)."""

    role: Literal["scheduler"] = "scheduler"
    cpu_seconds: float
    #: The most resident memory the process held so far (orchestrator.serving).
    peak_rss_bytes: int = 0
    wall_seconds: float
    dco_urls: list[str]
    clock: ClockStatus
    lateness: LatenessStatus
    requests: dict[str, int]
    #: Times the release loop held its releases because the DCO turned 11.3s away (503,
    #: no room), and for how long in all, simulated seconds.
    releases_held: int = 0
    releases_held_seconds: float = 0.0
    summary: SchedulerSummary
    #: Requests answered (activated or failed) in each simulated hour of the campaign,
    #: for the report's timeline (orchestrator.report_data.hourly_counts).
    activations_per_hour: list[int] = []
    #: `--speed auto` only.
    speed_control: SpeedControlStatus | None = None

    def summary_document(self) -> dict[str, Any]:
        """The scheduler role's `summary.json`: the campaign summary, marked distributed,
        with the scheduler's DCO workers, wall time, clock and CPU."""
        return {
            **self.summary.model_dump(),
            "mode": "distributed",
            "dco_urls": self.dco_urls,
            "wall_seconds": self.wall_seconds,
            "clock": self.clock.model_dump(),
            "lateness": self.lateness.model_dump(exclude={"buckets"}),
            "cpu_seconds": self.cpu_seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
        }


class RoleUsage(_Doc):
    """One process of a distributed run in its summary's `roles`: what it cost and how
    far behind the shared clock it ran. The broker has no clock: its lag is None, and
    so is all of it when the launcher did not start it (--broker)."""

    #: "scheduler", "dco", "fleet" or "broker".
    role: str
    #: User + system CPU seconds of the process (its last run, if it was restarted).
    cpu_seconds: float | None
    #: The most resident memory the process held since it started (/proc VmHWM).
    peak_rss_bytes: int | None
    #: How far the process ran behind the shared clock at worst (ClockStatus), simulated s.
    worst_lag_seconds: float | None = None
    #: End-to-end lateness of what it handled (LatenessStatus), simulated s.
    lateness_worst_seconds: float | None = None
    lateness_p99_seconds: float | None = None
    lateness_samples: int | None = None

    @classmethod
    def of(cls, status: SchedulerStatus | DcoStatus | FleetStatus) -> RoleUsage:
        return cls(
            role=status.role,
            cpu_seconds=status.cpu_seconds,
            peak_rss_bytes=status.peak_rss_bytes,
            worst_lag_seconds=status.clock.worst_lag_seconds,
            lateness_worst_seconds=max(
                status.lateness.worst_seconds, status.lateness.timers_worst_seconds
            ),
            lateness_p99_seconds=status.lateness.p99_seconds,
            lateness_samples=status.lateness.samples,
        )
