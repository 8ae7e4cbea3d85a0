"""DUIS signatures with keys the tests make (issue 12, item 3): what the scheduler seals
on the way out, what it authenticates on the way in, and the HTTP route end to end.

The DCC's own tool checks the same code in test_duis_reference_signatures.py.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from scheduler import duis, xmldsig
from scheduler.api import PARSE_ON_LOOP_BYTES, make_app
from scheduler.duis_security import DuisSecurity
from scheduler.errors import BadDocument, DuisRefused, DuisSchemaInvalid
from scheduler.service import Scheduler
from scheduler.store import Store
from smets1.clock import DEFAULT_EPOCH_SECONDS, ScaledClock
from smets1.config_dcc import SchedulerConfig
from smets1.errors import ConfigError
from smets1.eui64 import format_eui64
from tests.duis_reference import DuisReference
from tests.scheduler.fakes import (
    LARGE_IMAGE,
    USER_A,
    USER_B,
    config,
    devices,
    make_scheduler,
)
from tests.xml_identities import Identity, make_identity

A = format_eui64(USER_A)
B = format_eui64(USER_B)
DEV = [format_eui64(d) for d in devices(3)]
HASH = "AA758690730934FF0685AA758690730934FF0685657788990011223344556677"


def request(
    counter: int,
    *,
    sender: str = A,
    target: str = DEV[0],
    ref: str = "11.3",
    body: str | None = None,
) -> bytes:
    """A DUIS request in the DCC templates' shape (unsigned)."""
    if body is None:
        body = (
            f"<sr:ActivateFirmware><sr:FirmwareHash>{HASH}</sr:FirmwareHash></sr:ActivateFirmware>"
            if ref == "11.3"
            else "<sr:ReadFirmwareVersion/>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<sr:Request xmlns:sr="{duis.NS}" schemaVersion="5.1">'
        f"<sr:Header><sr:RequestID>{sender}:{target}:{counter}</sr:RequestID>"
        "<sr:CommandVariant>1</sr:CommandVariant>"
        f"<sr:ServiceReference>{ref}</sr:ServiceReference>"
        f"<sr:ServiceReferenceVariant>{ref}</sr:ServiceReferenceVariant></sr:Header>"
        f"<sr:Body>{body}</sr:Body></sr:Request>"
    ).encode()


def valid_response(request_id: str = f"{A}:{DEV[0]}:1") -> bytes:
    """An acknowledgement the DUIS schema accepts (ResponseMessage only)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<sr:Response xmlns:sr="{duis.NS}" schemaVersion="5.1"><sr:Header>'
        f"<sr:RequestID>{request_id}</sr:RequestID><sr:ResponseCode>I99</sr:ResponseCode>"
        "<sr:ResponseDateTime>2025-03-01T00:00:00Z</sr:ResponseDateTime></sr:Header>"
        "<sr:Body><sr:ResponseMessage><sr:ServiceReference>11.3</sr:ServiceReference>"
        "<sr:ServiceReferenceVariant>11.3</sr:ServiceReferenceVariant></sr:ResponseMessage>"
        "</sr:Body></sr:Response>"
    ).encode()


@dataclass(frozen=True)
class Keys:
    a: Identity  # USER_A's XML-signing identity (configured)
    b: Identity  # USER_B's (configured)
    stranger: Identity  # configured for no one
    dcc: Identity  # the DCC's, which signs what the scheduler sends


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    folder = tmp_path / "keys"
    return Keys(
        make_identity(folder, "a"),
        make_identity(folder, "b"),
        make_identity(folder, "stranger"),
        make_identity(folder, "dcc"),
    )


def sched_config(keys: Keys, **duis_kw: Any) -> SchedulerConfig:
    users = [
        {"id": USER_A, "name": "a", "token": "token-a", "certificate": str(keys.a.cert_path)},
        {"id": USER_B, "name": "b", "token": "token-b", "certificate": str(keys.b.cert_path)},
    ]
    duis_cfg = {
        "signing_key": str(keys.dcc.key_path),
        "signing_certificate": str(keys.dcc.cert_path),
        **duis_kw,
    }
    return config(users=users, duis=duis_cfg)


def signed(doc: bytes, ident: Identity) -> bytes:
    return xmldsig.sign(doc, ident.key, ident.cert)


# -- authenticate -----------------------------------------------------------------------


def test_a_signed_request_names_the_user_whose_certificate_signed_it(keys: Keys) -> None:
    sec = DuisSecurity(sched_config(keys))
    assert sec.require_signature  # a User has a certificate: the default turns on
    assert sec.authenticate(signed(request(1), keys.a)) == USER_A
    assert sec.authenticate(signed(request(1, sender=B), keys.b)) == USER_B


def _body_byte(doc: bytes) -> bytes:
    return doc.replace(HASH.encode(), HASH[:-1].encode() + b"8")


def _garbage_value(doc: bytes) -> bytes:
    return re.sub(rb"<ds:SignatureValue>[^<]*<", b"<ds:SignatureValue>" + b"A" * 88 + b"<", doc)


def _unsigned(doc: bytes) -> bytes:
    return re.sub(rb"<ds:Signature.*</ds:Signature>", b"", doc, flags=re.S)


def _other_method(doc: bytes) -> bytes:
    return doc.replace(b"xmldsig-more#ecdsa-sha256", b"xmldsig-more#rsa-sha256")


def _moved_into_header(doc: bytes) -> bytes:
    sig = re.search(rb"<ds:Signature.*</ds:Signature>", doc, flags=re.S)
    assert sig is not None
    rest = doc.replace(sig[0], b"")
    return rest.replace(b"</sr:Header>", sig[0] + b"</sr:Header>")


def _second_reference(doc: bytes) -> bytes:
    ref = re.search(rb"<ds:Reference .*?</ds:Reference>", doc, flags=re.S)
    assert ref is not None
    return doc.replace(ref[0], ref[0] + ref[0].replace(b'URI=""', b'URI="#x"'))


@pytest.mark.parametrize(
    ("spoil", "words"),
    [
        (_body_byte, "Digest mismatch"),
        (_garbage_value, "does not verify"),
        (_unsigned, "not signed"),
        (_other_method, "SignatureMethod: expected"),
        (_moved_into_header, "last child"),
        (_second_reference, 'one ds:Reference URI=""'),
    ],
    ids=["body-byte", "garbage-value", "unsigned", "rsa-method", "not-last", "two-refs"],
)
def test_a_spoiled_signature_is_refused_with_e1(
    keys: Keys, spoil: Callable[[bytes], bytes], words: str
) -> None:
    sec = DuisSecurity(sched_config(keys))
    good = signed(request(7), keys.a)
    assert sec.authenticate(good) == USER_A  # the control: unspoiled, it passes
    with pytest.raises(DuisRefused) as err:
        sec.authenticate(spoil(good))
    assert err.value.code == "E1" and err.value.status == 401
    assert words in err.value.reason
    assert err.value.request_id == f"{A}:{DEV[0]}:7"


def test_a_certificate_of_no_user_and_another_users_signature_are_refused(keys: Keys) -> None:
    sec = DuisSecurity(sched_config(keys))
    with pytest.raises(DuisRefused, match="certificate of no User") as err:
        sec.authenticate(signed(request(1), keys.stranger))
    assert err.value.status == 401
    # B signs a request whose RequestID names A as its sender.
    with pytest.raises(DuisRefused, match=f"sender {A} is not the signer {B}") as err:
        sec.authenticate(signed(request(1), keys.b))
    assert (err.value.code, err.value.status) == ("E1", 403)


def test_an_unsigned_request_is_left_to_the_token_only_where_signatures_are_optional(
    keys: Keys,
) -> None:
    optional = DuisSecurity(sched_config(keys, require_signature=False))
    assert optional.authenticate(request(1)) is None
    # ... but a bad signature is refused even there.
    with pytest.raises(DuisRefused):
        optional.authenticate(_body_byte(signed(request(1), keys.a)))
    nobody = DuisSecurity(config())  # no certificates: optional by default
    assert not nobody.require_signature and not nobody.signing_enabled
    assert nobody.authenticate(request(1)) is None


def test_a_counter_not_above_the_last_accepted_is_a_replay_even_after_restart(
    keys: Keys, tmp_path: Path
) -> None:
    store = Store(tmp_path / "state")
    sec = DuisSecurity(sched_config(keys), store=store)
    assert sec.authenticate(signed(request(5), keys.a)) == USER_A
    store.record_duis_id(f"{A}:{DEV[0]}:5", "11.3", 0.0)  # what the route does on accepting
    for counter, target in ((5, DEV[1]), (4, DEV[0])):
        with pytest.raises(DuisRefused, match=r"not greater than 5.*replay") as err:
            sec.authenticate(signed(request(counter, target=target), keys.a))
        assert (err.value.code, err.value.status) == ("E1", 409)
    assert sec.authenticate(signed(request(6), keys.a)) == USER_A
    # B's counters are its own.
    assert sec.authenticate(signed(request(1, sender=B), keys.b)) == USER_B
    store.close()

    reopened = Store(tmp_path / "state")
    assert reopened.last_duis_counter(USER_A) == 5 and reopened.last_duis_counter(USER_B) is None
    again = DuisSecurity(sched_config(keys), store=reopened)
    with pytest.raises(DuisRefused, match="replay"):
        again.authenticate(signed(request(5, target=DEV[2]), keys.a))
    reopened.close()


def test_certificate_dates_are_checked_unless_turned_off(keys: Keys, tmp_path: Path) -> None:
    old = make_identity(tmp_path / "old", "old", not_after=datetime(2021, 1, 1, tzinfo=UTC))
    users = [{"id": USER_A, "name": "a", "certificate": str(old.cert_path)}]
    doc = signed(request(1), old)
    with pytest.raises(DuisRefused, match="valid"):
        DuisSecurity(config(users=users)).authenticate(doc)
    lenient = config(users=users, duis={"check_certificate_dates": False})
    assert DuisSecurity(lenient).authenticate(doc) == USER_A
    # The clock the check reads is the caller's to give.
    in_2020 = DuisSecurity(config(users=users), now=lambda: datetime(2020, 6, 1, tzinfo=UTC))
    assert in_2020.authenticate(doc) == USER_A


def test_an_image_past_libxml2s_10_mb_text_limit_still_verifies(keys: Keys) -> None:
    """An 11.1 holds its image as one base64 text node; 8 MB of image is 11 MB of text."""
    big = request(3, ref="11.1", body=f"<sr:X>{'A' * 11_000_000}</sr:X>")
    sec = DuisSecurity(sched_config(keys))
    assert sec.authenticate(signed(big, keys.a)) == USER_A
    with pytest.raises(DuisRefused, match="Digest mismatch"):
        sec.authenticate(signed(big, keys.a).replace(b"AAAA</sr:X>", b"AAAB</sr:X>"))


# -- seal -----------------------------------------------------------------------------


def test_seal_signs_in_the_dcc_profile_with_issuer_and_serial_only(keys: Keys) -> None:
    sec = DuisSecurity(sched_config(keys))
    assert sec.signing_enabled
    out = sec.seal(valid_response())
    root = xmldsig.parse(out)
    sig = root[-1]
    assert sig.tag == f"{{{xmldsig.DS_NS}}}Signature" and sig.prefix == "ds"
    key_info = sig.find("ds:KeyInfo", {"ds": xmldsig.DS_NS})
    assert key_info is not None
    assert [el.tag.split("}")[1] for el in key_info.iter()] == [
        "KeyInfo",
        "X509Data",
        "X509IssuerSerial",
        "X509IssuerName",
        "X509SerialNumber",
    ]
    ref = xmldsig.key_reference(root)
    assert ref == xmldsig.KeyRef(keys.dcc.cert.issuer.rfc4514_string(), keys.dcc.cert.serial_number)
    xmldsig.verify(root, keys.dcc.cert, at=datetime.now(UTC))
    with pytest.raises(Exception, match="does not verify"):
        xmldsig.verify(root, keys.a.cert, at=datetime.now(UTC))  # not A's signature
    # Sealing twice replaces the signature rather than adding one.
    assert out.count(b"</ds:Signature>") == sec.seal(out).count(b"</ds:Signature>") == 1


def test_a_signing_key_that_is_not_the_certificates_is_refused(keys: Keys) -> None:
    cfg = config(
        duis={"signing_key": str(keys.a.key_path), "signing_certificate": str(keys.dcc.cert_path)}
    )
    with pytest.raises(ConfigError, match=r"scheduler.duis.signing_key: .*does not match"):
        DuisSecurity(cfg)


# -- schema -----------------------------------------------------------------------------


def test_schema_checks_requests_in_and_documents_out(keys: Keys, duis_ref: DuisReference) -> None:
    sec = DuisSecurity(sched_config(keys, schema_dir=str(duis_ref.schema_dir)))
    template = duis_ref.template("CS06_11.3_IMMEDIATE_SUCCESS_REQUEST_DUIS.XML")
    unsigned = _unsigned(template)
    assert sec.schema is not None and sec.schema.problems(xmldsig.parse(unsigned)) == []
    invalid = unsigned.replace(b"AA758690", b"ZZ758690")
    with pytest.raises(DuisRefused, match="not signed"):
        sec.authenticate(invalid)  # authenticated first, then validated
    with pytest.raises(BadDocument, match=r"not valid against DUIS Schema V5.1.xsd: line \d+"):
        sec.authenticate(signed(invalid, keys.a))
    assert sec.authenticate(signed(request(1), keys.a)) == USER_A
    assert b"<ds:Signature" in sec.seal(valid_response())
    # Our own elements straight under sr:Body are not DUIS: not sent.
    rid = duis.split_request_id(f"{A}:{DEV[0]}:1")
    ours = duis.acknowledgement(rid, "I0", DEFAULT_EPOCH_SECONDS, "11.3").replace(
        b"</sr:Body>", b"<sr:Status>x</sr:Status></sr:Body>"
    )
    assert b"<sr:Status>x</sr:Status></sr:Body>" in ours
    with pytest.raises(DuisSchemaInvalid, match="not sent"):
        sec.seal(ours)


# -- over HTTP ------------------------------------------------------------------------


@dataclass
class Served:
    client: TestClient[web.Request, web.Application]
    scheduler: Scheduler
    keys: Keys

    async def post(self, doc: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        resp = await self.client.post("/duis", data=doc, headers=headers or {})
        return resp.status, await resp.read()

    def rows(self) -> dict[str, int]:
        s = self.scheduler
        s.store.flush()
        tables = ("requests", "refusals", "images", "duis_requests", "duis_counters")
        return {t: s.store.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}

    def noted(self, request_id: str) -> bool:
        s = self.scheduler
        s.store.flush()
        rows = s.store.db.execute("SELECT payload FROM notifications").fetchall()
        return any(request_id in row[0] for row in rows)


@pytest.fixture
async def served(keys: Keys) -> AsyncIterator[Served]:
    clock = ScaledClock(DEFAULT_EPOCH_SECONDS, speed=10_000)
    s, _ = make_scheduler(clock, sched_config(keys), n_devices=3)
    client = TestClient(TestServer(make_app(s)))
    await client.start_server()
    task = asyncio.create_task(s.run())
    try:
        yield Served(client, s, keys)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await s.close()


def _retarget(doc: bytes) -> bytes:
    return doc.replace(DEV[0].encode(), DEV[1].encode())


def _code(body: bytes) -> str:
    found = re.search(rb"<sr:ResponseCode>([^<]+)<", body)
    assert found, body
    return found[1].decode()


def _dcc_signed(body: bytes, dcc: Identity) -> None:
    xmldsig.verify(xmldsig.parse(body), dcc.cert, at=datetime.now(UTC))


async def test_a_signed_request_needs_no_token_and_a_refused_one_leaves_nothing(
    served: Served,
) -> None:
    k = served.keys
    status, body = await served.post(signed(request(10, ref="11.2"), k.a))
    assert status == 200, body
    _dcc_signed(body, k.dcc)  # the acknowledgement is the DCC's, signed
    before = served.rows()
    assert before["duis_requests"] == 1 and before["duis_counters"] == 1

    refused = {
        "replay, same counter": (signed(request(10, ref="11.2", target=DEV[1]), k.a), 409),
        "replay, lower counter": (signed(request(9, ref="11.2", target=DEV[2]), k.a), 409),
        "tampered": (_retarget(signed(request(11, ref="11.2"), k.a)), 401),
        "unknown certificate": (signed(request(12, ref="11.2"), k.stranger), 401),
        "another User's signature": (signed(request(13, ref="11.2"), k.b), 403),
        "unsigned, no token": (request(14, ref="11.2"), 401),
        "unsigned, with a token": (request(15, ref="11.2"), 401),
    }
    for what, (doc, want) in refused.items():
        headers = {"Authorization": "Bearer token-a"} if "with a token" in what else None
        status, body = await served.post(doc, headers)
        assert status == want, (what, body)
        assert _code(body) == "E1", what
        _dcc_signed(body, k.dcc)  # refusals are signed too
        assert served.rows() == before, what
        rid = re.search(rb"<sr:RequestID>([^<]+)<", doc)
        assert rid is not None and not served.noted(rid[1].decode()), what

    # The next counter goes through, token or not.
    status, body = await served.post(signed(request(16, ref="11.2", target=DEV[1]), k.a))
    assert status == 200, body
    assert served.rows()["duis_requests"] == 2
    assert served.scheduler.store.last_duis_counter(USER_A) == 16


async def test_a_large_signed_11_1_is_checked_off_the_loop_and_accepted(served: Served) -> None:
    """Over PARSE_ON_LOOP_BYTES the signature is checked in a worker thread; the replay
    check (the store) stays on the loop."""
    image = base64.b64encode(LARGE_IMAGE).decode()
    ids = "".join(f"<sr:DeviceID>{d}</sr:DeviceID>" for d in DEV)
    body = (
        f"<sr:UpdateFirmware><sr:FirmwareImage>{image}</sr:FirmwareImage>"
        f"<sr:FirmwareVersion>02000000</sr:FirmwareVersion>"
        f"<sr:DeviceIDList>{ids}</sr:DeviceIDList></sr:UpdateFirmware>"
    )
    doc = signed(request(30, ref="11.1", body=body), served.keys.a)
    assert len(doc) > PARSE_ON_LOOP_BYTES
    status, text = await served.post(doc)
    assert status == 200, text
    status, text = await served.post(doc)  # the same again: a replay
    assert status == 409 and _code(text) == "E1", text
    assert served.rows()["images"] == 1


async def test_a_token_of_another_user_beside_a_signature_is_refused(served: Served) -> None:
    doc = signed(request(40, ref="11.2"), served.keys.a)
    status, body = await served.post(doc, {"Authorization": "Bearer token-b"})
    assert status == 403 and _code(body) == "E1", body
    assert served.rows()["duis_requests"] == 0


async def test_with_the_schema_a_refusal_is_still_sent_signed(
    keys: Keys, duis_ref: DuisReference
) -> None:
    """A refusal goes out signed even if the schema check of it fails (logged): a refusal
    never turns into a 500."""
    cfg = sched_config(keys, schema_dir=str(duis_ref.schema_dir))
    s, _ = make_scheduler(ScaledClock(DEFAULT_EPOCH_SECONDS, speed=10_000), cfg, n_devices=3)
    client = TestClient(TestServer(make_app(s)))
    await client.start_server()
    try:
        resp = await client.post("/duis", data=_retarget(signed(request(1, ref="11.2"), keys.a)))
        body = await resp.read()
        assert resp.status == 401 and _code(body) == "E1", body
        _dcc_signed(body, keys.dcc)
        bad = signed(request(2, ref="11.2").replace(b' schemaVersion="5.1"', b""), keys.a)
        resp = await client.post("/duis", data=bad)  # signed: authenticated, then validated
        assert resp.status == 400, await resp.text()  # schemaVersion is required
        # The reason, which DUIS has no element for, is in the X-Reason header and a comment.
        assert "not valid against DUIS Schema V5.1.xsd" in resp.headers["X-Reason"]
        assert b"<!-- " in await resp.read()
    finally:
        await client.close()
        await s.close()


async def test_a_wrong_token_is_refused_even_beside_a_good_signature(served: Served) -> None:
    doc = signed(request(20, ref="11.2"), served.keys.a)
    status, body = await served.post(doc, {"Authorization": "Bearer nonsense"})
    assert status == 401, body
    assert served.rows()["duis_requests"] == 0
