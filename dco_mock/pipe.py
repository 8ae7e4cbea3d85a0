"""The DCO's outbound capacity (issue 16): the bytes a second it can send to devices, one
first-in-first-out queue for every frame it sends (blocks, commands, background reads).

`dco.throughput_bytes_per_second` in a fleet config; none (the default): unlimited, every
frame goes the moment it is made. With a rate, a frame of n bytes leaves the pipe n / rate
seconds after the frame before it has left (or after it is made, if the pipe is idle), and
only then enters the device's link. Large images released in volume fill the pipe, and a
meter read made meanwhile waits behind their blocks: the cost to everyone else's traffic
that MP230's daily limit is there to contain.

Booking is a number, not a queue of frames: `book(n)` says when a frame made now leaves,
and moves the pipe's free time on. A transfer books one run of blocks at a time and makes
its bytes only when the run's time comes, so a full pipe holds no bytes in memory.
"""

from __future__ import annotations

from smets1.clock import Clock


class Pipe:
    """A FIFO link of fixed rate from the DCO to the devices' links."""

    def __init__(self, clock: Clock, bytes_per_second: float) -> None:
        if not bytes_per_second > 0:
            raise ValueError(
                f"expected a throughput above 0 bytes a second, got {bytes_per_second}"
            )
        self.clock = clock
        self.rate = bytes_per_second
        self._free_at = 0.0
        #: Bytes booked, and seconds frames waited for the pipe in all (for the summary).
        self.bytes = 0.0
        self.waited_seconds = 0.0
        self.frames = 0

    def book(self, nbytes: float) -> float:
        """When a frame of `nbytes` made now has left the pipe (its last byte sent)."""
        now = self.clock.now()
        start = self._free_at if self._free_at > now else now
        done = start + nbytes / self.rate
        self._free_at = done
        self.bytes += nbytes
        self.waited_seconds += start - now
        self.frames += 1
        return done

    def backlog_seconds(self) -> float:
        """How long a frame made now would wait before its first byte is sent."""
        return max(0.0, self._free_at - self.clock.now())

    def summary(self) -> dict[str, float]:
        return {
            "bytes_per_second": self.rate,
            "frames": self.frames,
            "bytes": round(self.bytes),
            "mean_wait_seconds": round(self.waited_seconds / self.frames, 3)
            if self.frames
            else 0.0,
        }
