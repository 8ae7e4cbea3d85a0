"""DUIS documents: `sr:Request` in (SRV 11.1, 11.2, 11.3), `sr:Response` out.

Requests are read as the DCC's own templates write them (namespace `NS`, prefix `sr`)::

    <sr:Request xmlns:sr="http://www.dccinterface.co.uk/ServiceUserGateway" schemaVersion="5.4">
      <sr:Header>
        <sr:RequestID>90-B3-D5-1F-30-01-00-00:00-DB-12-34-56-78-90-A0:1000</sr:RequestID>
        <sr:CommandVariant>4</sr:CommandVariant>
        <sr:ServiceReference>11.3</sr:ServiceReference>
        <sr:ServiceReferenceVariant>11.3</sr:ServiceReferenceVariant>
      </sr:Header>
      <sr:Body>
        <sr:ActivateFirmware>
          <sr:ExecutionDateTime>2030-01-15T09:00:00.00Z</sr:ExecutionDateTime>   (optional)
          <sr:FirmwareHash>64 hex digits</sr:FirmwareHash>
        </sr:ActivateFirmware>
      </sr:Body>
      <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">…</ds:Signature>
    </sr:Request>

`sr:UpdateFirmware` (11.1) holds `FirmwareImage` (base64), `FirmwareVersion` (1 to 8
characters, as the User names the version; DUIS does not ask the DCC to compare it with
the image) and `DeviceIDList`: ONE element of comma-separated EUI-64s (`DeviceID`
children are read too); `sr:ReadFirmwareVersion` (11.2) is empty. The RequestID is
`sender:target:counter`; the target of an 11.1 is the DCC, of an 11.2 or 11.3 the device.
The signature is checked by `scheduler.duis_security`, not here.

Responses (`acknowledgement`, `device_response`, `failure_response`,
`firmware_distribution_failure`) follow the DUIS 5.1 and MMC 5.1 schemas: README.md
shows each shape and says when it is sent.

The parser is expat with no DTD: a document that declares one (and so any entity) is
refused before anything in it is used.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.parsers import expat

from scheduler.errors import BadDocument, UnsupportedService
from smets1.clock import to_datetime
from smets1.eui64 import format_eui64, parse_eui64

NS = "http://www.dccinterface.co.uk/ServiceUserGateway"
RA_NS = "http://www.dccinterface.co.uk/ResponseAndAlert"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
#: The DUIS and MMC schema version of every document the scheduler writes.
SCHEMA_VERSION = "5.1"
ET.register_namespace("sr", NS)
ET.register_namespace("ra", RA_NS)
ET.register_namespace("ds", DS_NS)

SERVICE_BODIES = {
    "11.1": "UpdateFirmware",
    "11.2": "ReadFirmwareVersion",
    "11.3": "ActivateFirmware",
}
#: Limits on a DUIS document beside its size in bytes (config `max_document_bytes`). A
#: real 11.1 holds a few dozen elements (plus one per DeviceID); the signature is about 20.
MAX_ELEMENTS = 20_000
MAX_DEPTH = 32
MAX_NAME_CHARS = 256
MAX_ATTRIBUTE_CHARS = 1_024
PARSE_CHUNK_BYTES = 64 * 1024
BASE64_CHUNK_CHARS = 256 * 1024  # a multiple of 4: only the last piece may hold padding
_REQUEST_ID_RE = re.compile(r"^([0-9A-Fa-f-]{16,23}):([0-9A-Fa-f-]{16,23}):(\d{1,20})$")
_HEX_RE = re.compile(r"^[0-9A-Fa-f]*$")
#: sr:FirmwareVersion: xs:string of 1 to 8 characters (DUIS 5.1).
MAX_FIRMWARE_VERSION_CHARS = 8
_COMMAND_VARIANT_RE = re.compile(r"^[1-8]$")


def _q(local: str) -> str:
    return f"{{{NS}}}{local}"


@dataclass(frozen=True, slots=True)
class DuisHeader:
    request_id: str
    sender: int
    target: int
    counter: int
    command_variant: int
    service_reference: str
    service_reference_variant: str


@dataclass(frozen=True, slots=True)
class UpdateFirmware:
    image: bytes
    firmware_version: str  # as the User wrote it; never compared with the image
    device_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ActivateFirmware:
    firmware_hash: bytes
    execution_time: float | None


@dataclass(frozen=True, slots=True)
class ReadFirmwareVersion:
    pass


DuisBody = UpdateFirmware | ActivateFirmware | ReadFirmwareVersion


@dataclass(frozen=True, slots=True)
class DuisRequest:
    header: DuisHeader
    body: DuisBody


# -- a parser that refuses DTDs and entities ----------------------------------------


class _Hostile(Exception):
    pass


def _refuse(what: str) -> Any:
    def handler(*_: Any) -> Any:
        raise _Hostile(what)

    return handler


def _qname(name: str) -> str:
    uri, sep, local = name.rpartition("}")
    return f"{{{uri}}}{local}" if sep else name


def parse_xml(
    data: bytes,
    *,
    max_elements: int = MAX_ELEMENTS,
    max_depth: int = MAX_DEPTH,
) -> ET.Element:
    """Parse with expat; any DTD, entity declaration or external reference is refused.

    The document is fed in chunks and its elements counted as they open, so one past
    `max_elements` or `max_depth` (or a name or attribute value past its limit) stops
    the parse there: a hostile document costs at most what its first `max_elements`
    elements cost, never a tree of millions.
    """
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse("a DTD (<!DOCTYPE>) is not allowed in DUIS")
    parser.EntityDeclHandler = _refuse("an entity declaration is not allowed in DUIS")
    parser.ExternalEntityRefHandler = _refuse("an external entity is not allowed in DUIS")
    elements = 0
    depth = 0

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal elements, depth
        elements += 1
        depth += 1
        if elements > max_elements:
            raise _Hostile(f"more than {max_elements} elements (the limit)")
        if depth > max_depth:
            raise _Hostile(f"elements nested more than {max_depth} deep (the limit)")
        if len(name) > MAX_NAME_CHARS:
            raise _Hostile(f"an element name of {len(name)} characters (limit {MAX_NAME_CHARS})")
        for key, value in attrs.items():
            if len(key) > MAX_NAME_CHARS or len(value) > MAX_ATTRIBUTE_CHARS:
                raise _Hostile(
                    f"attribute {short(_qname(key))} of {short(_qname(name))} is "
                    f"{len(value)} characters (limit {MAX_ATTRIBUTE_CHARS})"
                )
        builder.start(_qname(name), {_qname(k): v for k, v in attrs.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(_qname(name))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        view = memoryview(data)
        for offset in range(0, len(data), PARSE_CHUNK_BYTES):
            parser.Parse(bytes(view[offset : offset + PARSE_CHUNK_BYTES]), False)
        parser.Parse(b"", True)
    except _Hostile as exc:
        raise BadDocument("document", str(exc)) from None
    except expat.ExpatError as exc:
        raise BadDocument("document", f"not well-formed XML: {exc}") from None
    except (ValueError, LookupError) as exc:  # e.g. an encoding expat cannot use
        raise BadDocument("document", f"cannot be read: {short(str(exc))}") from None
    return builder.close()


def short(text: str, chars: int = 60) -> str:
    """`text` as a quoted, printable excerpt for an error message (never the whole of a
    hostile value)."""
    if len(text) <= chars:
        return repr(text)
    return f"{text[:chars]!r}… ({len(text)} characters)"


# -- requests -----------------------------------------------------------------------


def _child(parent: ET.Element, local: str, where: str, required: bool = True) -> ET.Element | None:
    found = parent.findall(_q(local))
    if len(found) > 1:
        raise BadDocument(f"{where}/sr:{local}", "appears more than once")
    if not found:
        if required:
            raise BadDocument(f"{where}/sr:{local}", "missing")
        return None
    return found[0]


def _text(parent: ET.Element, local: str, where: str) -> str:
    el = _child(parent, local, where)
    assert el is not None
    return (el.text or "").strip()


def _eui(text: str, where: str) -> int:
    try:
        return parse_eui64(text)
    except ValueError:
        raise BadDocument(
            where, f"expected an EUI-64 like 00-DB-12-34-56-78-90-A0, got {short(text)}"
        ) from None


def parse_request(data: bytes, max_bytes: int) -> DuisRequest:
    """A DUIS `sr:Request` for 11.1, 11.2 or 11.3; BadDocument names what is wrong."""
    if len(data) > max_bytes:
        raise BadDocument("document", f"{len(data)} bytes is over the {max_bytes}-byte limit")
    root = parse_xml(data)
    if root.tag != _q("Request"):
        uri, _, local = (
            root.tag[1:].rpartition("}") if root.tag.startswith("{") else ("", "", root.tag)
        )
        if local == "Request":
            raise BadDocument(
                "sr:Request", f"wrong namespace {short(uri) if uri else '(none)'}: expected {NS!r}"
            )
        raise BadDocument("document", f"the root element must be sr:Request, got {short(local)}")
    for el in root:
        if el.tag not in (_q("Header"), _q("Body"), f"{{{DS_NS}}}Signature"):
            raise BadDocument("sr:Request", f"unexpected element {short(el.tag)}")
    header_el = _child(root, "Header", "sr:Request")
    body_el = _child(root, "Body", "sr:Request")
    assert header_el is not None and body_el is not None
    try:
        return _parse_request(header_el, body_el)
    except BadDocument as exc:
        exc.duis_context = _partial_header(header_el)
        raise


_SERVICE_REFERENCE_RE = re.compile(r"^\d{1,2}\.\d{1,2}(\.\d{1,2})?$")


def _partial_header(el: ET.Element) -> tuple[RequestId | None, str | None, str | None]:
    """What a refusal can echo of a header that did not parse whole: the RequestID and
    ServiceReference(Variant) where each is readable and well-formed, else None."""
    rid: RequestId | None = None
    try:
        rid = split_request_id(_text(el, "RequestID", "sr:Header"))
    except BadDocument:
        pass
    refs: list[str | None] = []
    for local in ("ServiceReference", "ServiceReferenceVariant"):
        found = el.findall(_q(local))
        text = (found[0].text or "").strip() if len(found) == 1 else ""
        refs.append(text if _SERVICE_REFERENCE_RE.match(text) else None)
    return rid, refs[0], refs[1] or refs[0]


def _parse_request(header_el: ET.Element, body_el: ET.Element) -> DuisRequest:
    header = _parse_header(header_el)
    expected = SERVICE_BODIES[header.service_reference]
    children = list(body_el)
    if len(children) != 1 or children[0].tag != _q(expected):
        got = ", ".join(short(c.tag) for c in children[:3]) or "nothing"
        if len(children) > 3:
            got += f" and {len(children) - 3} more"
        raise BadDocument(
            "sr:Body",
            f"ServiceReference {header.service_reference} needs one sr:{expected}, got {got}",
        )
    content = children[0]
    body: DuisBody
    if expected == "UpdateFirmware":
        body = _parse_update(content)
    elif expected == "ActivateFirmware":
        body = _parse_activate(content)
    else:
        body = ReadFirmwareVersion()
    return DuisRequest(header, body)


def _parse_header(el: ET.Element) -> DuisHeader:
    where = "sr:Header"
    rid = _text(el, "RequestID", where)
    m = _REQUEST_ID_RE.match(rid)
    if not m:
        raise BadDocument(
            f"{where}/sr:RequestID",
            f"expected sender-EUI64:target-EUI64:counter, got {rid[:80]!r}",
        )
    sender = _eui(m.group(1), f"{where}/sr:RequestID sender")
    target = _eui(m.group(2), f"{where}/sr:RequestID target")
    cv_text = _text(el, "CommandVariant", where)
    if not _COMMAND_VARIANT_RE.match(cv_text):
        raise BadDocument(f"{where}/sr:CommandVariant", f"expected 1 to 8, got {cv_text[:20]!r}")
    ref = _text(el, "ServiceReference", where)
    if ref not in SERVICE_BODIES:
        raise UnsupportedService(
            f"{where}/sr:ServiceReference",
            f"this URL serves 11.1, 11.2 and 11.3, got {ref[:20]!r}",
        )
    variant = _text(el, "ServiceReferenceVariant", where)
    if variant != ref and not variant.startswith(ref + "."):
        raise BadDocument(
            f"{where}/sr:ServiceReferenceVariant",
            f"{variant[:20]!r} is not a variant of {ref}",
        )
    return DuisHeader(
        rid,
        sender,
        target,
        int(m.group(3)),
        int(cv_text),
        ref,
        variant,
    )


def _parse_update(el: ET.Element) -> UpdateFirmware:
    where = "sr:UpdateFirmware"
    raw = "".join(_text(el, "FirmwareImage", where).split())
    try:
        # In pieces: one call on megabytes holds the GIL throughout, and this may run in
        # a worker thread beside the event loop.
        image = b"".join(
            base64.b64decode(raw[i : i + BASE64_CHUNK_CHARS], validate=True)
            for i in range(0, len(raw), BASE64_CHUNK_CHARS)
        )
    except (binascii.Error, ValueError):
        raise BadDocument(f"{where}/sr:FirmwareImage", "not valid base64") from None
    if not image:
        raise BadDocument(f"{where}/sr:FirmwareImage", "empty")
    version = _text(el, "FirmwareVersion", where)
    if not 1 <= len(version) <= MAX_FIRMWARE_VERSION_CHARS:
        raise BadDocument(
            f"{where}/sr:FirmwareVersion",
            f"expected 1 to {MAX_FIRMWARE_VERSION_CHARS} characters, got {short(version, 20)}",
        )
    devices_el = _child(el, "DeviceIDList", where)
    assert devices_el is not None
    ids = _device_ids(devices_el, f"{where}/sr:DeviceIDList")
    return UpdateFirmware(image, version, ids)


def _device_ids(el: ET.Element, where: str) -> list[int]:
    """The DCC's form: comma-separated EUI-64s in the element's text; or `DeviceID`
    children (an older form of this test double)."""
    children = list(el)
    if children:
        if (el.text or "").strip():
            raise BadDocument(where, "holds both text and DeviceID elements")
        for c in children:
            if c.tag != _q("DeviceID"):
                raise BadDocument(where, f"unexpected element {short(c.tag)}")
        texts = [(c.text or "").strip() for c in children]
    else:
        text = (el.text or "").strip()
        if not text:
            raise BadDocument(where, "empty: expected comma-separated EUI-64s")
        texts = [t.strip() for t in text.split(",")]
    ids = []
    for n, t in enumerate(texts, 1):
        ids.append(_eui(t, f"{where} (device {n})"))
    return ids


def _parse_activate(el: ET.Element) -> ActivateFirmware:
    where = "sr:ActivateFirmware"
    text = _text(el, "FirmwareHash", where)
    if len(text) != 64 or not _HEX_RE.match(text):
        raise BadDocument(
            f"{where}/sr:FirmwareHash",
            f"expected 64 hex digits (SHA-256), got {len(text)} characters {text[:16]!r}…",
        )
    when = _child(el, "ExecutionDateTime", where, required=False)
    execution: float | None = None
    if when is not None:
        value = (when.text or "").strip()
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadDocument(
                f"{where}/sr:ExecutionDateTime", f"not an xs:dateTime: {value[:40]!r}"
            ) from None
        execution = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    return ActivateFirmware(bytes.fromhex(text), execution)


# -- responses ----------------------------------------------------------------------
#
# Every builder returns a complete document (XML declaration included) that the caller
# passes through `DuisSecurity.seal` before it leaves the scheduler.

#: DCC alert code of a FirmwareDistributionFailure (DUIS 5.1 DCCAlertCode enumeration).
FIRMWARE_DISTRIBUTION_FAILURE_ALERT = "N16"
#: GBCS ActivateImageResponseCode: the MMC `StatusASN1` carries it twice, as the
#: `ResponseCode` attribute (hex) and as the `ASN1Status` name.
ACTIVATE_IMAGE_CODES = {"success": 0, "noImageHeld": 1, "hashMismatch": 2, "activationFailure": 3}
_INNER_MARKER = "smets1-inner-signed-response"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _sr(parent: ET.Element, local: str, text: str | None = None, **attrs: str) -> ET.Element:
    return _sub(parent, _q(local), text, **attrs)


def _ra(parent: ET.Element, local: str, text: str | None = None, **attrs: str) -> ET.Element:
    return _sub(parent, f"{{{RA_NS}}}{local}", text, **attrs)


def _serialise(root: ET.Element) -> bytes:
    return bytes(ET.tostring(root, encoding="UTF-8", xml_declaration=True))


def date_time(at: float) -> str:
    """xs:dateTime in UTC to the millisecond, as the DCC writes it."""
    dt = to_datetime(at)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class RequestId:
    """A RequestID split; `text` normalised to the schema's `XX-…-XX` form."""

    sender: int
    target: int
    counter: int

    @property
    def text(self) -> str:
        return f"{format_eui64(self.sender)}:{format_eui64(self.target)}:{self.counter}"

    @property
    def response_id(self) -> str:
        """The ResponseID DUIS answers with: the RequestID with sender and target swapped."""
        return f"{format_eui64(self.target)}:{format_eui64(self.sender)}:{self.counter}"


def split_request_id(text: str) -> RequestId:
    m = _REQUEST_ID_RE.match(text.strip())
    if not m:
        raise BadDocument("sr:RequestID", f"expected sender:target:counter, got {short(text)}")
    return RequestId(
        _eui(m.group(1), "sr:RequestID sender"),
        _eui(m.group(2), "sr:RequestID target"),
        int(m.group(3)),
    )


def _response_root(
    request_id: RequestId | None, code: str, at: float, *, with_response_id: bool
) -> tuple[ET.Element, ET.Element]:
    """`sr:Response` with its header; returns (root, body)."""
    root = ET.Element(_q("Response"), {"schemaVersion": SCHEMA_VERSION})
    header = _sr(root, "Header")
    if request_id is not None:
        _sr(header, "RequestID", request_id.text)
        if with_response_id:
            _sr(header, "ResponseID", request_id.response_id)
    _sr(header, "ResponseCode", code)
    _sr(header, "ResponseDateTime", date_time(at))
    return root, _sr(root, "Body")


def _response_message(body: ET.Element, service_reference: str, variant: str) -> ET.Element:
    message = _sr(body, "ResponseMessage")
    _sr(message, "ServiceReference", service_reference)
    _sr(message, "ServiceReferenceVariant", variant)
    return message


def acknowledgement(
    request_id: RequestId | None,
    code: str,
    at: float,
    service_reference: str,
    variant: str | None = None,
    *,
    comment: str | None = None,
) -> bytes:
    """The synchronous answer: `I99` (accepted, the response follows) or an E-code
    refusing the request. RequestID echoed; body `sr:ResponseMessage` naming the service.

    `comment`, for a refusal, says in words what was wrong: DUIS has no element for it,
    so it travels as an XML comment before the root element (outside anything signed)."""
    root, body = _response_root(request_id, code, at, with_response_id=False)
    _response_message(body, service_reference, variant or service_reference)
    data = _serialise(root)
    if comment:
        safe = comment.replace("--", "- -").rstrip("-")
        head, sep, rest = data.partition(b"?>")
        data = head + sep + f"\n<!-- {safe} -->".encode() + rest
    return data


def failure_response(
    request_id: RequestId, code: str, at: float, service_reference: str, variant: str
) -> bytes:
    """An asynchronous response with an E-code and no device payload (the device was
    never reached, or never answered)."""
    root, body = _response_root(request_id, code, at, with_response_id=True)
    _response_message(body, service_reference, variant)
    return _serialise(root)


def success_response(
    request_id: RequestId, at: float, service_reference: str, variant: str
) -> bytes:
    """`I0` for a request DUIS answers with no payload (an 11.1 whose image is stored)."""
    root, body = _response_root(request_id, "I0", at, with_response_id=True)
    _response_message(body, service_reference, variant)
    return _serialise(root)


def firmware_distribution_failure(request_id: RequestId, at: float, meter_ids: list[int]) -> bytes:
    """The DCC alert DUIS sends when an 11.1's image could not be distributed for the
    listed meters: `sr:DCCAlertMessage/DCCAlert/FirmwareDistributionFailure`."""
    root = ET.Element(_q("Response"), {"schemaVersion": SCHEMA_VERSION})
    header = _sr(root, "Header")
    # An alert answers no request: it carries neither RequestID nor ResponseID.
    _sr(header, "ResponseCode", "I0")
    _sr(header, "ResponseDateTime", date_time(at))
    body = _sr(root, "Body")
    alert = _sr(body, "DCCAlertMessage")
    _sr(alert, "DCCAlertCode", FIRMWARE_DISTRIBUTION_FAILURE_ALERT)
    failure = _sr(_sr(alert, "DCCAlert"), "FirmwareDistributionFailure")
    _sr(failure, "UpdateFirmwareRequestID", request_id.text)
    _sr(failure, "MeterIDs", ",".join(format_eui64(m) for m in meter_ids))
    return _serialise(root)


@dataclass(frozen=True, slots=True)
class DevicePayload:
    """What a SMETS1 device answered, as the MMC schema carries it.

    `kind` is `ReadFirmwareVersionRsp` (11.2) or `ActivateFirmwareRsp` (11.3).
    `activate_status` is an ASN1Status of 11.3 (`success`, `noImageHeld`, `hashMismatch`,
    `activationFailure`), or None where the device gave no execution detail (a
    cancellation, or a future-dated command accepted)."""

    kind: str
    device_id: int
    success: bool
    firmware_version: str | None = None
    activate_status: str | None = None


def smets1_signed_response(request_id: RequestId, at: float, payload: DevicePayload) -> bytes:
    """The inner `sr:SMETS1SignedResponse` (unsigned): the SMETS1 service provider's
    answer, MMC payload inside. `seal` adds its `ds:Signature`, which the schema requires."""
    service = "11.2" if payload.kind == "ReadFirmwareVersionRsp" else "11.3"
    root = ET.Element(_q("SMETS1SignedResponse"), {"schemaVersion": SCHEMA_VERSION})
    response = _sr(root, "SMETS1Response")
    header = _sr(response, "Header")
    # The device originates the answer; its target is the User who asked (MMC HeaderType).
    _ra(header, "BusinessOriginatorID", format_eui64(payload.device_id))
    _ra(header, "BusinessTargetID", format_eui64(request_id.sender))
    _ra(header, "OriginatorCounter", str(request_id.counter))
    _ra(header, "ServiceReference", service)
    _ra(header, "ServiceReferenceVariant", service)
    _ra(header, "Timestamp", date_time(at))
    message = _sr(_sr(response, "Body"), "ResponseMessage")
    rsp = _ra(
        _ra(message, "SMETSData"),
        payload.kind,
        MessageSuccess="true" if payload.success else "false",
    )
    if payload.kind == "ActivateFirmwareRsp" and payload.activate_status is not None:
        code = ACTIVATE_IMAGE_CODES.get(payload.activate_status, 0xFF)
        status = _ra(rsp, "ActivateImageResponseCode", ResponseCode=f"{code:02X}")
        _ra(status, "ASN1Status", payload.activate_status)
    if payload.firmware_version is not None:
        _ra(rsp, "FirmwareVersion", payload.firmware_version)
    return _serialise(root)


def device_response(
    request_id: RequestId,
    at: float,
    service_reference: str,
    variant: str,
    sealed_inner: bytes,
) -> bytes:
    """`sr:Response` (I0) whose body is `sr:SMETS1ResponseMessage` holding the sealed
    `SMETS1SignedResponse` byte for byte, so that its own signature still verifies when
    it is taken out."""
    root, body = _response_root(request_id, "I0", at, with_response_id=True)
    message = _sr(body, "SMETS1ResponseMessage")
    _sr(message, "ServiceReference", service_reference)
    _sr(message, "ServiceReferenceVariant", variant)
    message.append(ET.Comment(_INNER_MARKER))
    data = _serialise(root)
    inner = sealed_inner
    if inner.startswith(b"<?xml"):
        inner = inner[inner.index(b"?>") + 2 :].lstrip()
    marker = f"<!--{_INNER_MARKER}-->".encode()
    assert data.count(marker) == 1
    return data.replace(marker, inner)


# -- notifications as DUIS ------------------------------------------------------------

Seal = Callable[[bytes], bytes]

#: Device failures (smets1.codes.Reason names) that mean the device was never reached
#: (E20, "Unable to Communicate with Device") or never answered (E21, "No Response
#: Received from Device"); every other failure is the device's own answer.
_UNREACHED = {"offline", "other_originator"}
_NO_ANSWER = {"timeout"}
#: Reason names → the 11.3 ASN1Status DUIS defines for the device's ActivateFirmwareRsp.
_ACTIVATE_STATUS = {
    "hash_mismatch": "hashMismatch",
    "no_transfer": "noImageHeld",
    "incomplete": "noImageHeld",
}


def _failure_code(failure: str | None) -> str | None:
    """The DUIS E-code of a failure in which the device gave no answer of its own."""
    if not failure:
        return None
    name = failure.removeprefix("version_read_")
    if failure.startswith("dco_error") or name in _UNREACHED:
        return "E20"
    if name in _NO_ANSWER:
        return "E21"
    return None


def _device(payload: dict[str, Any], rid: RequestId) -> int:
    text = payload.get("device_id")
    return parse_eui64(text) if isinstance(text, str) else rid.target


def render_notification(
    payload_kind: str, at: float, payload: dict[str, Any], seal: Seal
) -> bytes | None:
    """The DUIS document for a stored notification, sealed; None when DUIS has no
    element for it (held, refused, schedule_moved, overdue, a cancellation that found
    nothing to cancel): those reach the User through the JSON API only."""
    rid_text = payload.get("duis_request_id")
    if payload_kind != "response" or not isinstance(rid_text, str):
        return None
    try:
        rid = split_request_id(rid_text)
    except BadDocument:
        return None
    service = str(payload.get("service_reference") or "")
    state = payload.get("state")
    failure = payload.get("failure")
    if service == "11.1":
        if state == "stored":
            return seal(success_response(rid, at, "11.1", "11.1"))
        meters = [parse_eui64(d) for d in payload.get("device_ids") or []]
        if meters:
            return seal(firmware_distribution_failure(rid, at, meters))
        return seal(failure_response(rid, "E20", at, "11.1", "11.1"))
    if service not in ("11.2", "11.3") or state == "not_cancelled":
        return None
    code = _failure_code(failure if isinstance(failure, str) else None)
    if code is not None:
        return seal(failure_response(rid, code, at, service, service))
    version = payload.get("firmware_version")
    version = str(version) if version else None
    device = _device(payload, rid)
    if service == "11.2":
        ok = payload.get("response_code", "I0") == "I0"
        inner = DevicePayload("ReadFirmwareVersionRsp", device, ok, version)
    elif state == "done":
        inner = DevicePayload("ActivateFirmwareRsp", device, True, version, "success")
    elif state in ("cancellation", "cancelled"):
        # The cancelling 11.3 succeeded (True) or this pending one was withdrawn
        # (False); either way the device executed nothing, so no execution detail.
        inner = DevicePayload("ActivateFirmwareRsp", device, state == "cancellation")
    else:
        status = _ACTIVATE_STATUS.get(str(failure), "activationFailure")
        inner = DevicePayload("ActivateFirmwareRsp", device, False, version, status)
    sealed_inner = seal(smets1_signed_response(rid, at, inner))
    return seal(device_response(rid, at, service, service, sealed_inner))
