"""Config of background traffic (issue 16): the ordinary service requests the DCO carries
for the whole fleet beside firmware, each counted as met or missed against its target.

Off unless the config has a `background:` section; `background: {}` turns it on with the
defaults below (about four reads a device a day, peaks in the morning and the evening).

    background:
      kinds:
        read_registers: {per_device_per_day: 2, request_bytes: 64, response_bytes: 96,
                         target_seconds: 30}
        read_profile: {per_device_per_day: 1, request_bytes: 64, response_bytes: 1536,
                       target_seconds: 60}
      hourly_weights: [1, 1, 1, 1, 1, 2, 4, 6, 6, 4, 3, 3, 3, 3, 3, 3, 4, 6, 7, 7, 5, 3, 2, 1]
      max_open_requests: 10000
      give_up_seconds: 3600
      sample_share: 1
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from smets1.codes import ReadKind
from smets1.config_types import FieldError, Strict
from smets1.wire import READ_REQUEST_MIN_BYTES, READING_MIN_BYTES

HOURS_A_DAY = 24
#: The largest frame a ReadRequest or Reading may be (its padding or data has a u16 length).
MAX_READ_FRAME_BYTES = 65_535
#: Requests a device a day, one kind, at most: one a second.
MAX_PER_DEVICE_PER_DAY = 86_400.0

#: The default daily profile, by hour of day (UK local time): quiet at night, a morning
#: peak (07:00-09:00) and a higher evening peak (17:00-20:00), as a household's use is.
DEFAULT_HOURLY_WEIGHTS: tuple[float, ...] = (
    1, 1, 1, 1, 1, 2, 4, 6, 6, 4, 3, 3, 3, 3, 3, 3, 4, 6, 7, 7, 5, 3, 2, 1,
)  # fmt: skip

#: The names a kind goes by in a config: its ReadKind in lower case.
KIND_NAMES: dict[str, ReadKind] = {k.name.lower(): k for k in ReadKind}


class RequestKindConfig(Strict):
    """One kind of ordinary service request: how many, how large, how fast it must be."""

    #: Requests of this kind a device a day, on average (spread by `hourly_weights`).
    per_device_per_day: float = Field(ge=0, le=MAX_PER_DEVICE_PER_DAY)
    #: The request's frame on the link, header included.
    request_bytes: int = Field(ge=READ_REQUEST_MIN_BYTES, le=MAX_READ_FRAME_BYTES)
    #: The answer's frame on the link, header included.
    response_bytes: int = Field(ge=READING_MIN_BYTES, le=MAX_READ_FRAME_BYTES)
    #: Met when the answer reaches the DCO within this many seconds of the request.
    target_seconds: float = Field(gt=0)


def _default_kinds() -> dict[str, RequestKindConfig]:
    return {
        "read_registers": RequestKindConfig(
            per_device_per_day=2, request_bytes=64, response_bytes=96, target_seconds=30
        ),
        "read_daily_log": RequestKindConfig(
            per_device_per_day=1, request_bytes=64, response_bytes=256, target_seconds=60
        ),
        "read_profile": RequestKindConfig(
            per_device_per_day=1, request_bytes=64, response_bytes=1_536, target_seconds=60
        ),
    }


class BackgroundConfig(Strict):
    """Background traffic: ordinary service requests for every device of the fleet."""

    #: The kinds carried, by name (read_registers, read_daily_log, read_profile,
    #: read_event_log), each with its rate, sizes and target.
    kinds: dict[str, RequestKindConfig] = Field(default_factory=_default_kinds)
    #: 24 weights, one an hour from 00:00 (UK local time: `scheduler.peak_timezone`), that
    #: spread each day's requests over the day; only their proportions count.
    hourly_weights: tuple[float, ...] = DEFAULT_HOURLY_WEIGHTS
    #: Requests the DCO holds open at once; beyond it a new request waits its turn at the
    #: DCO (its wait counts in its latency). A limit of its own, not the transfer slots of
    #: `dco.max_concurrent_transfers`: see the README's "Background traffic".
    max_open_requests: int = Field(10_000, gt=0, le=10_000_000)
    #: A request not answered this long after it was made is given up (missed, unanswered).
    give_up_seconds: float = Field(3_600.0, gt=0)
    #: Carry this share of the fleet's requests (1: every one). Below 1 the DCO makes a
    #: random sample of them (each request of the whole traffic kept with this
    #: probability, still a Poisson process), `max_open_requests` applies scaled by the
    #: same share, and the counts are of the sample: its met and missed shares and
    #: latencies estimate the whole traffic's. For fleets too large to carry every read:
    #: the estate's 670,000 devices make 2.7 million a day.
    sample_share: float = Field(1.0, gt=0, le=1)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: dict[str, RequestKindConfig]) -> dict[str, RequestKindConfig]:
        if not kinds:
            raise ValueError(f"expected at least one kind of {', '.join(KIND_NAMES)}")
        for name in kinds:
            if name not in KIND_NAMES:
                raise FieldError(
                    (name,), f"unknown kind {name[:40]!r}; expected one of {', '.join(KIND_NAMES)}"
                )
        if not any(k.per_device_per_day > 0 for k in kinds.values()):
            raise ValueError("every kind has per_device_per_day 0: expected some requests")
        return kinds

    @field_validator("hourly_weights")
    @classmethod
    def _a_day_of_weights(cls, weights: tuple[float, ...]) -> tuple[float, ...]:
        if len(weights) != HOURS_A_DAY:
            raise ValueError(
                f"expected {HOURS_A_DAY} weights, one an hour from 00:00, got {len(weights)}"
            )
        for hour, w in enumerate(weights):
            if w < 0:
                raise FieldError((hour,), f"expected a weight of 0 or more, got {w}")
        if sum(weights) <= 0:
            raise ValueError("expected some hour with a weight above 0, got all 0")
        return weights

    @model_validator(mode="after")
    def _give_up_after_targets(self) -> BackgroundConfig:
        longest = max(k.target_seconds for k in self.kinds.values())
        if self.give_up_seconds < longest:
            raise FieldError(
                ("give_up_seconds",),
                f"expected at least the longest target_seconds ({longest:g}),"
                f" got {self.give_up_seconds:g}",
            )
        return self

    @property
    def per_device_per_day(self) -> float:
        """Requests a device a day, every kind together."""
        return sum(k.per_device_per_day for k in self.kinds.values())
