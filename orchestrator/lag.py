"""How far a role process runs behind the clock it shares with the others.

Every role of a distributed run runs on a `ScaledClock` that all processes share (the
scheduler announces it: smets1.shared_clock). `LagMonitor` watches how far its process
falls behind that clock and says so in the log, on /health and in /metrics when it
cannot keep up, rather than silently stretching time.

It reports the end-to-end lateness of what the process handles too (smets1.lateness):
the MQTT bus measures each message it takes (its send time travels in the envelope), so
time spent in the broker's queue counts; the scheduler, which takes no messages, measures
its own timers. A process late by more than the run's threshold says so in its log
(once an episode), on /health (`lateness`) and in /metrics, and the launcher marks the
run invalid.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from orchestrator.autospeed import LatenessReport
from orchestrator.status import ClockStatus, LatenessStatus
from smets1.clock import ScaledClock, to_datetime
from smets1.lateness import LatenessMeter
from smets1.metrics import Metric
from smets1.mqtt import MqttBus

log = logging.getLogger("orchestrator.lag")

#: A process is lagging when it is this far behind its clock in simulated time (late
#: enough to matter to links and timeouts) and in wall time (beyond a loop's hiccup).
LAG_WARN_SIMULATED_SECONDS = 300.0
LAG_WARN_WALL_SECONDS = 0.05
LAG_CHECK_WALL_SECONDS = 1.0


class LagMonitor:
    """Runs `ScaledClock.watch_lag` and reports when the process falls behind.

    Behind means either of two things, both in simulated seconds: the event loop wakes
    late (the CPU cannot keep up), or frames wait in the MQTT bus before the broker takes
    them (the transport cannot keep up), which delays every device as much.
    """

    def __init__(
        self,
        clock: ScaledClock,
        role: str,
        bus: MqttBus | None = None,
        *,
        threshold_seconds: float = float("inf"),
        on_report: Callable[[LatenessReport], None] | None = None,
    ) -> None:
        self.clock = clock
        self.role = role
        self.bus = bus
        self.lagging = False
        self.worst_lag_seconds = 0.0
        self.lag_episodes = 0
        self.transport_delay_seconds = 0.0
        #: How late this process's own timers fire (a frozen or starved process is late
        #: here even when no message waits for it).
        self.timers = LatenessMeter()
        #: The bus's messages, or (without a bus) the timers.
        self.lateness = bus.lateness if bus is not None else self.timers
        self.threshold_seconds = threshold_seconds
        self.late = False
        self.late_episodes = 0
        #: Called every check with the recent lateness (`--speed auto`: a follower
        #: publishes it to the leader, the leader's own goes to its controller).
        self.on_report = on_report

    @property
    def lag_seconds(self) -> float:
        return max(self.clock.lag_seconds, self.transport_delay_seconds)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.clock.watch_lag(LAG_CHECK_WALL_SECONDS / 2))
            tg.create_task(self._report())

    async def _report(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_CHECK_WALL_SECONDS
            await asyncio.sleep(LAG_CHECK_WALL_SECONDS)
            speed = self.clock.speed  # the leader may change it while the run goes on
            self.timers.add((loop.time() - due) * speed)
            if self.bus is not None:
                self.transport_delay_seconds = self.bus.take_worst_delay() * speed
            recent = self._check_lateness()
            lag = self.lag_seconds
            self.worst_lag_seconds = max(self.worst_lag_seconds, lag)
            behind = lag > LAG_WARN_SIMULATED_SECONDS and lag / speed > LAG_WARN_WALL_SECONDS
            if behind and not self.lagging:
                self.lag_episodes += 1
                log.warning(
                    "%s cannot keep up: %.0f simulated s (%.2f s wall) behind its clock at "
                    "speed %g (event loop %.0f s late, MQTT publish delay %.0f s, backlog %d); "
                    "simulated time is not being stretched, so results will show it",
                    self.role,
                    lag,
                    lag / speed,
                    speed,
                    self.clock.lag_seconds,
                    self.transport_delay_seconds,
                    self.bus.backlog if self.bus is not None else 0,
                )
            elif self.lagging and not behind:
                log.info("%s caught up with its clock (lag %.1f simulated s)", self.role, lag)
            self.lagging = behind
            if self.on_report is not None:
                report = LatenessReport(self.role, recent, behind, self.clock.sequence)
                self.on_report(report)

    def _check_lateness(self) -> float:
        recent = self.lateness.take_recent_worst()
        if self.timers is not self.lateness:
            recent = max(recent, self.timers.take_recent_worst())
        late = recent > self.threshold_seconds
        if late and not self.late:
            self.late_episodes += 1
            log.warning(
                "%s: %s up to %.3f simulated s late (%.4f s wall at speed %g), over the "
                "run's threshold of %g s: this run's timings, failures and TRT outcomes "
                "cannot be trusted, and it will be marked invalid",
                self.role,
                "messages arrive or timers fire" if self.bus is not None else "timers fire",
                recent,
                recent / self.clock.speed,
                self.clock.speed,
                self.threshold_seconds,
            )
        elif self.late and not late:
            log.info("%s: on time again (%.3f simulated s late at worst)", self.role, recent)
        self.late = late
        return recent

    def lateness_status(self) -> LatenessStatus:
        return LatenessStatus.of_meter(
            self.lateness,
            self.threshold_seconds,
            self.late,
            "messages" if self.bus is not None else "timers",
            timers_worst_seconds=self.timers.worst,
        )

    def status(self) -> ClockStatus:
        now = self.clock.now()
        return ClockStatus(
            lag_seconds=round(self.lag_seconds, 3),
            loop_lag_seconds=round(self.clock.lag_seconds, 3),
            transport_delay_seconds=round(self.transport_delay_seconds, 3),
            lagging=self.lagging,
            worst_lag_seconds=round(self.worst_lag_seconds, 3),
            lag_episodes=self.lag_episodes,
            speed=self.clock.speed,
            simulated_time=to_datetime(now).isoformat(),
            simulated_seconds=round(now, 3),
            clock_sequence=self.clock.sequence,
        )


LAG_METRICS: tuple[Metric[LagMonitor], ...] = (
    Metric(
        "gauge",
        "clock_lag_simulated_seconds",
        "How far the process runs behind the shared clock, simulated seconds",
        lambda lag: lag.lag_seconds,
    ),
    Metric(
        "gauge",
        "clock_simulated_seconds",
        "Simulated time of the shared clock, Unix seconds",
        lambda lag: lag.clock.now(),
    ),
    Metric(
        "gauge",
        "clock_speed",
        "Speed of the shared clock in force, simulated seconds per wall second",
        lambda lag: lag.clock.speed,
    ),
    Metric(
        "gauge",
        "clock_sequence",
        "The leader's clock announcement this process follows (0: none yet)",
        lambda lag: lag.clock.sequence,
    ),
    Metric(
        "counter",
        "lateness_samples",
        "Messages (a scheduler: timer checks) whose end-to-end lateness was measured",
        lambda lag: lag.lateness.count,
    ),
    Metric(
        "gauge",
        "lateness_worst_simulated_seconds",
        "Worst end-to-end lateness of a message handled (a scheduler: of its timers), "
        "simulated seconds, broker queueing included",
        lambda lag: lag.lateness.worst,
    ),
    Metric(
        "gauge",
        "lateness_p99_simulated_seconds",
        "99th percentile of end-to-end lateness, simulated seconds (bucket upper bound)",
        lambda lag: lag.lateness.p99,
    ),
    Metric(
        "gauge",
        "lateness_threshold_simulated_seconds",
        "The most lateness a valid run may show, simulated seconds",
        lambda lag: lag.threshold_seconds,
    ),
)
