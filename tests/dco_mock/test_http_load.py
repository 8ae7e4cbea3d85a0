"""A DCO worker process short of file descriptors, hit by a burst of 11.3s: it answers
every one (some 503 with Retry-After), logs no storm of tracebacks, and stays up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from orchestrator.mosquitto import Mosquitto, free_port
from smets1.config import DEVICE_ID_BASE
from smets1.dco_http import (
    ACTIVATION_ORDER,
    ACTIVATIONS_PATH,
    HEALTH_PATH,
    IMAGES_PATH,
    STORED_IMAGE,
    TOKEN_ENV,
    ActivationOrder,
    bearer,
)
from tests.factories import make_image, tiny_config
from tests.smets1.test_shared_clock import announce_clock

pytestmark = pytest.mark.mqtt

TOKEN = "load-test-token"
REQUESTS = 2_000
#: The DCO's file descriptor limit: far fewer than the requests.
DCO_NOFILE = 256
#: What the test process needs for its own side of the burst.
CLIENT_NOFILE = REQUESTS + 512


@pytest.fixture
def client_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CLIENT_NOFILE:
        pytest.skip(f"the test opens {REQUESTS} sockets; ulimit -Hn is {hard}")
    if soft != resource.RLIM_INFINITY and soft < CLIENT_NOFILE:
        resource.setrlimit(resource.RLIMIT_NOFILE, (CLIENT_NOFILE, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _few_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DCO_NOFILE, DCO_NOFILE))


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.1)
    pytest.fail(f"the DCO did not become healthy:\n{log.read_text()}")


async def _burst(base: str, image: bytes) -> list[tuple[int, str | None]]:
    """11.1, then REQUESTS 11.3s at once, each to its own (silent) device."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=bearer(TOKEN)
    ) as http:
        async with http.post(base + IMAGES_PATH, data=image) as resp:
            assert resp.status == 200, await resp.text()
            firmware_hash = STORED_IMAGE.from_json(await resp.read()).firmware_hash

        async def one(n: int) -> tuple[int, str | None]:
            order = ActivationOrder(DEVICE_ID_BASE + 1 + n, firmware_hash)
            body = ACTIVATION_ORDER.to_json(order)
            async with http.post(base + ACTIVATIONS_PATH, data=body) as resp:
                await resp.read()
                return resp.status, resp.headers.get("Retry-After")

        return await asyncio.gather(*(one(n) for n in range(REQUESTS)))


def test_a_burst_beyond_the_file_limit_is_answered_not_crashed(
    broker: Mosquitto, tmp_path: Path, client_fds: None
) -> None:
    raw = tiny_config(
        # The devices are silent (no fleet runs): each 11.3 the DCO takes waits a few
        # wall seconds for them, then answers `offline`.
        dco={
            "reply_timeout_seconds": 600,
            "retry_initial_seconds": 600,
            "max_rounds": 1,
            "give_up_seconds": 3_600,
        }
    )
    config = tmp_path / "load.yaml"
    config.write_text(yaml.safe_dump(raw))
    image = make_image(size_body=4_000)
    port = free_port()
    log = tmp_path / "dco.log"
    argv = [
        sys.executable,
        *("-m", "orchestrator.cli", "dco", str(config), "--broker", broker.url),
        *("--host", "127.0.0.1", "--port", str(port), "--state-dir", str(tmp_path / "state")),
    ]
    # No scheduler runs: lead the clock the DCO waits for, and leave it on the broker.
    announce_clock(broker.url, raw["name"], tmp_path / "clock")
    env = {**os.environ, TOKEN_ENV: TOKEN}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_few_files
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, base + HEALTH_PATH, log)
        answers = asyncio.run(_burst(base, image))
        statuses = Counter(status for status, _ in answers)
        assert sum(statuses.values()) == REQUESTS  # every request answered
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] > 0 and statuses[503] > 0, statuses
        assert all(after == "1" for status, after in answers if status == 503)
        assert proc.poll() is None  # still up
        with urllib.request.urlopen(base + HEALTH_PATH, timeout=5.0) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert len(text.splitlines()) < 50, text[-3000:]  # no log storm
