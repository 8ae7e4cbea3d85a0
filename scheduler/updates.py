"""SRV 11.1 requests: each image update, from its acceptance until the DCO has stored it.

An 11.1 is acknowledged when it is accepted, and answered when the DCO reports the image
stored, which takes the DCO's processing time (it grows with the image's size and the
DCO's load: `dco_mock.service.Dco.image_processing_seconds`). A DUIS 11.1 gets its answer
as a `response` notification (keys `duis_request_id`, `service_reference` "11.1",
`response_code`, `firmware_hash`, `firmware_version`, `state` "stored"; on a DCO failure
`response_code` E99, `state` "failed" and `failure`); the JSON API's 11.1 answers its HTTP
call when the image is stored (`Scheduler.store_image` waits for it).

MP230: a Large Supplier's process fails when the DCC takes more than seven days to process
an 11.1. The overdue sweep (sweep.py) flags an 11.1 still processing `stale_after_seconds`
after it was accepted, tells its User (`overdue`, service_reference "11.1"), and the run
summary counts them (`overdue_11_1`), as it does 11.3s.

Durable: an accepted 11.1 is committed with its image before the User is answered; a
restarted scheduler sends the ones not yet stored to the DCO again (`resume`; a DCO that
already holds the image answers at once). The image bytes are dropped once it is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from scheduler.errors import BadDocument, DcoFailed
from scheduler.notify import Notifier
from scheduler.requests import ImageUpdate, UpdateState
from scheduler.store import Store
from scheduler.sweep import OverdueSweep
from scheduler.tasks import TaskSet
from scheduler.users import check_user
from smets1.clock import Clock
from smets1.config_dcc import UserConfig
from smets1.eui64 import format_eui64
from smets1.image import ImageError, parse_image
from smets1.services import StoredImage

StoreImage = Callable[[int, bytes], Awaitable[StoredImage]]


class ImageUpdates:
    def __init__(
        self,
        *,
        clock: Clock,
        store: Store,
        notifier: Notifier,
        users: Mapping[int, UserConfig],
        sweep: OverdueSweep,
        tasks: TaskSet,
        store_image: StoreImage,
        images: Mapping[bytes, StoredImage],
    ) -> None:
        self.clock = clock
        self.store = store
        self.notifier = notifier
        self.users = users
        self.sweep = sweep
        self.tasks = tasks
        #: The DCO call (intake.Intake.store_image): stores the image, answers when stored.
        self._store_image = store_image
        #: The images the scheduler holds, by FirmwareHash (intake.Intake.images).
        self._images = images
        self.updates: list[ImageUpdate] = []
        self._done: dict[int, asyncio.Event] = {}
        self._resume: list[ImageUpdate] = []
        #: The meters an 11.1 from DUIS named, by update id, until it is answered.
        self._meters: dict[int, list[int]] = {}

    # -- restart -----------------------------------------------------------------------

    def restore(self, u: ImageUpdate) -> None:
        self.updates.append(u)
        if u.is_open:
            self._done[u.update_id] = asyncio.Event()
            self.sweep.track_update(u)
            self._resume.append(u)

    def resume(self) -> None:
        """Send the 11.1s accepted before a restart and not yet stored to the DCO again."""
        for u in self._resume:
            image = self.store.update_image(u.update_id)
            if image is None:  # written before its image was: cannot be sent again
                self._finish(u, None, "the image of this 11.1 was lost in a restart")
            else:
                self.tasks.spawn(self._process(u, image))
        self._resume.clear()

    # -- accepting -----------------------------------------------------------------------

    def submit(
        self,
        user: int,
        image: bytes,
        duis_request_id: str | None = None,
        device_ids: Iterable[int] = (),
    ) -> ImageUpdate:
        """Accept an 11.1 (committed with its image) and send it to the DCO; it is
        answered when the DCO reports the image stored."""
        check_user(self.users, user)
        try:
            parsed = parse_image(image)
        except ImageError as exc:
            raise BadDocument("FirmwareImage", f"not a firmware image: {exc}") from None
        u = ImageUpdate(
            len(self.updates) + 1,
            user,
            len(image),
            parsed.firmware_hash,
            parsed.header.file_version,
            self.clock.now(),
            duis_request_id,
        )
        self.store.add_update(u, image)
        self.updates.append(u)
        meters = list(device_ids)
        if meters:
            # Named in a failure's alert; kept in memory (a restarted scheduler's alert
            # for an 11.1 it resumed names no meters: DUIS then gets E20 without them).
            self._meters[u.update_id] = meters
        self._done[u.update_id] = asyncio.Event()
        self.sweep.track_update(u)
        self.tasks.spawn(self._process(u, image))
        return u

    async def result(self, u: ImageUpdate) -> StoredImage:
        """Wait until the DCO has answered `u`: the stored image, or DcoFailed."""
        done = self._done.get(u.update_id)
        if done is not None:
            await done.wait()
        if u.state is UpdateState.FAILED:
            raise DcoFailed(u.failure or "the DCO could not store the image")
        stored = self._images.get(u.firmware_hash)
        assert stored is not None, "a stored 11.1 has its image recorded"
        return stored

    # -- processing ----------------------------------------------------------------------

    async def _process(self, u: ImageUpdate, image: bytes) -> None:
        try:
            stored = await self._store_image(u.user, image)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # DcoFailed, or a DCO fault: the 11.1 fails, not the run
            reason = exc.reason if isinstance(exc, DcoFailed) else f"dco_error: {exc!r}"
            self._finish(u, None, reason[:500])
        else:
            self._finish(u, stored, None)

    def _finish(self, u: ImageUpdate, stored: StoredImage | None, failure: str | None) -> None:
        u.stored_at = self.clock.now()
        if stored is None:
            u.state = UpdateState.FAILED
            u.failure = failure
        else:
            u.state = UpdateState.STORED
            u.firmware_hash = stored.firmware_hash
            u.file_version = stored.file_version
        self.store.save_update(u)
        meters = self._meters.pop(u.update_id, [])
        if u.duis_request_id is not None:
            payload = response_payload(u)
            if stored is None and meters:
                payload["device_ids"] = [format_eui64(d) for d in meters]
            self.notifier.post(u.user, "response", payload)
        done = self._done.pop(u.update_id, None)
        if done is not None:
            done.set()

    # -- reading -------------------------------------------------------------------------

    @property
    def overdue_count(self) -> int:
        return sum(1 for u in self.updates if u.overdue)


def response_payload(u: ImageUpdate) -> dict[str, Any]:
    """The 11.1 answer posted to the User when the DCO has stored the image (or failed)."""
    out: dict[str, Any] = {
        "duis_request_id": u.duis_request_id,
        "service_reference": "11.1",
        "response_code": "I0" if u.state is UpdateState.STORED else "E99",
        "firmware_hash": u.firmware_hash.hex(),
        "firmware_version": f"{u.file_version:08X}",
        "state": u.state.value,
    }
    if u.failure is not None:
        out["failure"] = u.failure
    return out
