"""Shared fixtures: a guard against tests that leave tasks behind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_leftover_tasks() -> Iterator[None]:
    """Fail a test that leaves tasks running on its event loop (STYLE 10)."""
    yield
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    current = asyncio.current_task(loop)
    left = [t for t in asyncio.all_tasks(loop) if t is not current and not t.done()]
    assert not left, f"test left {len(left)} task(s) running: {left[:3]}"
