"""One clock for every process of a distributed run: the scheduler leads, the rest follow.

The leader publishes a `ClockAnnouncement` (origin wall time, simulated time at that
origin, speed, the run's id and a sequence number) on `smets1/<fleet>/clock`, retained and
at QoS 1, so a process that subscribes at any time, first start or restart, gets the one
in force at once. Every process's `ScaledClock` follows it (`ScaledClock.retime`):

    leader (scheduler)  ──retained announcement──▶  broker  ──▶  follower (DCO, fleet)
          ▲                                                        │ waits for it before
          └──── SpeedRequest on smets1/<fleet>/clock/speed ◀──────  anything time-based

A change of speed is a new announcement whose origin is the moment of the change and
whose simulated time is the clock's at that moment: time goes on without a jump, only
faster or slower. Followers apply announcements of one run in sequence order and ignore
older ones (a redelivery, a retained copy after a reconnect).

Which clock a starting leader announces: the one its state folder saved (`clock.json`)
if the broker's retained announcement is of another run or missing, the retained one if
it is of the saved run (it may hold a later speed), and a new clock (simulated time is
the config's epoch now, or at `wall0` when one is given) when the state folder saved
none: a new run on a broker that served an earlier run does not inherit its clock. The
leader republishes its announcement every `REPUBLISH_WALL_SECONDS`, so a broker that
lost its retained messages has it back soon.

Errors: `ClockError` (no announcement within the wait, a bad speed) and
`ClockAnnouncementError` (bytes that do not decode), both in smets1.errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from smets1.clock import ScaledClock, to_datetime
from smets1.errors import ClockAnnouncementError, ClockError
from smets1.mqtt import MqttBus
from smets1.structs import Const, Field, Struct, binary, f64, u8, u32, u64

log = logging.getLogger("smets1.shared_clock")

#: How long a follower waits for the leader's announcement, wall seconds (by default).
FOLLOW_WAIT_SECONDS = 300.0
#: How long the leader waits to learn whether the broker holds an announcement, wall s.
LEAD_WAIT_SECONDS = 30.0
#: How often the leader publishes its announcement again, wall seconds.
REPUBLISH_WALL_SECONDS = 10.0
#: Speeds a run accepts: simulated seconds per wall second.
MAX_SPEED = 1e7
STATE_FILE = "clock.json"


def clock_topic(fleet: str) -> str:
    return f"smets1/{fleet}/clock"


def speed_topic(fleet: str) -> str:
    """Where anyone with access to the broker asks the leader for a new speed."""
    return f"smets1/{fleet}/clock/speed"


def check_speed(speed: float) -> str | None:
    """Why `speed` cannot be a clock's speed, or None."""
    if not (math.isfinite(speed) and 0 < speed <= MAX_SPEED):
        return f"expected a speed above 0 and at most {MAX_SPEED:g}, got {speed!r}"
    return None


def _speed_ok(speed: float, _: Mapping[str, Any]) -> str | None:
    return check_speed(speed)


def _finite(value: float, _: Mapping[str, Any]) -> str | None:
    return None if math.isfinite(value) and value >= 0 else f"expected a time, got {value!r}"


@binary(endian=">", error=ClockAnnouncementError)
class ClockAnnouncement(Struct):
    """The leader's clock: simulated = origin_sim + (wall - origin_wall) * speed."""

    MAGIC: ClassVar[Annotated[int, u8, Const()]] = 0xC1
    #: Names the run's clock; a new run (a fresh state folder) draws a new one.
    run_id: Annotated[int, u64]
    #: 1 for the first announcement of a run, one more for each change of speed.
    sequence: Annotated[int, u32]
    #: Unix wall seconds at which simulated time was `origin_sim`.
    origin_wall: Annotated[float, f64, Field(check=_finite)]
    origin_sim: Annotated[float, f64, Field(check=_finite)]
    speed: Annotated[float, f64, Field(check=_speed_ok)]

    def describe(self) -> str:
        return (
            f"run {self.run_id:016x} #{self.sequence}, speed {self.speed:g}, simulated "
            f"{to_datetime(self.origin_sim):%Y-%m-%d %H:%M:%S} at wall "
            f"{to_datetime(self.origin_wall):%Y-%m-%d %H:%M:%S}"
        )

    def apply(self, clock: ScaledClock) -> None:
        clock.retime(self.origin_wall, self.origin_sim, self.speed, self.sequence)


@binary(endian=">", error=ClockAnnouncementError)
class SpeedRequest(Struct):
    """Asks the leader to go on at `speed` (`smets1 clock --speed`)."""

    MAGIC: ClassVar[Annotated[int, u8, Const()]] = 0xC2
    speed: Annotated[float, f64, Field(check=_speed_ok)]


def decode_announcement(data: bytes) -> ClockAnnouncement:
    announcement, rest = ClockAnnouncement.deserialize(data)
    if rest:
        size = len(data) - len(rest)
        raise ClockAnnouncementError(
            "ClockAnnouncement", size, f"expected {size} bytes, got {len(data)}"
        )
    return announcement


class ClockFollower:
    """Follows the announcements on `smets1/<fleet>/clock`; subscribe before the bus
    starts, then `await wait(...)` before anything time-based."""

    def __init__(self, clock: ScaledClock, bus: MqttBus, fleet: str, role: str) -> None:
        self.clock = clock
        self.bus = bus
        self.topic = clock_topic(fleet)
        self.role = role
        self.current: ClockAnnouncement | None = None
        self.bad_announcements = 0
        self.joined = asyncio.Event()
        bus.measuring = False  # until the clock is the run's: see _on_announcement
        bus.subscribe(self.topic, self._on_announcement)

    def _decode(self, data: bytes) -> ClockAnnouncement | None:
        try:
            return decode_announcement(data)
        except ClockAnnouncementError as exc:
            self.bad_announcements += 1
            log.warning("%s: a clock announcement that does not decode: %s", self.role, exc)
            return None

    def _on_announcement(self, _topic: str, data: bytes) -> None:
        announcement = self._decode(data)
        if announcement is None:
            return
        current = self.current
        if (
            current is not None
            and announcement.run_id == current.run_id
            and announcement.sequence <= current.sequence
        ):
            return  # a copy of one applied already, or an older one
        self.current = announcement
        announcement.apply(self.clock)
        self.bus.measuring = True
        log.info("%s follows the clock: %s", self.role, announcement.describe())
        self.joined.set()

    async def wait(self, timeout_wall_seconds: float = FOLLOW_WAIT_SECONDS) -> ClockAnnouncement:
        """The announcement in force, once there is one; ClockError after the timeout."""
        try:
            await asyncio.wait_for(self.joined.wait(), timeout_wall_seconds)
        except TimeoutError:
            raise ClockError(
                f"no clock announcement on {self.topic} within {timeout_wall_seconds:g} s: "
                "start the scheduler (it leads the clock) on the same broker and fleet"
            ) from None
        assert self.current is not None
        return self.current


class ClockLeader:
    """Leads the clock: announces it (retained), keeps it in `state_dir`, changes speed."""

    def __init__(
        self,
        clock: ScaledClock,
        bus: MqttBus,
        fleet: str,
        state_dir: Path | None,
        *,
        wall0: float | None = None,
        named_run: bool = False,
    ) -> None:
        self.clock = clock
        #: The topics are a named run's own (--run): a clock on them that the state folder
        #: does not know is that run's from an earlier start, and it is not replaced.
        self.named_run = named_run
        self.bus = bus
        self.topic = clock_topic(fleet)
        self.state_file = None if state_dir is None else state_dir / STATE_FILE
        self.wall0 = wall0
        self.current: ClockAnnouncement | None = None
        #: What the broker held when the leader started (None: nothing).
        self.retained: ClockAnnouncement | None = None
        self.speed_requests = 0
        self._fence_topic = f"{self.topic}/fence/{secrets.token_hex(6)}"
        self._fenced = asyncio.Event()
        bus.subscribe(self.topic, self._on_announcement)
        bus.subscribe(self._fence_topic, lambda _t, _d: self._fenced.set())
        bus.subscribe(speed_topic(fleet), self._on_speed_request)

    # -- start ----------------------------------------------------------------------------

    async def start(self, timeout_wall_seconds: float = LEAD_WAIT_SECONDS) -> ClockAnnouncement:
        """Once the bus is connected: learn what the broker holds, then announce."""
        # The broker sends a retained message right after the subscription's SUBACK, so by
        # the time our own later publish on the fence topic comes back, it has come too.
        self.bus.publish(self._fence_topic, b"fence")
        try:
            await asyncio.wait_for(self._fenced.wait(), timeout_wall_seconds)
        except TimeoutError:
            raise ClockError(
                f"the broker did not answer on {self._fence_topic} within "
                f"{timeout_wall_seconds:g} s: cannot tell whether a clock runs already"
            ) from None
        announcement = self._choose()
        self._announce(announcement)
        return announcement

    def _choose(self) -> ClockAnnouncement:
        saved = self._load()
        retained = self.retained
        if self.wall0 is None and saved is not None:
            if (
                retained is not None
                and retained.run_id == saved.run_id
                and retained.sequence >= saved.sequence
            ):
                chosen = retained
            else:
                chosen = saved
            log.info("the clock goes on: %s", chosen.describe())
            if chosen.speed != self.clock.speed:
                log.info(
                    "the clock keeps its speed %g (not --speed %g): a run changes speed "
                    "with `smets1 clock --speed`",
                    chosen.speed,
                    self.clock.speed,
                )
            return chosen
        if retained is not None and self.named_run and self.wall0 is None:
            raise ClockError(
                f"{self.topic} holds the clock of a run of this name that this state folder "
                f"did not start ({retained.describe()}): to start a new run, give it a name "
                "of its own (--run, SMETS1_RUN); to resume that run, give the scheduler its "
                "state folder"
            )
        if retained is not None:
            log.info("a new clock replaces that of another run (%s)", retained.describe())
        origin_wall = time.time() if self.wall0 is None else self.wall0
        chosen = ClockAnnouncement(
            secrets.randbits(64), 1, origin_wall, self.clock.epoch, self.clock.speed
        )
        log.info("a new clock: %s", chosen.describe())
        return chosen

    # -- changes --------------------------------------------------------------------------

    def set_speed(self, speed: float) -> ClockAnnouncement:
        """Go on at `speed` from the simulated moment the clock shows now."""
        problem = check_speed(speed)
        if problem is not None:
            raise ClockError(f"speed: {problem}")
        current = self.current
        if current is None:
            raise ClockError("the clock's leader has not started")
        wall = time.time()
        sim = current.origin_sim + (wall - current.origin_wall) * current.speed
        announcement = ClockAnnouncement(current.run_id, current.sequence + 1, wall, sim, speed)
        self._announce(announcement)
        log.info("the clock changes speed: %s", announcement.describe())
        return announcement

    async def run(self) -> None:
        """Publish the announcement in force again every so often, for ever."""
        while True:
            await asyncio.sleep(REPUBLISH_WALL_SECONDS)  # wall time: the broker's memory
            if self.current is not None:
                self.bus.publish_retained(self.topic, self.current.serialize())

    def _announce(self, announcement: ClockAnnouncement) -> None:
        self._save(announcement)  # first: a leader killed now still knows its clock
        self.current = announcement
        announcement.apply(self.clock)
        self.bus.publish_retained(self.topic, announcement.serialize())

    # -- incoming -------------------------------------------------------------------------

    def _on_announcement(self, _topic: str, data: bytes) -> None:
        try:
            announcement = decode_announcement(data)
        except ClockAnnouncementError as exc:
            log.warning("a clock announcement that does not decode: %s", exc)
            return
        current = self.current
        if current is None:
            self.retained = announcement
        elif announcement != current and not (
            announcement.run_id == current.run_id and announcement.sequence < current.sequence
        ):
            log.warning(
                "another process announces a clock on %s (%s); this scheduler leads %s",
                self.topic,
                announcement.describe(),
                current.describe(),
            )

    def _on_speed_request(self, _topic: str, data: bytes) -> None:
        try:
            request, _ = SpeedRequest.deserialize(data)
            self.set_speed(request.speed)
        except (ClockAnnouncementError, ClockError) as exc:
            log.warning("a speed request refused: %s", exc)
            return
        self.speed_requests += 1

    # -- the state folder -----------------------------------------------------------------

    def _load(self) -> ClockAnnouncement | None:
        if self.state_file is None or not self.state_file.exists():
            return None
        try:
            doc = json.loads(self.state_file.read_text())
            announcement = ClockAnnouncement(
                int(doc["run_id"], 16),
                int(doc["sequence"]),
                float(doc["origin_wall"]),
                float(doc["origin_sim"]),
                float(doc["speed"]),
            )
            return decode_announcement(announcement.serialize())  # runs the checks
        except (OSError, ValueError, KeyError, TypeError, ClockAnnouncementError) as exc:
            raise ClockError(f"{self.state_file}: not a saved clock ({exc})") from None

    def _save(self, announcement: ClockAnnouncement) -> None:
        if self.state_file is None:
            return
        doc = {
            "run_id": f"{announcement.run_id:016x}",
            "sequence": announcement.sequence,
            "origin_wall": announcement.origin_wall,
            "origin_sim": announcement.origin_sim,
            "speed": announcement.speed,
        }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        os.replace(tmp, self.state_file)
