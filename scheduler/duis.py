"""DUIS documents: `sr:Request` in (SRV 11.1, 11.2, 11.3), `sr:Response` out.

Shapes follow the DCC's published templates (namespace `NS`, prefix `sr`)::

    <sr:Request xmlns:sr="http://www.dccinterface.co.uk/ServiceUserGateway" schemaVersion="5.1">
      <sr:Header>
        <sr:RequestID>90-B3-D5-1F-30-01-00-00:00-DB-12-00-00-00-00-01:1001</sr:RequestID>
        <sr:CommandVariant>1</sr:CommandVariant>
        <sr:ServiceReference>11.3</sr:ServiceReference>
        <sr:ServiceReferenceVariant>11.3</sr:ServiceReferenceVariant>
      </sr:Header>
      <sr:Body>
        <sr:ActivateFirmware>
          <sr:ExecutionDateTime>2025-03-02T00:00:00Z</sr:ExecutionDateTime>   (optional)
          <sr:FirmwareHash>64 hex digits</sr:FirmwareHash>
        </sr:ActivateFirmware>
      </sr:Body>
      <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">…</ds:Signature>  (ignored)
    </sr:Request>

`sr:UpdateFirmware` (11.1) holds `FirmwareImage` (base64), `FirmwareVersion` (8 hex) and
`DeviceIDList` (`DeviceID` children); `sr:ReadFirmwareVersion` (11.2) is empty. The
RequestID is `sender:target:counter`; the target of an 11.2 or 11.3 is the device.

The parser is expat with no DTD: a document that declares one (and so any entity) is
refused before anything in it is used.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.parsers import expat

from scheduler.errors import BadDocument
from smets1.clock import to_datetime
from smets1.eui64 import format_eui64, parse_eui64

NS = "http://www.dccinterface.co.uk/ServiceUserGateway"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
SCHEMA_VERSION = "5.1"
ET.register_namespace("sr", NS)

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
    firmware_version: int
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
        raise BadDocument(
            f"{where}/sr:ServiceReference",
            f"this test double serves 11.1, 11.2 and 11.3, got {ref[:20]!r}",
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
    if len(version) != 8 or not _HEX_RE.match(version):
        raise BadDocument(
            f"{where}/sr:FirmwareVersion", f"expected 8 hex digits, got {version[:20]!r}"
        )
    devices_el = _child(el, "DeviceIDList", where)
    assert devices_el is not None
    ids = [_eui((d.text or "").strip(), f"{where}/sr:DeviceIDList") for d in devices_el]
    if not ids:
        raise BadDocument(f"{where}/sr:DeviceIDList", "no DeviceID")
    return UpdateFirmware(image, int(version, 16), ids)


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


def _sub(parent: ET.Element, local: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, _q(local))
    if text is not None:
        el.text = text
    return el


def response(
    request_id: str | None,
    code: str,
    at: float,
    service_reference: str | None,
    fields: dict[str, Any] | None = None,
) -> bytes:
    """An `sr:Response`: header (RequestID, ResponseCode, ResponseDateTime) and a body
    of `sr:ResponseMessage` followed by `fields` as `sr:` elements (None left out)."""
    root = ET.Element(_q("Response"), {"schemaVersion": SCHEMA_VERSION})
    header = _sub(root, "Header")
    if request_id:
        _sub(header, "RequestID", request_id)
    _sub(header, "ResponseCode", code)
    _sub(header, "ResponseDateTime", to_datetime(at).isoformat().replace("+00:00", "Z"))
    body = _sub(root, "Body")
    if service_reference:
        message = _sub(body, "ResponseMessage")
        _sub(message, "ServiceReference", service_reference)
        _sub(message, "ServiceReferenceVariant", service_reference)
    for name, value in (fields or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        _sub(body, name, str(value))
    return bytes(ET.tostring(root, encoding="UTF-8", xml_declaration=True))


def response_list(items: list[bytes]) -> bytes:
    """Polled responses, wrapped in one `sr:ResponseList` (a test-double convenience)."""
    root = ET.Element(_q("ResponseList"))
    for data in items:
        root.append(parse_xml(data))
    return bytes(ET.tostring(root, encoding="UTF-8", xml_declaration=True))


def render_notification(
    nid: int, at: float, kind: str, payload: dict[str, Any]
) -> tuple[str, bytes]:
    """A DUIS User's callback body: an `sr:Response` for every notification kind."""
    if kind == "response":
        code = payload.get("response_code") or "I0"
        fields = {
            "DeviceID": payload.get("device_id"),
            "FirmwareHash": payload.get("firmware_hash"),
            "FirmwareVersion": payload.get("firmware_version"),
            "Status": payload.get("state"),
            "FailureReason": payload.get("failure"),
            "TRTMet": payload.get("trt_met"),
        }
    else:
        code = "E57" if kind == "refused" else "I0"
        fields = {
            "Notification": kind,
            "Reason": payload.get("reason"),
            "EarliestDate": payload.get("earliest_date"),
            "ScheduleID": payload.get("schedule_id"),
        }
    return "application/xml", response(
        payload.get("duis_request_id"), code, at, payload.get("service_reference"), fields
    )


def format_device(value: int) -> str:
    return format_eui64(value)
