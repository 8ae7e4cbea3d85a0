"""The background coroutines the scheduler starts and must stop on `close()`.

Released 11.3s running until the DCO answers (release.py), cancellations sent on to the
DCO and DUIS 11.2 reads answered later (intake.py). One set shared by the parts that
start them, so that closing the scheduler cancels every one: nothing is left running
behind a closed store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class TaskSet:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
