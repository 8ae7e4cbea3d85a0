"""A scheduler served over HTTP for the DUIS wire tests, built around the ids the DCC's own
templates use, and the DUIS schema check every document the scheduler writes must pass.

The templates (npm `@smartdcc/duis-templates`) name two Users and two devices:

- 11.1 and 11.3 come from `90-B3-D5-1F-30-01-00-00` (`SUPPLIER`) about the ESME
  `00-DB-12-34-56-78-90-A0` (11.1 targets the DCC, `90-B3-D5-1F-30-00-00-02`);
- 11.2 comes from `90-B3-D5-1F-30-00-00-02` (`READER`) about `00-DB-12-34-56-78-90-A4`.

So the fleet here holds exactly those: the templates need no change of ids.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xmlschema
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from scheduler.api import make_app
from scheduler.duis import DS_NS, NS, RA_NS
from scheduler.service import Scheduler
from smets1.clock import DEFAULT_EPOCH_SECONDS, ScaledClock
from smets1.config_dcc import UserConfig
from smets1.eui64 import parse_eui64
from tests.scheduler.fakes import FakeDco, config

SUPPLIER = parse_eui64("90-B3-D5-1F-30-01-00-00")
READER = parse_eui64("90-B3-D5-1F-30-00-00-02")
ESME = parse_eui64("00-DB-12-34-56-78-90-A0")
READ_ESME = parse_eui64("00-DB-12-34-56-78-90-A4")
#: A device in the fleet that SUPPLIER does not supply (READER does).
OTHERS_ESME = parse_eui64("00-DB-12-34-56-78-90-A5")
AUTH_SUPPLIER = {"Authorization": "Bearer supplier-token"}
AUTH_READER = {"Authorization": "Bearer reader-token"}
#: The longest a test waits for something the scheduler does on its own, wall seconds.
WAIT_SECONDS = 10.0
SUPPLIERS = {ESME: SUPPLIER, READ_ESME: READER, OTHERS_ESME: READER}

#: A stand-in for the signature `DuisSecurity.seal` will add: the shape the DUIS schema
#: requires (the placeholder values of the DCC's own templates), no cryptography.
PLACEHOLDER_SIGNATURE = (
    f'<ds:Signature xmlns:ds="{DS_NS}"><ds:SignedInfo>'
    '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
    '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"/>'
    '<ds:Reference URI=""><ds:Transforms><ds:Transform '
    'Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/></ds:Transforms>'
    '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
    "<ds:DigestValue>ZGVmYXVsdA==</ds:DigestValue></ds:Reference></ds:SignedInfo>"
    "<ds:SignatureValue>ZGVmYXVsdA==</ds:SignatureValue><ds:KeyInfo><ds:X509Data>"
    "<ds:X509IssuerSerial><ds:X509IssuerName>CN=Z1, OU=07</ds:X509IssuerName>"
    "<ds:X509SerialNumber>1234567890</ds:X509SerialNumber></ds:X509IssuerSerial>"
    "</ds:X509Data></ds:KeyInfo></ds:Signature>"
).encode()


def placeholder_seal(document: bytes) -> bytes:
    """Append PLACEHOLDER_SIGNATURE as the root's last child (an enveloped signature)."""
    cut = document.rindex(b"</")
    return document[:cut] + PLACEHOLDER_SIGNATURE + document[cut:]


def q(local: str) -> str:
    return f"{{{NS}}}{local}"


def ra(local: str) -> str:
    return f"{{{RA_NS}}}{local}"


def load_schema(schema_dir: Path) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(schema_dir / "DUIS Schema V5.1.xsd"))


def assert_schema_valid(schema: xmlschema.XMLSchema, document: bytes) -> ET.Element:
    """The document against DUIS 5.1 (with MMC 5.1 and xmldsig); the parsed root."""
    errors = [str(e.reason) + " at " + str(e.path) for e in schema.iter_errors(document)]
    assert errors == [], f"{errors[:3]}\n{document.decode(errors='replace')[:3000]}"
    return ET.fromstring(document)


@dataclass
class Fleet:
    client: TestClient[web.Request, web.Application]
    scheduler: Scheduler
    dco: FakeDco
    callbacks: list[bytes] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def callbacks_reach(self, n: int) -> list[bytes]:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.callbacks) >= n), WAIT_SECONDS
            )
        return list(self.callbacks)

    async def background_done(self) -> None:
        """Until every background task the scheduler runs now has finished (an 11.2
        read answered later, a cancellation sent on)."""
        tasks = list(self.scheduler._tasks._tasks)
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_SECONDS)

    async def post(
        self, doc: bytes, auth: dict[str, str] = AUTH_SUPPLIER, path: str = "/api/v1/serviceS"
    ) -> tuple[int, bytes, dict[str, str]]:
        resp = await self.client.post(path, data=doc, headers=auth)
        return resp.status, await resp.read(), dict(resp.headers)


async def serve_fleet(
    seal: Any = placeholder_seal,
    certificates: Mapping[int, Path] | None = None,
    **config_kw: Any,
) -> AsyncIterator[Fleet]:
    """The scheduler (Users SUPPLIER with a callback, READER polling) on a test server.
    `seal` None: the scheduler's own (config `duis` in `config_kw`); `certificates`: each
    User's XML-signing certificate, by EUI-64."""
    certs = certificates or {}
    callbacks: list[bytes] = []
    arrived = asyncio.Condition()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        async with arrived:
            callbacks.append(body)
            arrived.notify_all()
        return web.Response(status=204)

    cb_app = web.Application()
    cb_app.router.add_post("/cb", receive)
    cb_server = TestServer(cb_app)
    await cb_server.start_server()
    clock = ScaledClock(DEFAULT_EPOCH_SECONDS, speed=10_000)
    users = [
        UserConfig(
            id=SUPPLIER,
            name="supplier",
            token="supplier-token",
            callback_url=str(cb_server.make_url("/cb")),
            certificate=certs.get(SUPPLIER),
        ),
        UserConfig(id=READER, name="reader", token="reader-token", certificate=certs.get(READER)),
    ]
    cfg = config(users=[u.model_dump() for u in users], max_document_bytes=2_000_000, **config_kw)
    dco = FakeDco(clock)
    s = Scheduler(clock, dco, cfg, devices=set(SUPPLIERS), suppliers=SUPPLIERS.get)
    if seal is not None:
        s.duis_security.seal = seal  # type: ignore[method-assign]
    client = TestClient(TestServer(make_app(s)))
    await client.start_server()
    task = asyncio.create_task(s.run())
    try:
        yield Fleet(client, s, dco, callbacks, arrived)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await cb_server.close()
        await s.close()
