"""Telling Users what happened: every notification is stored (for polling) and, where the
User registered a callback URL, POSTed there, retried with exponential backoff.

Kinds: `response` (an 11.1/11.2/11.3 outcome, with TRT met or missed), `held` (over the
daily allowance: waits for a schedule), `refused`, `schedule_moved`, `overdue`.
A notification about a DUIS request reaches the callback as the DUIS document the renderer
makes of it, or not at all where DUIS has no element for it (it stays on the JSON API:
`/v1/notifications`); every other notification as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scheduler.store import Store
from smets1.clock import Clock
from smets1.config_dcc import UserConfig

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("scheduler.notify")

#: Renders a stored notification as (content type, body) for a callback; None: nothing
#: to POST (the notification is kept for the JSON API only).
Renderer = Callable[[int, float, str, dict[str, Any]], tuple[str, bytes] | None]


def render_json(
    nid: int, at: float, kind: str, payload: dict[str, Any]
) -> tuple[str, bytes] | None:
    body = {"id": nid, "at": at, "kind": kind, **payload}
    return "application/json", json.dumps(body).encode()


class Notifier:
    def __init__(
        self,
        clock: Clock,
        store: Store,
        users: dict[int, UserConfig],
        retry_seconds: float,
        attempts: int,
    ) -> None:
        self.clock = clock
        self.store = store
        self.users = users
        self.retry_seconds = retry_seconds
        self.attempts = attempts
        self.render: Renderer = render_json
        self.delivered = 0
        self.gave_up = 0
        self._queues: dict[int, asyncio.Queue[tuple[int, int, float, str, dict[str, Any]]]] = {}

    def post(self, user: int, kind: str, payload: dict[str, Any]) -> int:
        at = self.clock.now()
        nid = self.store.add_notification(user, at, kind, payload)
        queue = self._queues.get(user)
        if queue is not None:
            queue.put_nowait((nid, user, at, kind, payload))
        return nid

    async def run(self) -> None:
        """Deliver to callback URLs until cancelled, one worker per User so that a User
        whose endpoint is down delays nobody else; picks up what a previous run left."""
        with_callback = {u for u, c in self.users.items() if c.callback_url}
        if not with_callback:
            await asyncio.Event().wait()
        for user in with_callback:
            self._queues[user] = asyncio.Queue()
        for item in self.store.undelivered(with_callback):
            self._queues[item[1]].put_nowait(item)
        # Imported here: a run with no callback URL (most) does without its import cost.
        import aiohttp

        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            asyncio.TaskGroup() as tg,
        ):
            for user in with_callback:
                tg.create_task(self._worker(session, self._queues[user]))

    async def _worker(
        self,
        session: aiohttp.ClientSession,
        queue: asyncio.Queue[tuple[int, int, float, str, dict[str, Any]]],
    ) -> None:
        while True:
            item = await queue.get()
            await self._deliver(session, *item)

    async def _deliver(
        self,
        session: aiohttp.ClientSession,
        nid: int,
        user: int,
        at: float,
        kind: str,
        payload: dict[str, Any],
    ) -> None:
        url = self.users[user].callback_url
        assert url is not None
        try:
            rendered = self.render(nid, at, kind, payload)
        except Exception:  # a bug (or a schema fault) must not stop this User's deliveries
            log.exception("notification %d (%s) for user %d could not be rendered", nid, kind, user)
            self.gave_up += 1
            return
        if rendered is None:
            self.store.mark_delivered(nid)
            return
        content_type, body = rendered
        import aiohttp  # imported by `run` already: a dictionary lookup

        delay = self.retry_seconds
        for attempt in range(self.attempts):
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": content_type}
                ) as resp:
                    if resp.status < 300:
                        self.store.mark_delivered(nid)
                        self.delivered += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if attempt + 1 < self.attempts:
                await self.clock.sleep(delay)
                delay *= 2
        self.gave_up += 1
