"""The scheduler's client on the DCO's call channel when the DCO goes away mid-11.3 and
comes back, and when it stops in good order."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from dco_mock.http_api import GATE_KEY, make_app
from orchestrator.dco_client import DcoClient
from orchestrator.mosquitto import free_port
from tests.dco_mock.test_http_guard import DEVICE, HASH, GatedDco

TOKEN = "channel-test-token"


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    # A short grace for the calls still open when it stops, as a role has (not 60 s).
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_11_3s_open_when_the_dco_goes_are_sent_again_and_answered_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    port = free_port()
    first = GatedDco(block=True)
    runner = await _serve(make_app(first, token=TOKEN), port)
    devices = [DEVICE + i for i in range(3)]
    async with DcoClient([f"http://127.0.0.1:{port}"], token=TOKEN, retry_seconds=None) as c:
        calls = [asyncio.create_task(c.activate_firmware(d, HASH)) for d in devices]
        while first.inside < len(devices):  # noqa: ASYNC110 (no event to await for it)
            await asyncio.sleep(0.01)
        await runner.cleanup()  # the DCO stops with the three 11.3s open on its channel
        assert first.inside == 0  # they were cancelled with the channel
        assert not any(call.done() for call in calls)
        while c.problem() is None:  # noqa: ASYNC110 (unreachable: logged and reported)
            await asyncio.sleep(0.01)
        second = GatedDco()
        runner = await _serve(make_app(second, token=TOKEN), port)
        try:
            outcomes = await asyncio.gather(*calls)
            assert [o.device_id for o in outcomes] == devices and all(o.ok for o in outcomes)
            assert second.calls == len(devices)  # each sent again once
            assert c.retries >= len(devices) and c.busy_retries == 0
            assert c.problem() is None
        finally:
            await runner.cleanup()
    text = caplog.text
    assert "dropped a request" in text and "call channel" in text
    assert "Traceback" not in text


async def test_a_dco_stopping_answers_the_calls_it_holds_before_it_closes() -> None:
    """Within its shutdown grace: the open 11.3 is answered, then the channel closes."""
    port = free_port()
    dco = GatedDco(block=True)
    app = make_app(dco, token=TOKEN)
    runner = web.AppRunner(app, shutdown_timeout=30.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with DcoClient([f"http://127.0.0.1:{port}"], token=TOKEN, retry_seconds=None) as c:
        call = asyncio.create_task(c.activate_firmware(DEVICE, HASH))
        await dco.entered.wait()
        stopping = asyncio.create_task(runner.cleanup())
        await asyncio.sleep(0)
        assert not stopping.done()
        dco.release.set()
        outcome = await call
        await stopping
        assert outcome.ok and c.retries == 0
    assert app[GATE_KEY].in_flight == 0
