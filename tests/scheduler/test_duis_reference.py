"""The DCC's own DUIS templates, signed by the DCC's own tool, sent to the scheduler, and
every answer checked against the DCC's DUIS 5.1 / MMC 5.1 schemas and by the DCC's
Validate (tests/duis_reference.py fetches the tool, schemas and templates at test time).

Changed in the templates: nothing but the FirmwareHash each 11.3 names (the hash of the
image the 11.1 template stored, as the issue allows); the DCC's Sign then signs each with
its sender's test key and gives it a fresh counter (as a User's DCC tooling does: the
templates share counter 1000, which DUIS would refuse as a replay). The scheduler knows
the senders' certificates from the tool and signs with the DCC's test key. The fleet is
built around the templates' Users and devices (tests/scheduler/duis_fleet.py). The 11.1
template's FirmwareImage is the DCC's sample ZigBee OTA file (361 bytes, manufacturer
0x121D, no project signature): the scheduler takes it as it is, and its FirmwareVersion
00000000, which is not the image's file version, is not compared (DUIS does not ask the
DCC to).
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


#: The certificate the DCC's Sign uses for each sender (the tool's own test set), and
#: the DCC's key and certificate, which its Validate knows (tests of xmldsig say more).
CERTIFICATES = {
    SUPPLIER: "xml-sign-90B3D51F30010000-ds.pem",
    READER: "dsp-xml-sign-90B3D51F30000002-ds.pem",
}
DCC_KEY = "dsp-xml-sign-90B3D51F30000002-ds.key"
DCC_CERT = "dsp-xml-sign-90B3D51F30000002-ds.pem"


def _jar_files(ref: DuisReference, folder: Path, names: list[str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        out[name] = folder / name
        out[name].write_bytes(ref.jar_member(name))
    return out


@pytest.fixture
async def fleet(duis_ref: DuisReference, tmp_path: Path) -> AsyncIterator[Fleet]:
    files = _jar_files(duis_ref, tmp_path / "keys", [*CERTIFICATES.values(), DCC_KEY])
    duis = {
        "signing_key": str(files[DCC_KEY]),
        "signing_certificate": str(files[DCC_CERT]),
        "schema_dir": str(duis_ref.schema_dir),
    }
    certs = {user: files[name] for user, name in CERTIFICATES.items()}
    async for f in serve_fleet(seal=None, certificates=certs, duis=duis):
        yield f


def tool_signed(ref: DuisReference, folder: Path, doc: bytes, name: str) -> bytes:
    """`doc` signed by the DCC's Sign with its sender's key, under a fresh counter."""
    path = folder / name
    path.write_bytes(doc)
    signed = ref.sign(path, preserve_counter=False).encode()
    assert b"ZGVmYXVsdA==" not in signed  # the template's placeholders were replaced
    return signed


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
    fleet: Fleet, duis_ref: DuisReference, schema: xmlschema.XMLSchema, tmp_path: Path
) -> None:
    def signed(doc: bytes, name: str) -> bytes:
        return tool_signed(duis_ref, tmp_path, doc, name)

    t11_1 = duis_ref.template(T11_1)
    image = parse_image(template_image(t11_1))
    # The template's FirmwareVersion is not the image's: DUIS does not ask for a match.
    assert b"<sr:FirmwareVersion>00000000</sr:FirmwareVersion>" in t11_1
    assert image.header.file_version != 0
    assert b"<sr:DeviceIDList>00-DB-12-34-56-78-90-A0</sr:DeviceIDList>" in t11_1

    t11_1 = signed(t11_1, T11_1)
    status, body, _ = await fleet.post(t11_1)
    assert_acknowledged(schema, status, body, request_id(t11_1))
    (stored,) = fleet.scheduler.images.values()
    assert stored.firmware_hash == image.firmware_hash

    sent = [
        signed(with_hash(duis_ref.template(t), image.firmware_hash), t)
        for t in (T11_3_NOW, T11_3_LATER)
    ]
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
    cancel = signed(with_hash(duis_ref.template(T11_3_CANCEL), image.firmware_hash), T11_3_CANCEL)
    status, body, _ = await fleet.post(cancel)
    assert_acknowledged(schema, status, body, request_id(cancel))

    t11_2 = signed(duis_ref.template(T11_2), T11_2)
    status, body, _ = await fleet.post(t11_2, AUTH_READER)
    assert_acknowledged(schema, status, body, request_id(t11_2))

    # The supplier's callback: the 11.1 response, the immediate 11.3's, the withdrawn
    # future-dated 11.3's and the cancellation's own (in the order they completed).
    bodies = await fleet.callbacks_reach(4)
    await asyncio.wait_for(fleet.scheduler.wait_idle(), WAIT_SECONDS)
    roots = {header(r, "RequestID"): r for r in (assert_schema_valid(schema, b) for b in bodies)}
    # Sealed: signed with the DCC's key; the DCC's Validate passes a SMETS1 response
    # (its signed SMETS1SignedResponse inside) as it passes the others (below).
    assert all(b"<ds:SignatureValue>" in b and b"ZGVmYXVsdA==" not in b for b in bodies)
    smets1 = next(b for b in bodies if b"SMETS1SignedResponse" in b)
    assert smets1.count(b"<ds:SignatureValue>") == 2  # the inner one and the outer
    path = tmp_path / "smets1-response.xml"
    path.write_bytes(smets1)
    result = duis_ref.validate(path)
    assert result.passed, (result.returncode, result.stderr, smets1)
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


async def test_what_the_scheduler_sends_passes_the_dcc_validate(
    fleet: Fleet, duis_ref: DuisReference, tmp_path: Path
) -> None:
    """The DCC's Validate (schema and signature) on the scheduler's own I99, its
    asynchronous 11.1 response (with ResponseID) and a refusal, as the scheduler sent
    them: signed with the DCC's key by `DuisSecurity.seal`. One spoilt byte fails it."""
    doc = tool_signed(duis_ref, tmp_path, duis_ref.template(T11_1), T11_1)
    status, ack, _ = await fleet.post(doc)
    assert status == 200
    (response,) = await fleet.callbacks_reach(1)
    assert b"<sr:ResponseID>" in response
    status, refusal, _ = await fleet.post(doc)  # the same counter again: a replay
    assert status != 200 and b"<sr:ResponseCode>E" in refusal
    for name, body in (("ack.xml", ack), ("response.xml", response), ("refusal.xml", refusal)):
        path = tmp_path / name
        path.write_bytes(body)
        result = duis_ref.validate(path)
        assert result.passed, (name, result.returncode, result.stdout, result.stderr, body)
    spoilt = tmp_path / "spoilt.xml"
    spoilt.write_bytes(ack.replace(b"<sr:ResponseCode>I99", b"<sr:ResponseCode>I0"))
    assert duis_ref.validate(spoilt).returncode == 10
