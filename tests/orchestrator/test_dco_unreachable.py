"""A scheduler whose DCO cannot be reached: it refuses nothing, says what is wrong on
/healthz and at error level in its log, and, told to exit when done, gives up with a
status that is not 0 and a one-line reason. Also the token's way from env and config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from dco_mock.http_api import make_app
from orchestrator.cli import main
from orchestrator.dco_client import DcoClient
from orchestrator.mosquitto import Mosquitto, free_port
from orchestrator.roles_cli import EXIT_DCO_GAVE_UP
from smets1.dco_http import TOKEN_ENV
from tests.dco_mock.test_http_guard import DEVICE, GatedDco

CONFIG = Path(__file__).parent / "files" / "tiny.yaml"
TOKEN = "scheduler-and-dco"


def _scheduler(
    tmp_path: Path, broker: Mosquitto, *extra: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`smets1 scheduler` against a DCO port nothing listens on (it leads the clock on
    `broker`)."""
    port = free_port()
    log = tmp_path / "scheduler.log"
    argv = [
        sys.executable,
        *("-m", "orchestrator.cli", "scheduler", str(CONFIG), "--host", "127.0.0.1"),
        *("--dco", f"http://127.0.0.1:{free_port()}", "--port", str(port)),
        *("--out", str(tmp_path / "out"), "--speed", "50", "--broker", broker.url),
        *extra,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, TOKEN_ENV: TOKEN}
        )
    return proc, port, log


@pytest.mark.mqtt
def test_an_unreachable_dco_makes_the_scheduler_unhealthy_not_refusing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    proc, port, log = _scheduler(tmp_path, broker)
    try:
        deadline = time.monotonic() + 60.0
        answer: tuple[int, dict[str, str]] | None = None
        while answer is None or answer[0] != 503:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"/healthz stayed {answer}:\n{log.read_text()}"
            with contextlib.suppress(urllib.error.URLError, OSError):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as resp:
                        answer = resp.status, json.loads(resp.read())
                except urllib.error.HTTPError as err:
                    answer = err.code, json.loads(err.read())
            time.sleep(0.05)
        body = answer[1]
        assert body["status"] == "unhealthy"
        assert "unreachable" in body["reason"] and "127.0.0.1" in body["reason"]
        text = log.read_text()
        assert " ERROR DCO http://127.0.0.1:" in text and "unreachable" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    status = json.loads((tmp_path / "out" / "scheduler.json").read_text())
    # The campaigns were waiting for the DCO, not refused because of it.
    assert status["summary"]["refused"] == 0, status["summary"]
    assert "Traceback" not in log.read_text()


@pytest.mark.mqtt
def test_told_to_exit_when_done_it_gives_up_with_status_3_and_one_line(
    tmp_path: Path, broker: Mosquitto
) -> None:
    proc, _, log = _scheduler(tmp_path, broker, "--exit-when-done", "--dco-give-up", "0.5")
    assert proc.wait(60) == EXIT_DCO_GAVE_UP
    text = log.read_text()
    last = text.strip().splitlines()[-1]
    assert last.startswith("smets1: error: DCO http://127.0.0.1:"), text
    assert "unreachable for" in last and "given up" in last
    assert "Traceback" not in text
    assert not (tmp_path / "out" / "summary.json").exists()  # no 0/0 "done"


async def test_calls_wait_for_a_dco_that_comes_back() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # give_up_seconds=0: `gave_up` is set by the first failure; the call goes on trying.
    async with DcoClient([base], token=TOKEN, retry_seconds=None, give_up_seconds=0) as client:
        call = asyncio.create_task(client.read_firmware_version(DEVICE))
        await client.gave_up.wait()
        assert base in str(client.problem()) and not call.done()
        server = TestServer(make_app(GatedDco(), token=TOKEN), host="127.0.0.1", port=port)
        await server.start_server()
        try:
            reading = await call
            assert reading.ok and reading.device_id == DEVICE
            assert client.problem() is None
        finally:
            await server.close()


@pytest.mark.parametrize("role", ["dco", "scheduler"])
def test_a_role_without_a_token_says_where_to_put_one(
    role: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    argv = [role, str(CONFIG)] + (["--dco", "http://127.0.0.1:9"] if role == "scheduler" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("smets1: error: ") and err.count("\n") == 1
    assert "dco.token" in err and TOKEN_ENV in err


def test_a_token_that_cannot_travel_in_a_header_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "has a space")
    assert main(["dco", str(CONFIG)]) == 2
    err = capsys.readouterr().err
    assert TOKEN_ENV in err and "visible ASCII" in err and "has a space" not in err
