"""How late frames arrive, end to end, in simulated seconds; and how late is too late.

Every MQTT message carries the simulated time at which its sender published it
(`smets1.mqtt.Envelope.sent_at`). The receiver takes `clock.now() - sent_at` when it
hands the frames to their handlers: the time the message waited in the sender's queue,
in the broker and on the network, and for the receiver's event loop. Nothing is taken
off: a link's own delay is modelled apart (the DCO paces its runs of blocks, the fleet
host schedules each frame's delivery after the link's transfer time from the moment it
takes the frame), so in a run that keeps up lateness is near zero, and every second of it
is a second the simulation did not intend.

`LatenessMeter` keeps the count, the worst and a fixed-bucket histogram (so a p99 costs
no memory per frame, and the histograms of several processes add up exactly).

`lateness_threshold_seconds` is the most lateness a run may show and still be valid: a
tenth of the shortest image transfer the run can time, the smallest image its devices
take over the fastest link among the devices it is for (its bandwidth, plus its
latency). A frame that late moves that transfer by a tenth at most, and the typical
transfer, and so the medians a run reports, by far less; the DCO's reply timeouts (an
hour and more) are out of its reach, so no retry, failure or TRT outcome comes from it.
Beyond it, transfer times, retries and timeouts (and so the failures, offline devices
and TRT outcomes they lead to) may be the harness's, not the fleet's. (Until this
version the threshold was a tenth of one run of blocks: a few milliseconds of wall time
at any useful speed, which no process on a shared machine keeps to.) A config may set
`max_lateness_seconds` instead.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from pathlib import Path

from smets1.config import FleetConfig
from smets1.config_dcc import ImageConfig

#: The fraction of the shortest image transfer that a run may be late by and stay valid.
LATENESS_FRACTION = 0.1
#: Upper bounds of the histogram's buckets, simulated seconds: 1 ms to about 12 days in
#: steps of 2^(1/4) (19 % apart), then everything beyond. A p99 is read as the upper bound
#: of its bucket, so it is at most 19 % high, never low.
BUCKET_BOUNDS_SECONDS: tuple[float, ...] = tuple(0.001 * 2 ** (k / 4) for k in range(121))


def _image_bytes(image: ImageConfig) -> int | None:
    if image.size_bytes is not None:
        return int(image.size_bytes)
    try:
        return Path(str(image.file)).stat().st_size
    except OSError:
        return None


def shortest_transfer_seconds(config: FleetConfig) -> float:
    """Simulated seconds the shortest image transfer of the config takes: each image over
    the links of the devices whose model it is for (same manufacturer and image type;
    every device, if it is for none), its bandwidth plus its latency; one run of blocks
    if the config has no image."""
    models = {m.name: m for m in config.models}
    best = math.inf
    for image in config.images:
        size = _image_bytes(image)
        if size is None:
            continue
        groups = [
            g
            for g in config.devices
            if models[g.model].manufacturer_code == image.manufacturer_code
            and models[g.model].image_type == image.image_type
        ] or list(config.devices)
        for g in groups:
            link = g.link or models[g.model].link
            best = min(best, link.latency_seconds + size * 8 / link.bandwidth_bps)
    if best == math.inf:
        frame_bits = config.dco.run_blocks * config.block_size_bytes * 8
        links = [g.link or models[g.model].link for g in config.devices]
        best = min((k.latency_seconds + frame_bits / k.bandwidth_bps for k in links), default=1.0)
    return best


def lateness_threshold_seconds(config: FleetConfig) -> float:
    """The worst lateness a run of `config` may show and still be valid."""
    if config.max_lateness_seconds is not None:
        return config.max_lateness_seconds
    return round(LATENESS_FRACTION * shortest_transfer_seconds(config), 6)


class LatenessMeter:
    """Count, worst and histogram of lateness samples (simulated seconds)."""

    __slots__ = ("buckets", "count", "recent_worst", "total", "worst")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.worst = 0.0
        #: The worst since `take_recent_worst` last ran (for the log, episode by episode).
        self.recent_worst = 0.0
        #: Samples per bucket of BUCKET_BOUNDS_SECONDS, and one more past the last bound.
        self.buckets = [0] * (len(BUCKET_BOUNDS_SECONDS) + 1)

    def add(self, seconds: float) -> None:
        # Clocks of two hosts may disagree by a little: early counts as on time.
        if not seconds > 0.0:  # also NaN
            seconds = 0.0
        self.count += 1
        self.total += seconds
        if seconds > self.worst:
            self.worst = seconds
        if seconds > self.recent_worst:
            self.recent_worst = seconds
        self.buckets[bisect.bisect_left(BUCKET_BOUNDS_SECONDS, seconds)] += 1

    def take_recent_worst(self) -> float:
        worst = self.recent_worst
        self.recent_worst = 0.0
        return worst

    @property
    def p99(self) -> float:
        return percentile(self.buckets, 0.99, self.worst)


def percentile(buckets: Sequence[int], q: float, worst: float) -> float:
    """The `q` quantile of a histogram over BUCKET_BOUNDS_SECONDS: the upper bound of
    the bucket that holds it, never more than the worst sample seen."""
    count = sum(buckets)
    if not count:
        return 0.0
    rank = math.ceil(q * count)
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= rank:
            bound = BUCKET_BOUNDS_SECONDS[i] if i < len(BUCKET_BOUNDS_SECONDS) else worst
            return min(bound, worst)
    return worst
