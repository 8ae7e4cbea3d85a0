"""The DCC's own DUIS templates, sent as they are, and every answer checked against the
DCC's DUIS 5.1 / MMC 5.1 schemas (tests/duis_reference.py fetches both at test time).

Changed in the templates: nothing but the FirmwareHash each 11.3 names (the hash of the
image the 11.1 template stored, as the issue allows). The fleet is built around the
templates' Users and devices (tests/scheduler/duis_fleet.py). The 11.1 template's
FirmwareImage is the DCC's sample ZigBee OTA file (361 bytes, manufacturer 0x121D, no
project signature): the scheduler takes it as it is, and its FirmwareVersion 00000000,
which is not the image's file version, is not compared (DUIS does not ask the DCC to).
"""

from __future__ import annotations

import asyncio
import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import xmlschema

from smets1.eui64 import format_eui64
from smets1.image import parse_image
from tests.duis_reference import DuisReference
from tests.scheduler.duis_fleet import (
    AUTH_READER,
    ESME,
    PLACEHOLDER_SIGNATURE,
    READ_ESME,
    READER,
    SUPPLIER,
    WAIT_SECONDS,
    Fleet,
    assert_schema_valid,
    load_schema,
    q,
    ra,
    serve_fleet,
)

T11_1 = "11.1_UPDATE_FIRMWARE_REQUEST_DUIS.XML"
T11_3_NOW = "CS06_11.3_IMMEDIATE_SUCCESS_REQUEST_DUIS.XML"
T11_3_LATER = "CS06_11.3_FUTURE_DATED_SUCCESS_REQUEST_DUIS.XML"
T11_3_CANCEL = "CS06_11.3_CANCELLATION_SUCCESS_REQUEST_DUIS.XML"
T11_2 = "CS08_11.2_SUCCESS_REQUEST_DUIS.XML"
_HASH_RE = re.compile(rb"<sr:FirmwareHash>[0-9A-Fa-f]{64}</sr:FirmwareHash>")


@pytest.fixture(scope="module")
def schema(duis_ref: DuisReference) -> xmlschema.XMLSchema:
    return load_schema(duis_ref.schema_dir)


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async for f in serve_fleet():
        yield f


def with_hash(template: bytes, firmware_hash: bytes) -> bytes:
    """The template with its FirmwareHash, and only that, replaced."""
    new = b"<sr:FirmwareHash>" + firmware_hash.hex().upper().encode() + b"</sr:FirmwareHash>"
    out, n = _HASH_RE.subn(new, template)
    assert n == 1 and len(out) == len(template)
    return out


def template_image(template: bytes) -> bytes:
    text = template.split(b"<sr:FirmwareImage>")[1].split(b"</sr:FirmwareImage>")[0]
    return base64.b64decode(text)


def header(root: ET.Element, name: str) -> str:
    return root.findtext(f"{q('Header')}/{q(name)}") or ""


def assert_acknowledged(schema: xmlschema.XMLSchema, status: int, body: bytes, rid: str) -> None:
    assert status == 200, body.decode()
    root = assert_schema_valid(schema, body)
    assert header(root, "ResponseCode") == "I99"
    assert header(root, "RequestID") == rid
    assert root.find(f"{q('Body')}/{q('ResponseMessage')}") is not None


def request_id(template: bytes) -> str:
    return template.split(b"<sr:RequestID>")[1].split(b"<")[0].decode()


def swapped(rid: str) -> str:
    sender, target, counter = rid.split(":")
    return f"{target}:{sender}:{counter}"


async def test_the_dcc_templates_are_acknowledged_I99_and_answered_schema_valid(
    fleet: Fleet, duis_ref: DuisReference, schema: xmlschema.XMLSchema
) -> None:
    t11_1 = duis_ref.template(T11_1)
    image = parse_image(template_image(t11_1))
    # The template's FirmwareVersion is not the image's: DUIS does not ask for a match.
    assert b"<sr:FirmwareVersion>00000000</sr:FirmwareVersion>" in t11_1
    assert image.header.file_version != 0
    assert b"<sr:DeviceIDList>00-DB-12-34-56-78-90-A0</sr:DeviceIDList>" in t11_1

    status, body, _ = await fleet.post(t11_1)
    assert_acknowledged(schema, status, body, request_id(t11_1))
    (stored,) = fleet.scheduler.images.values()
    assert stored.firmware_hash == image.firmware_hash

    sent = [with_hash(duis_ref.template(t), image.firmware_hash) for t in (T11_3_NOW, T11_3_LATER)]
    for doc in sent:
        status, body, _ = await fleet.post(doc, path="/duis")  # the older path, same route
        assert_acknowledged(schema, status, body, request_id(doc))
    now, later = sorted(fleet.scheduler.requests, key=lambda r: r.execution_time)
    assert later.execution_time > now.execution_time
    # The cancellation is sent once the immediate 11.3 is done and the DCO holds the
    # future-dated one for its ExecutionDateTime (2030-01-15T09:00:00.00Z).
    await asyncio.wait_for(fleet.dco.holding.wait(), WAIT_SECONDS)
    await fleet.callbacks_reach(2)  # the 11.1's response and the immediate 11.3's
    assert now.state.value == "done"
    cancel = with_hash(duis_ref.template(T11_3_CANCEL), image.firmware_hash)
    status, body, _ = await fleet.post(cancel)
    assert_acknowledged(schema, status, body, request_id(cancel))

    t11_2 = duis_ref.template(T11_2)
    status, body, _ = await fleet.post(t11_2, AUTH_READER)
    assert_acknowledged(schema, status, body, request_id(t11_2))

    # The supplier's callback: the 11.1 response, the immediate 11.3's, the withdrawn
    # future-dated 11.3's and the cancellation's own (in the order they completed).
    bodies = await fleet.callbacks_reach(4)
    await asyncio.wait_for(fleet.scheduler.wait_idle(), WAIT_SECONDS)
    roots = {header(r, "RequestID"): r for r in (assert_schema_valid(schema, b) for b in bodies)}
    assert all(b.endswith(PLACEHOLDER_SIGNATURE + b"</sr:Response>") for b in bodies)  # sealed
    assert len(roots) == 4 and len(fleet.callbacks) == 4
    for rid, root in roots.items():
        assert header(root, "ResponseID") == swapped(rid)
        assert header(root, "ResponseCode") == "I0"

    r11_1 = roots[request_id(t11_1)]
    message = r11_1.find(f"{q('Body')}/{q('ResponseMessage')}")
    assert message is not None and message.findtext(q("ServiceReference")) == "11.1"

    def activate_rsp(doc: bytes) -> ET.Element:
        root = roots[request_id(doc)]
        inner = root.find(f"{q('Body')}/{q('SMETS1ResponseMessage')}/{q('SMETS1SignedResponse')}")
        assert inner is not None
        head = inner.find(f"{q('SMETS1Response')}/{q('Header')}")
        assert head is not None
        assert head.findtext(ra("BusinessOriginatorID")) == format_eui64(ESME)
        assert head.findtext(ra("BusinessTargetID")) == format_eui64(SUPPLIER)
        assert head.findtext(ra("OriginatorCounter")) == request_id(doc).split(":")[2]
        rsp = inner.find(
            f"{q('SMETS1Response')}/{q('Body')}/{q('ResponseMessage')}/{ra('SMETSData')}/"
            f"{ra('ActivateFirmwareRsp')}"
        )
        assert rsp is not None
        return rsp

    done = activate_rsp(sent[0])
    assert done.get("MessageSuccess") == "true"
    assert done.findtext(f"{ra('ActivateImageResponseCode')}/{ra('ASN1Status')}") == "success"
    assert done.findtext(ra("FirmwareVersion")) == f"{image.header.file_version:08X}"
    withdrawn = activate_rsp(sent[1])
    assert withdrawn.get("MessageSuccess") == "false"
    assert withdrawn.find(ra("ActivateImageResponseCode")) is None
    assert activate_rsp(cancel).get("MessageSuccess") == "true"
    assert later.state.value == "cancelled" and now.state.value == "done"

    # READER has no callback: it polls, one document a call, then 204.
    await fleet.background_done()
    resp = await fleet.client.get("/duis/responses", headers=AUTH_READER)
    assert resp.status == 200
    polled = assert_schema_valid(schema, await resp.read())
    assert polled.tag == q("Response")
    assert header(polled, "ResponseID") == swapped(request_id(t11_2))
    rsp = polled.find(
        f"{q('Body')}/{q('SMETS1ResponseMessage')}/{q('SMETS1SignedResponse')}/"
        f"{q('SMETS1Response')}/{q('Body')}/{q('ResponseMessage')}/{ra('SMETSData')}/"
        f"{ra('ReadFirmwareVersionRsp')}"
    )
    assert rsp is not None and rsp.get("MessageSuccess") == "true"
    assert rsp.findtext(ra("FirmwareVersion")) == "01000000"
    last = resp.headers["X-Last-Id"]
    resp = await fleet.client.get(f"/duis/responses?after={last}", headers=AUTH_READER)
    assert resp.status == 204 and resp.headers["X-Last-Id"] == last
    assert READ_ESME in fleet.scheduler.devices and READER in fleet.scheduler.users


async def test_templates_signed_by_the_dcc_tool_are_accepted(
    fleet: Fleet, duis_ref: DuisReference, schema: xmlschema.XMLSchema, tmp_path: Path
) -> None:
    """The 11.1 and 11.2 templates as a User's DCC tooling sends them: signed with the
    sender's ZAZ1 test key by the DCC's own Sign (the counter kept)."""
    for name, auth in ((T11_1, None), (T11_2, AUTH_READER)):
        path = tmp_path / name
        path.write_bytes(duis_ref.template(name))
        signed = duis_ref.sign(path).encode()
        assert b"ZGVmYXVsdA==" not in signed  # the placeholders were replaced
        status, body, _ = await (fleet.post(signed) if auth is None else fleet.post(signed, auth))
        assert_acknowledged(schema, status, body, request_id(signed))


async def test_an_acknowledgement_and_a_response_pass_the_dcc_validate_once_signed(
    fleet: Fleet, duis_ref: DuisReference, tmp_path: Path
) -> None:
    """The DCC's Validate (schema and signature) on the scheduler's own I99 and on its
    asynchronous 11.1 response (with ResponseID), each signed by the DCC's Sign: what
    `DuisSecurity.seal` will do with the DCC's key. Validate needs a signature, which
    the seal of this branch does not add yet, so the stand-in is taken off first."""
    doc = duis_ref.template(T11_1)
    status, ack, _ = await fleet.post(doc)
    assert status == 200
    (response,) = await fleet.callbacks_reach(1)
    assert b"<sr:ResponseID>" in response
    for name, body in (("ack.xml", ack), ("response.xml", response)):
        unsigned = body.split(b"<ds:Signature")[0] + b"</sr:Response>"
        path = tmp_path / name
        path.write_bytes(unsigned)
        signed = duis_ref.sign(path)
        path.write_text(signed)
        result = duis_ref.validate(path)
        assert result.passed, (name, result.returncode, result.stdout, result.stderr, signed)
