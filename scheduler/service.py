"""The DCC side: takes Users' campaigns, stores images through 11.1, releases 11.3s.

Large-image activations are released under a daily capacity, spread evenly across the
day rather than in one burst; the rest go at once. Each released request runs as one
coroutine until the DCO answers it, then 11.2 reads the version the device now runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import Counter, deque
from dataclasses import dataclass, field

from scheduler.requests import ActivationRequest, RequestState
from smets1.clock import DAY_SECONDS, Clock
from smets1.config import SchedulerConfig
from smets1.services import DcoApi, StoredImage


@dataclass(slots=True)
class Campaign:
    name: str
    user: int
    image: StoredImage
    large: bool
    requests: list[ActivationRequest] = field(default_factory=list)


class Scheduler:
    def __init__(self, clock: Clock, dco: DcoApi, config: SchedulerConfig) -> None:
        self.clock = clock
        self.dco = dco
        self.config = config
        self.campaigns: dict[str, Campaign] = {}
        self.requests: list[ActivationRequest] = []
        self.released_per_day: Counter[int] = Counter()
        self._images: dict[bytes, StoredImage] = {}  # by SHA-256 of the file
        self._queue: deque[ActivationRequest] = deque()
        self._wakeup = asyncio.Event()
        self._open = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_release = 0.0

    def day_of(self, t: float) -> int:
        return math.floor((t - self.clock.epoch) / DAY_SECONDS)

    @property
    def release_interval_seconds(self) -> float:
        return DAY_SECONDS / self.config.large_images_per_day

    async def submit_campaign(
        self, name: str, user: int, image: bytes, device_ids: list[int]
    ) -> Campaign:
        """Store the image through 11.1 (once per image) and queue an 11.3 per device."""
        key = hashlib.sha256(image).digest()
        stored = self._images.get(key)
        if stored is None:
            stored = self._images[key] = await self.dco.update_firmware(image)
        large = stored.size_bytes > self.config.large_image_threshold_bytes
        campaign = Campaign(name, user, stored, large)
        self.campaigns[name] = campaign
        now = self.clock.now()
        for device_id in device_ids:
            req = ActivationRequest(
                len(self.requests) + 1,
                user,
                name,
                device_id,
                stored.firmware_hash,
                stored.file_version,
                large,
                now,
            )
            self.requests.append(req)
            campaign.requests.append(req)
            self._queue.append(req)
            self._open += 1
        if device_ids:
            self._idle.clear()
            self._wakeup.set()
        return campaign

    async def run(self) -> None:
        """Release queued requests forever, under the daily cap for large images."""
        cap = self.config.large_images_per_day
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            req = self._queue[0]
            if req.large:
                t = max(self.clock.now(), self._next_release)
                day = self.day_of(t)
                if self.released_per_day[day] >= cap:
                    t = self.clock.epoch + (day + 1) * DAY_SECONDS
                    day += 1
                if t > self.clock.now():
                    await self.clock.sleep_until(t)
                self.released_per_day[day] += 1
                self._next_release = t + self.release_interval_seconds
            self._queue.popleft()
            self._release(req)

    def _release(self, req: ActivationRequest) -> None:
        req.state = RequestState.RELEASED
        req.released_at = self.clock.now()
        task = asyncio.get_running_loop().create_task(self._execute(req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, req: ActivationRequest) -> None:
        try:
            outcome = await self.dco.activate_firmware(req.device_id, req.firmware_hash)
            req.outcome = outcome
            if not outcome.ok:
                req.state = RequestState.FAILED
                req.failure = outcome.reason.name.lower()
                return
            reading = await self.dco.read_firmware_version(req.device_id)
            req.reading = reading
            if not reading.ok:
                req.state = RequestState.FAILED
                req.failure = f"version_read_{reading.reason.name.lower()}"
            elif reading.running_version != req.file_version:
                req.state = RequestState.FAILED
                req.failure = "version_mismatch"
            else:
                req.state = RequestState.DONE
        finally:
            req.completed_at = self.clock.now()
            self._open -= 1
            if self._open == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Until every request accepted so far has its final answer."""
        await self._idle.wait()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def in_flight(self) -> int:
        return sum(1 for r in self.requests if r.state is RequestState.RELEASED)
