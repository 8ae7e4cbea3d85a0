"""The HTTP faces under hostile or concurrent use (issue 10): capacity reads that change
nothing and bounded dates, DUIS documents capped in elements and depth and parsed off the
event loop, error bodies that stay short, and a RequestID accepted once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from scheduler import api, duis
from scheduler.api import make_app
from scheduler.duis import NS
from scheduler.service import Scheduler
from smets1.clock import DEFAULT_EPOCH_SECONDS, ScaledClock
from smets1.services import StoredImage
from tests.scheduler.fakes import LARGE_IMAGE, FakeDco, config, make_scheduler
from tests.scheduler.test_api import (
    AUTH_A,
    DEV,
    LARGE_IMAGE_HASH,
    WAIT_SECONDS,
    activate_firmware,
    duis_request,
    update_firmware,
)

#: What issue 10 asks of every error body.
ERROR_BODY_BYTES = 1_024
#: A document as large as the default limit allows in spirit: 12 MB of empty elements.
EMPTY_ELEMENTS = 3_000_000


@dataclass
class GatedDco(FakeDco):
    """Holds every 11.1 at the DCO until `gate` is set; `changed` is notified as each
    arrives, so a test waits on what happened, never on time."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    entered: int = 0

    async def update_firmware(self, image: bytes) -> StoredImage:
        async with self.changed:
            self.entered += 1
            self.changed.notify_all()
        await self.gate.wait()
        return await super().update_firmware(image)


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    scheduler: Scheduler
    dco: GatedDco

    async def post_duis(self, doc: bytes, query: str = "") -> tuple[int, str]:
        resp = await self.client.post(f"/duis{query}", data=doc, headers=AUTH_A)
        return resp.status, await resp.text()

    def stored_rows(self) -> dict[str, int]:
        db = self.scheduler.store.db
        self.scheduler.store.flush()
        return {
            t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("requests", "schedules", "refusals", "images", "notifications")
        } | {"duis_requests": db.execute("SELECT COUNT(*) FROM duis_requests").fetchone()[0]}


@pytest.fixture
async def api_() -> AsyncIterator[Api]:
    clock = ScaledClock(DEFAULT_EPOCH_SECONDS, speed=1)
    dco = GatedDco(clock)
    dco.gate.set()
    s, _ = make_scheduler(clock, config(max_document_bytes=16 * 1024 * 1024), n_devices=5, dco=dco)
    client = TestClient(TestServer(make_app(s)))
    await client.start_server()
    try:
        yield Api(client, s, dco)
    finally:
        await client.close()
        await s.close()


# -- item 6: capacity -----------------------------------------------------------------


async def test_capacity_reads_change_nothing(api_: Api) -> None:
    s = api_.scheduler
    before = api_.stored_rows()
    for year in range(2016, 2035):
        for days in (1, 366):
            r = await api_.client.get(f"/v1/capacity?from={year}-06-30&days={days}", headers=AUTH_A)
            assert r.status == 200, await r.text()
            assert len(await r.json()) == days
    assert s.calendar.days() == [] and s.calendar.released_per_day() == {}
    assert api_.stored_rows() == before


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("from=9999-12-31", "from"),
        ("from=0001-01-01", "from"),
        ("from=2045-01-01", "from"),
        ("from=2025-02-30", "from"),
        ("from=20250301", "from"),
        ("from=2025-03-01T00:00:00", "from"),
        ("from=" + "x" * 5000, "from"),
        ("days=367", "days"),
        ("days=0", "days"),
        ("days=" + "9" * 5000, "days"),
    ],
)
async def test_capacity_ranges_are_bounded_with_a_400_naming_the_parameter(
    api_: Api, query: str, name: str
) -> None:
    r = await api_.client.get(f"/v1/capacity?{query}", headers=AUTH_A)
    body = await r.read()
    assert r.status == 400, body
    assert json.loads(body)["field"] == name
    assert len(body) < ERROR_BODY_BYTES


# -- item 4: schedule fields over HTTP ------------------------------------------------


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"devices": 3, "max_per_day": 2**64}, "max_per_day"),
        ({"devices": 3, "max_per_day": 0}, "max_per_day"),
        ({"devices": 2**64}, "devices"),
        ({"devices": 3, "start_date": "9999-12-31"}, "start_date"),
        ({"devices": 3, "start_date": 0}, "start_date"),
        ({"devices": "3"}, "devices"),
    ],
)
async def test_schedule_fields_are_bounded_over_http(
    api_: Api, body: dict[str, Any], name: str
) -> None:
    r = await api_.client.post("/v1/schedules", json=body, headers=AUTH_A)
    out = await r.json()
    assert r.status == 400, out
    assert out["field"] == name
    assert api_.scheduler.schedules == {} and api_.stored_rows()["schedules"] == 0


# -- item 7: DUIS documents within limits ---------------------------------------------


def _wrapped(inner: str) -> bytes:
    return (f'<sr:Request xmlns:sr="{NS}" schemaVersion="5.1">{inner}</sr:Request>').encode()


async def test_a_document_of_millions_of_elements_is_refused_at_the_cap(api_: Api) -> None:
    doc = _wrapped("<sr:Body>" + "<a/>" * EMPTY_ELEMENTS + "</sr:Body>")
    assert len(doc) > 12_000_000
    status, text = await api_.post_duis(doc)
    assert status == 400, text[:300]
    assert f"more than {duis.MAX_ELEMENTS} elements" in text
    assert len(text.encode()) < ERROR_BODY_BYTES
    assert api_.stored_rows()["duis_requests"] == 0


async def test_deep_nesting_is_refused_at_the_cap(api_: Api) -> None:
    deep = 100_000
    status, text = await api_.post_duis(_wrapped("<a>" * deep + "</a>" * deep))
    assert status == 400 and f"nested more than {duis.MAX_DEPTH} deep" in text
    assert len(text.encode()) < ERROR_BODY_BYTES


async def test_big_documents_are_parsed_off_the_event_loop(
    api_: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A legal 11.1 of several MB is parsed in a worker thread; a small one on the loop."""
    threads: list[int] = []
    real = duis.parse_request

    def recording(data: bytes, max_bytes: int) -> duis.DuisRequest:
        threads.append(threading.get_ident())
        return real(data, max_bytes)

    monkeypatch.setattr(duis, "parse_request", recording)
    big = duis_request("11.1", update_firmware(LARGE_IMAGE), 1)
    small = duis_request("11.2", "<sr:ReadFirmwareVersion/>", 2)
    assert len(big) > api.PARSE_ON_LOOP_BYTES >= len(small)
    assert (await api_.post_duis(big))[0] == 200
    assert (await api_.post_duis(small))[0] == 200
    loop_thread = threading.get_ident()
    assert threads[0] != loop_thread and threads[1] == loop_thread


# -- error bodies: short, whatever the input ------------------------------------------

HUGE = "x" * 200_000

#: (method, path, body): every endpoint, each with input chosen to make a long message.
BAD_INPUTS: list[tuple[str, str, bytes | None]] = [
    ("POST", "/duis", _wrapped(f"<{HUGE}/>")),
    ("POST", "/duis", f"<{HUGE}/>".encode()),
    ("POST", "/duis", _wrapped(f'<sr:Header a="{HUGE}"/>')),
    ("POST", "/duis", _wrapped("<sr:Header/><sr:Body>" + "<b/>" * 10_000 + "</sr:Body>")),
    ("POST", "/duis", f'<sr:Request xmlns:sr="urn:{HUGE}"/>'.encode()),
    ("POST", "/duis", duis_request("11.2", "<sr:ReadFirmwareVersion/>", 1, target=HUGE)),
    ("POST", "/duis", duis_request("11.1", update_firmware().replace(DEV[0], HUGE), 1)),
    ("POST", "/duis", duis_request("11.3", activate_firmware("ab" * 32, HUGE), 1)),
    ("POST", "/duis", duis_request("11.3", activate_firmware(HUGE), 1)),
    ("POST", "/duis", duis_request(HUGE, "<sr:ReadFirmwareVersion/>", 1)),
    ("POST", "/duis", b"<\x00" + HUGE.encode()),
    ("POST", "/duis", b'<?xml version="1.0" encoding="' + HUGE.encode() + b'"?><a/>'),
    ("POST", "/duis?priority=" + "p" * 5000, duis_request("11.3", activate_firmware("ab" * 32), 1)),
    ("POST", "/duis?schedule=" + "9" * 5000, duis_request("11.3", activate_firmware("ab" * 32), 1)),
    ("POST", "/v1/activations", json.dumps({HUGE: 1}).encode()),
    ("POST", "/v1/activations", json.dumps({"firmware_hash": HUGE, "device_ids": []}).encode()),
    ("POST", "/v1/activations", b"[" * 100_000),
    ("POST", "/v1/activations", HUGE.encode()),
    ("POST", "/v1/images", json.dumps({"image_base64": HUGE}).encode()),
    ("POST", "/v1/images", json.dumps({"image_base64": "AAAA", "device_ids": [HUGE]}).encode()),
    ("POST", "/v1/reads", json.dumps({"device_id": HUGE}).encode()),
    ("POST", "/v1/schedules", json.dumps({"devices": 2**64, "max_per_day": 2**64}).encode()),
    ("POST", "/v1/schedules", json.dumps({"devices": 1, "max_per_day": 2**64}).encode()),
    ("POST", "/v1/schedules", json.dumps({"devices": 1, "start_date": "9999-12-31"}).encode()),
    ("POST", "/v1/schedules", json.dumps({"devices": 1, "user": HUGE}).encode()),
    ("POST", "/v1/schedules/" + "9" * 5000 + "/accept", None),
    ("GET", "/v1/schedules/" + "9" * 5000, None),
    ("GET", "/v1/requests/" + "9" * 5000, None),
    ("GET", "/v1/requests?state=" + "s" * 5000, None),
    ("GET", "/v1/requests?limit=" + "9" * 5000, None),
    ("GET", "/v1/notifications?after=" + "-" * 5000, None),
    ("GET", "/duis/responses?after=" + "9" * 5000, None),
    ("GET", "/v1/" + "n" * 5000, None),
    ("DELETE", "/v1/requests", None),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_INPUTS)
async def test_every_error_body_is_short_and_names_what_is_wrong(
    api_: Api, method: str, path: str, body: bytes | None
) -> None:
    before = api_.stored_rows()
    resp = await api_.client.request(method, path, data=body, headers=AUTH_A)
    text = await resp.read()
    assert 400 <= resp.status < 500, text[:300]
    assert len(text) < ERROR_BODY_BYTES, len(text)
    if resp.content_type == "application/json":
        out: dict[str, Any] = json.loads(text)
        assert out["code"].startswith("E") and out["error"]
    else:
        assert resp.content_type == "application/xml"
        root = duis.parse_xml(text)  # well-formed, whatever the input quoted
        assert root.findtext(f"{{{NS}}}Header/{{{NS}}}ResponseCode", "").startswith("E")
    assert api_.stored_rows() == before


# -- item 9: a RequestID is accepted once ---------------------------------------------


async def test_concurrent_11_1_with_one_request_id_is_accepted_once(api_: Api) -> None:
    dco = api_.dco
    dco.gate.clear()
    doc = duis_request("11.1", update_firmware(), 7)
    finished: list[tuple[int, str]] = []

    async def post() -> tuple[int, str]:
        out = await api_.post_duis(doc)
        async with dco.changed:
            finished.append(out)
            dco.changed.notify_all()
        return out

    tasks = [asyncio.create_task(post()) for _ in range(10)]
    # Either nine are refused while the first waits at the DCO, or (the race) all ten
    # reach the DCO: whichever comes first, then the DCO answers.
    async with dco.changed:
        await asyncio.wait_for(
            dco.changed.wait_for(lambda: len(finished) >= 9 or dco.entered >= 10),
            WAIT_SECONDS,
        )
    dco.gate.set()
    results = await asyncio.gather(*tasks)
    assert sorted(status for status, _ in results) == [200] + [400] * 9
    assert sum("was already used" in text for _, text in results) == 9
    assert dco.entered == 1
    rows = api_.stored_rows()
    assert rows["duis_requests"] == 1 and rows["images"] == 1


async def test_concurrent_11_3_with_one_request_id_is_accepted_once(api_: Api) -> None:
    status, text = await api_.post_duis(duis_request("11.1", update_firmware(), 1))
    assert status == 200, text
    doc = duis_request("11.3", activate_firmware(LARGE_IMAGE_HASH), 2)
    results = await asyncio.gather(*(api_.post_duis(doc) for _ in range(10)))
    assert sorted(status for status, _ in results) == [200] + [400] * 9
    assert len(api_.scheduler.requests) == 1


async def test_a_refused_document_gives_its_request_id_back(api_: Api) -> None:
    status, text = await api_.post_duis(duis_request("11.1", update_firmware(b"junk"), 3))
    assert status == 400 and "not a firmware image" in text
    status, text = await api_.post_duis(duis_request("11.1", update_firmware(), 3))
    assert status == 200, text
    status, text = await api_.post_duis(duis_request("11.1", update_firmware(), 3))
    assert status == 400 and "was already used" in text
