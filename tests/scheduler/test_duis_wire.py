"""DUIS on the wire: refusal codes, the DCC's DeviceIDList, alerts, the SMETS1 response
body, what stays off the XML, and polling — every document checked against the DCC's
DUIS 5.1 schema (fetched at test time by tests/duis_reference.py)."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest
import xmlschema

from scheduler import duis
from scheduler.errors import BadDocument
from smets1.eui64 import format_eui64
from tests.duis_reference import DuisReference
from tests.scheduler.duis_fleet import (
    AUTH_READER,
    AUTH_SUPPLIER,
    ESME,
    OTHERS_ESME,
    PLACEHOLDER_SIGNATURE,
    READ_ESME,
    READER,
    SUPPLIER,
    Fleet,
    assert_schema_valid,
    load_schema,
    placeholder_seal,
    q,
    ra,
    serve_fleet,
)
from tests.scheduler.fakes import LARGE_IMAGE

S = format_eui64(SUPPLIER)
DCC = "90-B3-D5-1F-30-00-00-02"
AT = 1_740_787_200.0  # 2025-03-01T00:00:00Z


@pytest.fixture(scope="module")
def schema(duis_ref: DuisReference) -> xmlschema.XMLSchema:
    return load_schema(duis_ref.schema_dir)


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async for f in serve_fleet():
        yield f


def request(ref: str, body: str, counter: int, target: str, sender: str = S) -> bytes:
    """A request in the DCC templates' shape (unsigned: signing is DuisSecurity's)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<sr:Request xmlns:sr="{duis.NS}" schemaVersion="5.4"><sr:Header>'
        f"<sr:RequestID>{sender}:{target}:{counter}</sr:RequestID>"
        "<sr:CommandVariant>8</sr:CommandVariant>"
        f"<sr:ServiceReference>{ref}</sr:ServiceReference>"
        f"<sr:ServiceReferenceVariant>{ref}</sr:ServiceReferenceVariant>"
        f"</sr:Header><sr:Body>{body}</sr:Body></sr:Request>"
    ).encode()


def update(device_list: str, image: bytes = LARGE_IMAGE, version: str = "v2.0") -> str:
    return (
        f"<sr:UpdateFirmware><sr:FirmwareImage>{base64.b64encode(image).decode()}"
        f"</sr:FirmwareImage><sr:FirmwareVersion>{version}</sr:FirmwareVersion>"
        f"<sr:DeviceIDList>{device_list}</sr:DeviceIDList></sr:UpdateFirmware>"
    )


def activate(firmware_hash: str = "ab" * 32) -> str:
    hash_el = f"<sr:FirmwareHash>{firmware_hash}</sr:FirmwareHash>"
    return f"<sr:ActivateFirmware>{hash_el}</sr:ActivateFirmware>"


def code_of(root: ET.Element) -> str:
    return root.findtext(f"{q('Header')}/{q('ResponseCode')}") or ""


# -- refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "auth", "status", "code", "needle"),
    [
        # DUIS E19: the device does not exist.
        (
            request("11.3", activate(), 1, "00-DB-12-34-56-78-90-FF"),
            AUTH_SUPPLIER,
            400,
            "E19",
            "unknown device 00-DB-12-34-56-78-90-FF",
        ),
        (request("11.1", update(f"{format_eui64(ESME)},00-DB-00-00-00-00-00-01"), 1, DCC),
         AUTH_SUPPLIER, 400, "E19", "unknown device 00-DB-00-00-00-00-00-01"),
        # DUIS E4: the User may not act on that device (another User supplies it).
        (request("11.2", "<sr:ReadFirmwareVersion/>", 1, format_eui64(OTHERS_ESME)),
         AUTH_SUPPLIER, 403, "E4", format_eui64(OTHERS_ESME)),
        # DUIS E1: not this User (the RequestID names another sender).
        (request("11.2", "<sr:ReadFirmwareVersion/>", 1, format_eui64(READ_ESME),
                 sender=format_eui64(READER)), AUTH_SUPPLIER, 403, "E1", "sender"),
        (request("11.2", "<sr:ReadFirmwareVersion/>", 1, format_eui64(ESME)), {}, 401, "E1",
         "bearer token"),
        # DUIS E13: a request type this URL does not serve.
        (request("8.2", "<sr:ReadInventory/>", 1, format_eui64(ESME)), AUTH_SUPPLIER, 400,
         "E13", "serves 11.1, 11.2 and 11.3"),
        # E40: a document the scheduler cannot use (see README: DUIS code table).
        (b"<sr:Request", AUTH_SUPPLIER, 400, "E40", "not well-formed"),
        (request("11.1", update(format_eui64(ESME), image=b"not an image"), 1, DCC),
         AUTH_SUPPLIER, 400, "E40", "not a firmware image"),
        (request("11.1", update(format_eui64(ESME), version="123456789"), 1, DCC),
         AUTH_SUPPLIER, 400, "E40", "1 to 8 characters"),
        (request("11.1", update(f"{format_eui64(ESME)},00-DB-XX"), 1, DCC), AUTH_SUPPLIER, 400,
         "E40", "(device 2)"),
        (request("11.3", activate(), 1, format_eui64(ESME)), AUTH_SUPPLIER, 400, "E40",
         "no image with hash"),
    ],
)  # fmt: skip
async def test_refusals_carry_the_duis_code_and_say_why_off_the_schema(
    fleet: Fleet,
    schema: xmlschema.XMLSchema,
    doc: bytes,
    auth: dict[str, str],
    status: int,
    code: str,
    needle: str,
) -> None:
    got, body, headers = await fleet.post(doc, auth)
    assert got == status, body
    root = assert_schema_valid(schema, body)
    assert code_of(root) == code
    assert body.endswith(PLACEHOLDER_SIGNATURE + b"</sr:Response>")  # sealed
    assert needle in headers["X-Reason"]
    assert needle.encode() in body  # the XML comment, outside the DUIS elements
    if b"<sr:RequestID>" in doc and status != 401:
        sent = doc.split(b"<sr:RequestID>")[1].split(b"<")[0].decode()
        assert root.findtext(f"{q('Header')}/{q('RequestID')}") == sent
    assert fleet.scheduler.requests == [] and fleet.scheduler.images == {}
    assert fleet.scheduler.store.notifications(SUPPLIER) == []


async def test_a_wrong_method_and_a_used_request_id_are_refused_as_duis(
    fleet: Fleet, schema: xmlschema.XMLSchema
) -> None:
    resp = await fleet.client.get("/api/v1/serviceS", headers=AUTH_SUPPLIER)
    assert resp.status == 405
    assert code_of(assert_schema_valid(schema, await resp.read())) == "E13"
    doc = request("11.2", "<sr:ReadFirmwareVersion/>", 7, format_eui64(ESME))
    assert (await fleet.post(doc))[0] == 200
    status, body, headers = await fleet.post(doc, path="/duis")
    assert status == 400 and code_of(assert_schema_valid(schema, body)) == "E40"
    assert "already used" in headers["X-Reason"]


# -- 11.1 ---------------------------------------------------------------------------


def test_device_id_list_is_the_dccs_comma_separated_form() -> None:
    ids = [ESME, READ_ESME, OTHERS_ESME]
    text = ",".join(format_eui64(d) for d in ids)
    parsed = duis.parse_request(request("11.1", update(text), 1, DCC), 10_000_000)
    assert isinstance(parsed.body, duis.UpdateFirmware)
    assert parsed.body.device_ids == ids and parsed.body.firmware_version == "v2.0"
    children = "".join(f"<sr:DeviceID>{format_eui64(d)}</sr:DeviceID>" for d in ids)
    older = duis.parse_request(request("11.1", update(children), 1, DCC), 10_000_000)
    assert isinstance(older.body, duis.UpdateFirmware) and older.body.device_ids == ids
    for bad, needle in (("", "empty"), (f"{text},", "(device 4)"), ("00-DB", "(device 1)")):
        with pytest.raises(BadDocument, match=needle.replace("(", r"\(").replace(")", r"\)")):
            duis.parse_request(request("11.1", update(bad), 1, DCC), 10_000_000)


async def test_an_image_the_dco_cannot_store_is_a_firmware_distribution_failure_alert(
    fleet: Fleet, schema: xmlschema.XMLSchema
) -> None:
    async def refuse(image: bytes) -> Any:
        raise OSError("disk full")

    fleet.dco.update_firmware = refuse  # type: ignore[method-assign]
    meters = f"{format_eui64(ESME)}"
    doc = request("11.1", update(meters), 5, DCC)
    status, body, _ = await fleet.post(doc)
    assert status == 200 and code_of(assert_schema_valid(schema, body)) == "I99"
    (alert_doc,) = await fleet.callbacks_reach(1)
    root = assert_schema_valid(schema, alert_doc)
    alert = root.find(f"{q('Body')}/{q('DCCAlertMessage')}")
    assert alert is not None
    assert alert.findtext(q("DCCAlertCode")) == duis.FIRMWARE_DISTRIBUTION_FAILURE_ALERT
    failure = alert.find(f"{q('DCCAlert')}/{q('FirmwareDistributionFailure')}")
    assert failure is not None
    assert failure.findtext(q("UpdateFirmwareRequestID")) == f"{S}:{DCC}:5"
    assert failure.findtext(q("MeterIDs")) == meters
    # The reason DUIS has no element for is on the JSON API.
    r = await fleet.client.get("/v1/notifications", headers=AUTH_SUPPLIER)
    (note,) = await r.json()
    assert "disk full" in note["payload"]["failure"]


# -- responses, rendered --------------------------------------------------------------


def _payload(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "duis_request_id": f"{S}:{format_eui64(ESME)}:42",
        "service_reference": "11.3",
        "device_id": format_eui64(ESME),
        "response_code": "E99",
        "state": "failed",
        "failure": None,
    }
    return base | kw


def _activate_rsp(root: ET.Element) -> ET.Element:
    rsp = root.find(
        f"{q('Body')}/{q('SMETS1ResponseMessage')}/{q('SMETS1SignedResponse')}/"
        f"{q('SMETS1Response')}/{q('Body')}/{q('ResponseMessage')}/{ra('SMETSData')}/"
        f"{ra('ActivateFirmwareRsp')}"
    )
    assert rsp is not None
    return rsp


@pytest.mark.parametrize(
    ("payload", "code", "status"),
    [
        (_payload(failure="hash_mismatch"), "I0", "hashMismatch"),
        (_payload(failure="no_transfer"), "I0", "noImageHeld"),
        (_payload(failure="boot_failed", firmware_version="01000000"), "I0", "activationFailure"),
        (_payload(failure="version_mismatch"), "I0", "activationFailure"),
        (_payload(failure="timeout"), "E21", None),
        (_payload(failure="version_read_timeout"), "E21", None),
        (_payload(failure="offline"), "E20", None),
        (_payload(failure="dco_error: OSError"), "E20", None),
        (_payload(service_reference="11.2", failure="offline"), "E20", None),
    ],
)
def test_device_outcomes_render_as_duis_defines_them(
    schema: xmlschema.XMLSchema, payload: dict[str, Any], code: str, status: str | None
) -> None:
    doc = duis.render_notification("response", AT, payload, placeholder_seal)
    assert doc is not None
    root = assert_schema_valid(schema, doc)
    assert code_of(root) == code
    assert root.findtext(f"{q('Header')}/{q('ResponseID')}") == f"{format_eui64(ESME)}:{S}:42"
    if status is None:
        assert root.find(f"{q('Body')}/{q('ResponseMessage')}") is not None
    else:
        rsp = _activate_rsp(root)
        assert rsp.get("MessageSuccess") == "false"
        assert rsp.findtext(f"{ra('ActivateImageResponseCode')}/{ra('ASN1Status')}") == status


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("held", _payload(state="held")),
        ("refused", _payload(reason="over capacity")),
        ("schedule_moved", _payload()),
        ("overdue", _payload(state="waiting")),
        ("response", _payload(state="not_cancelled", failure="cancellation: no_transfer")),
        ("response", _payload(duis_request_id=None, state="done")),
    ],
)
def test_what_duis_has_no_element_for_stays_off_the_xml(kind: str, payload: dict[str, Any]) -> None:
    assert duis.render_notification(kind, AT, payload, placeholder_seal) is None


def test_the_sealed_inner_response_travels_byte_for_byte() -> None:
    """The SMETS1SignedResponse is sealed on its own, then carried unchanged, so that its
    signature verifies when it is taken out; the outer document is sealed after."""
    sealed: list[bytes] = []

    def seal(document: bytes) -> bytes:
        out = placeholder_seal(document).replace(b"ZGVmYXVsdA==", f"N{len(sealed)}==".encode())
        sealed.append(out)
        return out

    doc = duis.render_notification("response", AT, _payload(state="done"), seal)
    assert doc is not None and len(sealed) == 2 and doc == sealed[1]
    inner = sealed[0].split(b"?>", 1)[1].lstrip()
    assert inner.startswith(b"<sr:SMETS1SignedResponse") and inner in doc


async def test_polling_gives_one_document_a_call_and_skips_what_duis_cannot_say(
    fleet: Fleet, schema: xmlschema.XMLSchema
) -> None:
    s = fleet.scheduler
    rid = f"{format_eui64(READER)}:{format_eui64(READ_ESME)}:9"
    s.notifier.post(READER, "held", {"duis_request_id": rid, "reason": "over allowance"})
    doc = request("11.2", "<sr:ReadFirmwareVersion/>", 9, format_eui64(READ_ESME),
                  sender=format_eui64(READER))  # fmt: skip
    assert (await fleet.post(doc, AUTH_READER))[0] == 200
    await fleet.background_done()
    r = await fleet.client.get("/v1/notifications", headers=AUTH_READER)
    assert [n["kind"] for n in await r.json()] == ["held", "response"]
    resp = await fleet.client.get("/duis/responses", headers=AUTH_READER)
    assert resp.status == 200 and resp.content_type == "application/xml"
    root = assert_schema_valid(schema, await resp.read())
    assert root.tag == q("Response") and code_of(root) == "I0"
    assert root.findtext(f"{q('Header')}/{q('RequestID')}") == rid
    assert resp.headers["X-Last-Id"] == "2"
    resp = await fleet.client.get("/duis/responses?after=2", headers=AUTH_READER)
    assert resp.status == 204 and resp.headers["X-Last-Id"] == "2"


async def test_a_held_notice_is_not_posted_to_a_duis_callback(fleet: Fleet) -> None:
    s = fleet.scheduler
    rid = f"{S}:{format_eui64(ESME)}:3"
    s.notifier.post(SUPPLIER, "held", {"duis_request_id": rid, "reason": "over allowance"})
    doc = request("11.2", "<sr:ReadFirmwareVersion/>", 3, format_eui64(ESME))
    assert (await fleet.post(doc))[0] == 200
    (only,) = await fleet.callbacks_reach(1)
    await fleet.background_done()
    assert b"ReadFirmwareVersionRsp" in only and b"held" not in only
    assert len(fleet.callbacks) == 1
