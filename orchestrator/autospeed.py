"""`--speed auto`: the leader slows the shared clock when a role falls behind.

Every follower (DCO worker, fleet shard) publishes a `LatenessReport` about once a wall
second on `smets1/<fleet>/lateness/<role>` (JSON, not retained): the worst end-to-end
lateness it saw since its last report, in simulated seconds, whether its event loop lags,
and the clock sequence it was following. The scheduler adds its own timers' lateness.
`SpeedController` turns those reports into speed changes, each through
`ClockLeader.set_speed` (a new announcement; time goes on without a jump):

- start conservatively (`start_speed`: a fifth of the threshold over an assumed 30 ms
  of wall-clock jitter, between floor and ceiling), because the verdict counts the worst
  lateness of the whole run: a fast start that overshoots cannot be taken back;
- decrease at once when any role's recent lateness passes `decrease_fraction` (half) of
  the threshold, or it lags: to speed x calm level / lateness (lateness grows with
  speed; at most half the speed), never below the floor; for `settle_ticks` after a
  decrease, lateness no worse than what caused it does not slow it again (frames queued
  at the old speed still drain; the verdict still counts them);
- increase slowly (x `increase_factor`) when every role heard from has stayed under
  `calm_fraction` (a fifth) of the threshold for `calm_ticks` ticks in a row, never above
  the ceiling, nor above `limit`: a step under the last speed found too fast (lateness
  has a heavy tail: a speed that was calm for seconds can still spike), which relaxes by
  a step after `relax_ticks` calm ticks at it. A role that sent no report in a tick is
  not calm (a frozen process is silent): the speed holds.

Reports made under an older clock announcement are ignored: they measure the speed that
was just left. A speed asked for by hand (`smets1 clock --speed`) ends the controller:
the run keeps the speed it was given.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.status import SpeedControlStatus
from smets1.metrics import Metric

log = logging.getLogger("orchestrator.autospeed")

AUTO = "auto"
#: Default bounds of an automatic speed, simulated seconds per wall second.
AUTO_CEILING = 1440.0
AUTO_FLOOR = 0.1
#: Wall-clock jitter a loaded machine shows at worst in calm times (start speed).
ASSUMED_WALL_JITTER_SECONDS = 0.03
#: How often the controller decides, and followers report, wall seconds.
TICK_WALL_SECONDS = 1.0


def lateness_topic(fleet: str, role: str = "+") -> str:
    return f"smets1/{fleet}/lateness/{role}"


@dataclass(frozen=True)
class LatenessReport:
    """What a follower publishes every tick."""

    role: str
    #: The worst lateness since the previous report, simulated seconds.
    worst_seconds: float
    #: Its event loop runs behind the clock.
    lagging: bool
    #: The clock announcement it follows (ClockAnnouncement.sequence).
    sequence: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> LatenessReport:
        """ValueError for anything but a well-formed report."""
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("expected a JSON object")
        role, worst, lagging, seq = (
            doc.get("role"),
            doc.get("worst_seconds"),
            doc.get("lagging"),
            doc.get("sequence"),
        )
        if not (
            isinstance(role, str)
            and isinstance(worst, int | float)
            and not isinstance(worst, bool)
            and math.isfinite(worst)
            and isinstance(lagging, bool)
            and isinstance(seq, int)
            and not isinstance(seq, bool)
        ):
            raise ValueError(f"not a lateness report: {doc!r}")
        return cls(role, max(0.0, float(worst)), lagging, seq)


@dataclass(frozen=True)
class SpeedChange:
    speed: float
    reason: str


@dataclass
class SpeedController:
    """Decides the speed from lateness reports; no I/O (the scheduler applies it)."""

    threshold_seconds: float
    ceiling: float = AUTO_CEILING
    floor: float = AUTO_FLOOR
    decrease_fraction: float = 0.5
    calm_fraction: float = 0.2
    calm_ticks: int = 5
    increase_factor: float = 1.25
    #: Calm ticks at the learnt limit before it relaxes by one step.
    relax_ticks: int = 30
    #: A step under the last speed found too fast (None: none found yet).
    limit: float | None = None
    #: Ticks after a slow-down in which lateness no worse than what caused it is
    #: excused (frames queued at the old speed still arrive).
    settle_ticks: int = 2
    settling: int = 0
    last_trigger_seconds: float = 0.0
    enabled: bool = True
    #: Set once a speed is asked for by hand.
    disabled_reason: str | None = None
    calm: int = 0
    changes: int = 0
    ignored_reports: int = 0
    roles: set[str] = field(default_factory=set)
    history: list[dict[str, Any]] = field(default_factory=list)
    _recent: dict[str, LatenessReport] = field(default_factory=dict)

    def start_speed(self) -> float:
        """Where a new clock starts: conservative, probing upward from there."""
        guess = self.calm_fraction * self.threshold_seconds / ASSUMED_WALL_JITTER_SECONDS
        return float(f"{min(self.ceiling, max(self.floor, guess)):.3g}")

    def observe(self, report: LatenessReport, current_sequence: int) -> None:
        """A report from a role (the scheduler's own timers included)."""
        if report.sequence != current_sequence:
            self.ignored_reports += 1  # measured at a speed no longer in force
            return
        self.roles.add(report.role)
        seen = self._recent.get(report.role)
        if seen is None or report.worst_seconds > seen.worst_seconds or report.lagging:
            self._recent[report.role] = report

    def disable(self, reason: str) -> None:
        if self.enabled:
            self.enabled = False
            self.disabled_reason = reason
            log.info("automatic speed off: %s", reason)

    def tick(self, speed: float) -> SpeedChange | None:
        """Once a tick: the change to make now, or None."""
        recent, self._recent = self._recent, {}
        if not self.enabled:
            return None
        worst_role = max(recent.values(), key=lambda r: r.worst_seconds, default=None)
        lagging = [r.role for r in recent.values() if r.lagging]
        high = self.decrease_fraction * self.threshold_seconds
        if worst_role is not None and (worst_role.worst_seconds > high or lagging):
            self.calm = 0
            worst = worst_role.worst_seconds
            if self.settling and worst <= self.last_trigger_seconds:
                # Right after a slow-down: what was queued at the old speed drains now.
                self.settling -= 1
                return None
            if speed <= self.floor:
                return None
            self.settling = self.settle_ticks
            self.last_trigger_seconds = worst
            factor = 0.5
            if worst > 0:
                factor = min(factor, self.calm_fraction * self.threshold_seconds / worst)
            new = max(self.floor, speed * factor)
            # Not back within a step of a speed found too fast (until `relax_ticks` calm).
            self.limit = max(self.floor, speed / self.increase_factor)
            if lagging and worst <= high:
                why = f"{', '.join(sorted(lagging))} lagging behind the clock"
            else:
                why = (
                    f"{worst_role.role} up to {worst:.3g} simulated s late, over "
                    f"{self.decrease_fraction:g} of the threshold {self.threshold_seconds:g} s"
                )
            return self._change(speed, new, why)
        quiet = worst_role is None or worst_role.worst_seconds >= (
            self.calm_fraction * self.threshold_seconds
        )
        self.settling = 0
        if quiet or not self.roles or set(recent) != self.roles:
            self.calm = 0  # something over the calm level, or a role that did not report
            return None
        self.calm += 1
        top = self.ceiling if self.limit is None else min(self.ceiling, self.limit)
        if speed >= top and self.limit is not None and self.calm >= self.relax_ticks:
            # Calm for long at the learnt limit: it may have been a passing load.
            self.limit *= self.increase_factor
            self.calm = 0
            log.info("automatic speed: the limit relaxes to %g", self.limit)
            return None
        if self.calm < self.calm_ticks or speed >= top:
            return None
        self.calm = 0
        new = min(top, speed * self.increase_factor)
        why = (
            f"every role under {self.calm_fraction:g} of the threshold for {self.calm_ticks} "
            f"ticks (worst {worst_role.worst_seconds:.3g} s)"
            if worst_role is not None
            else "calm"
        )
        return self._change(speed, new, why)

    def _change(self, speed: float, new: float, why: str) -> SpeedChange | None:
        new = float(f"{new:.3g}")
        if new == speed:
            return None
        self.changes += 1
        return SpeedChange(new, f"speed {speed:g} -> {new:g}: {why}")

    def record(self, simulated_seconds: float, speed: float, reason: str) -> None:
        self.history.append(
            {"simulated_seconds": round(simulated_seconds, 3), "speed": speed, "reason": reason}
        )

    def status(self, speed: float) -> SpeedControlStatus:
        speeds = [h["speed"] for h in self.history] or [speed]
        return SpeedControlStatus(
            state=self.state(),
            speed=speed,
            start_speed=speeds[0],
            min_speed=min(speeds),
            max_speed=max(speeds),
            changes=self.changes,
            ceiling=self.ceiling,
            floor=self.floor,
            limit=self.limit,
            ignored_reports=self.ignored_reports,
            disabled_reason=self.disabled_reason,
            history=list(self.history),
        )

    def state(self) -> str:
        if not self.enabled:
            return "off"
        return "calm" if self.calm else "holding"


SPEED_METRICS: tuple[Metric[SpeedController], ...] = (
    Metric(
        "gauge",
        "clock_speed_auto",
        "1 while `--speed auto` sets the clock's speed, 0 once it is off",
        lambda c: 1.0 if c.enabled else 0.0,
    ),
    Metric(
        "counter",
        "clock_speed_changes",
        "Changes of speed `--speed auto` made",
        lambda c: c.changes,
    ),
)
