"""Hypothesis against the DUIS parser with hostile bytes, not only round trips: arbitrary
bytes, mutated valid documents, token soup, deep nesting, huge names and attribute
values. Whatever comes in, the parser answers a request or a BadDocument (never another
exception) with a short message; over HTTP a refusal stores nothing and its body is short.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scheduler import duis
from scheduler.duis import MAX_ATTRIBUTE_CHARS, MAX_DEPTH, MAX_ELEMENTS, NS, BadDocument
from scheduler.errors import SchedulerError
from tests.scheduler.served import Served
from tests.scheduler.test_api import DEV, activate_firmware, duis_request, update_firmware

#: The longest message the parser may give (the HTTP layer cuts error bodies to 1 KiB).
MESSAGE_CHARS = 400
ERROR_BODY_BYTES = 1_024
LIMIT = 4 << 20

VALID = [
    duis_request("11.2", "<sr:ReadFirmwareVersion/>", 1),
    duis_request("11.3", activate_firmware("ab" * 32), 2),
    duis_request("11.3", activate_firmware("cd" * 32, "2025-03-02T00:00:00Z"), 3),
    duis_request("11.1", update_firmware(b"\x1e\xf1\xee\x0b" + bytes(60)), 4),
]
TOKENS = [
    f'<sr:Request xmlns:sr="{NS}" schemaVersion="5.1">',
    "</sr:Request>",
    "<sr:Header>",
    "</sr:Header>",
    "<sr:Body>",
    "</sr:Body>",
    "<sr:RequestID>",
    "</sr:RequestID>",
    f"90-B3-D5-1F-30-01-00-00:{DEV[0]}:5",
    "<sr:CommandVariant>1</sr:CommandVariant>",
    "<sr:ServiceReference>11.3</sr:ServiceReference>",
    "<sr:ServiceReferenceVariant>11.3</sr:ServiceReferenceVariant>",
    "<sr:ActivateFirmware>",
    "</sr:ActivateFirmware>",
    "<sr:FirmwareHash>" + "ab" * 32 + "</sr:FirmwareHash>",
    "<sr:ExecutionDateTime>",
    "</sr:ExecutionDateTime>",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+14:00",
    "<sr:ReadFirmwareVersion/>",
    "<sr:UpdateFirmware>",
    "<sr:DeviceIDList><sr:DeviceID>",
    "</sr:DeviceID></sr:DeviceIDList>",
    '<!DOCTYPE r [<!ENTITY a "b">]>',
    "&a;",
    "&amp;",
    "&#0;",
    "&#x10FFFF;",
    "<![CDATA[",
    "]]>",
    "<?pi x?>",
    "<!-- c -->",
    '<?xml version="1.0" encoding="UTF-16"?>',
    '<?xml version="1.0" encoding="nope"?>',
    "\x00",
    "\ud800",
    "²",
    "٣",
]


def _check_parse(data: bytes) -> duis.DuisRequest | None:
    """Parse; only the package's own error type may come out, with a short message."""
    try:
        return duis.parse_request(data, LIMIT)
    except SchedulerError as exc:
        assert isinstance(exc, BadDocument), type(exc)
        assert len(str(exc)) <= MESSAGE_CHARS, str(exc)[:200]
        return None


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid document with a few byte-level edits: flips, cuts, insertions, repeats."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "token"]))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 40))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=20))
        elif kind == "repeat":
            piece = data[at : at + draw(st.integers(1, 60))]
            data[at:at] = piece * draw(st.integers(1, 50))
        else:
            data[at:at] = draw(st.sampled_from(TOKENS)).encode("utf-8", "surrogatepass")
    return bytes(data)


token_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map(
    lambda ts: "".join(ts).encode("utf-8", "surrogatepass")
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2_000))
@example(b"")
@example(b"\xff\xfe<\x00a\x00/\x00>\x00")
def test_arbitrary_bytes(data: bytes) -> None:
    _check_parse(data)


@settings(max_examples=200, deadline=None)
@given(mutated())
def test_mutated_valid_documents(data: bytes) -> None:
    _check_parse(data)


@settings(max_examples=200, deadline=None)
@given(token_soup)
def test_token_soup(data: bytes) -> None:
    _check_parse(data)


def test_the_valid_documents_parse() -> None:
    for data in VALID:
        assert _check_parse(data) is not None


@settings(max_examples=60, deadline=None)
@given(depth=st.integers(1, 5_000), name=st.sampled_from(["a", "sr:Body", "x:y"]))
def test_deep_nesting(depth: int, name: str) -> None:
    ns = ' xmlns:x="urn:x"' if name.startswith("x:") else ""
    inner = f"<{name}>" * depth + f"</{name}>" * depth
    data = f'<sr:Request xmlns:sr="{NS}"{ns}>{inner}</sr:Request>'.encode()
    try:
        duis.parse_request(data, LIMIT)
    except BadDocument as exc:
        if depth + 1 > MAX_DEPTH:
            assert f"nested more than {MAX_DEPTH} deep" in str(exc)
        assert len(str(exc)) <= MESSAGE_CHARS
    else:  # pragma: no cover - no document of this shape is a valid request
        pytest.fail("accepted")


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 200_000),
    char=st.sampled_from(["a", "é", "&amp;", "\U0001f600"]),
    where=st.sampled_from(["root", "header", "name"]),
)
def test_huge_attribute_values_and_names(size: int, char: str, where: str) -> None:
    value = char * size
    if where == "name":
        data = f'<sr:Request xmlns:sr="{NS}"><sr:{"n" * size}/></sr:Request>'.encode()
    elif where == "root":
        data = f'<sr:Request xmlns:sr="{NS}" schemaVersion="{value}"/>'.encode()
    else:
        data = f'<sr:Request xmlns:sr="{NS}"><sr:Header a="{value}"/></sr:Request>'.encode()
    try:
        duis.parse_request(data, LIMIT)
    except BadDocument as exc:
        text = str(exc)
        chars = size * (1 if char == "&amp;" else len(char))
        if where != "name" and chars > MAX_ATTRIBUTE_CHARS:
            assert "attribute" in text and f"limit {MAX_ATTRIBUTE_CHARS}" in text
        assert len(text) <= MESSAGE_CHARS
    else:  # pragma: no cover
        pytest.fail("accepted")


@settings(max_examples=4, deadline=None)
@given(st.sampled_from([MAX_ELEMENTS - 2, MAX_ELEMENTS - 1, MAX_ELEMENTS, MAX_ELEMENTS + 1]))
def test_the_element_cap(count: int) -> None:
    data = f'<sr:Request xmlns:sr="{NS}">{"<a/>" * count}</sr:Request>'.encode()
    with pytest.raises(BadDocument) as err:
        duis.parse_request(data, LIMIT)
    if count + 1 > MAX_ELEMENTS:
        assert f"more than {MAX_ELEMENTS} elements" in str(err.value)
    else:
        assert "unexpected element" in str(err.value)


# -- over HTTP: a refusal stores nothing, and its body is short -----------------------


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with Served() as s:
        yield s


_counter = itertools.count(1_000)


@st.composite
def http_documents(draw: st.DrawFn, firmware_hash: str) -> bytes:
    n = next(_counter)
    base = draw(
        st.sampled_from(
            [
                duis_request("11.3", activate_firmware(firmware_hash), n),
                duis_request("11.2", "<sr:ReadFirmwareVersion/>", n),
                duis_request("11.1", update_firmware(base64.b64decode("AAAA")), n),
            ]
        )
    )
    return draw(st.sampled_from([base, draw(mutated()), draw(token_soup)]))


def test_hostile_documents_over_http(served: Served) -> None:
    session = requests.Session()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(http_documents(served.firmware_hash))
    def prop(doc: bytes) -> None:
        before = served.stored_rows()
        resp = session.post(served.url + "/duis", data=doc, headers=served.auth, timeout=30)
        assert resp.status_code < 500, resp.text[:300]
        assert resp.headers["Content-Type"].startswith("application/xml")
        if resp.status_code != 200:
            assert len(resp.content) < ERROR_BODY_BYTES, len(resp.content)
            assert duis.parse_xml(resp.content) is not None
            assert served.stored_rows() == before

    try:
        prop()
    finally:
        session.close()
