"""Our XML signatures against the DCC's own tool (tests/duis_reference.py), both ways:

- a request the DCC's tool signs (with the key of the RequestID's sender, a ZAZ1 test
  supplier) is authenticated by our verifier given that supplier's certificate from the
  tool; spoiled, it is refused;
- a response our signer seals with the DCC's key and certificate from the tool passes the
  tool's Validate (schema and signature); spoiled, it fails there.

- over HTTP, a request the tool signed is accepted with no bearer token, and refused when
  sent again (a replay).

Four java calls in all (two Sign, two Validate). Skipped only where Java is missing.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from scheduler import xmldsig
from scheduler.api import make_app
from scheduler.duis_security import DuisSecurity
from scheduler.errors import DuisRefused
from smets1.clock import DEFAULT_EPOCH_SECONDS, ScaledClock
from smets1.eui64 import format_eui64
from tests.duis_reference import DuisReference
from tests.scheduler.fakes import USER_A, config, devices, make_scheduler

TEMPLATE = "CS06_11.3_IMMEDIATE_SUCCESS_REQUEST_DUIS.XML"
#: The tool signs a request from 90-B3-D5-1F-30-01-00-00 (USER_A) with this one's key.
SUPPLIER_CERT = "xml-sign-90B3D51F30010000-ds.pem"
#: Another certificate of the same test supplier (not the one the tool signs with).
OTHER_SUPPLIER_CERT = "Z1-supplier-ds.pem"
#: The DCC's own XML-signing key (90-B3-D5-1F-30-00-00-02, the Access Control Broker's
#: EUI-64): Validate looks the signer's serial up among the certificates it carries, and
#: this is the DCC's there (the Z1-accessControlBroker-ds set is not among them: exit 3).
DCC_CERT = "dsp-xml-sign-90B3D51F30000002-ds.pem"
DCC_KEY = "dsp-xml-sign-90B3D51F30000002-ds.key"  # DER PKCS#8, as the jar holds it


def _jar_file(ref: DuisReference, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(ref.jar_member(name))
    return path


@pytest.fixture(scope="module")
def dcc_signed(duis_ref: DuisReference, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The CS06 11.3 template as the DCC's tool signs it (counter kept)."""
    path = tmp_path_factory.mktemp("dcc") / "request.xml"
    path.write_bytes(duis_ref.template(TEMPLATE))
    return duis_ref.sign(path).encode()


def _security(duis_ref: DuisReference, tmp_path: Path, cert_name: str) -> DuisSecurity:
    cert = _jar_file(duis_ref, tmp_path, cert_name)
    users = [{"id": USER_A, "name": "supplier", "certificate": str(cert)}]
    return DuisSecurity(config(users=users, duis={"schema_dir": str(duis_ref.schema_dir)}))


def test_a_request_the_dcc_tool_signed_is_authenticated_and_spoiled_it_is_refused(
    duis_ref: DuisReference, dcc_signed: bytes, tmp_path: Path
) -> None:
    sec = _security(duis_ref, tmp_path, SUPPLIER_CERT)
    assert sec.require_signature
    assert sec.authenticate(dcc_signed) == USER_A

    one_byte = dcc_signed.replace(b"<sr:FirmwareHash>AA", b"<sr:FirmwareHash>AB", 1)
    garbage = re.sub(
        rb"<ds:SignatureValue>[^<]*</ds:SignatureValue>",
        b"<ds:SignatureValue>" + b"QUJD" * 22 + b"</ds:SignatureValue>",
        dcc_signed,
    )
    unsigned = re.sub(rb"<ds:Signature>.*</ds:Signature>", b"", dcc_signed, flags=re.S)
    assert len({one_byte, garbage, unsigned, dcc_signed}) == 4
    for what, doc, words in (
        ("one body byte", one_byte, "Digest mismatch"),
        ("garbage SignatureValue", garbage, "does not verify"),
        ("no signature", unsigned, "not signed"),
    ):
        with pytest.raises(DuisRefused, match=words) as err:
            sec.authenticate(doc)
        assert err.value.code == "E1", what

    # The same signature against a certificate that is not the signer's.
    other = _security(duis_ref, tmp_path / "other", OTHER_SUPPLIER_CERT)
    with pytest.raises(DuisRefused, match="certificate of no User"):
        other.authenticate(dcc_signed)


def test_what_we_seal_with_the_dccs_key_passes_the_dcc_tools_validate(
    duis_ref: DuisReference, tmp_path: Path
) -> None:
    cert = _jar_file(duis_ref, tmp_path, DCC_CERT)
    key = _jar_file(duis_ref, tmp_path, DCC_KEY)
    sec = DuisSecurity(
        config(
            duis={
                "signing_key": str(key),
                "signing_certificate": str(cert),
                "schema_dir": str(duis_ref.schema_dir),
            }
        )
    )
    response = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<sr:Response xmlns:sr="http://www.dccinterface.co.uk/ServiceUserGateway" '
        b'schemaVersion="5.1"><sr:Header>'
        b"<sr:RequestID>90-B3-D5-1F-30-01-00-00:00-DB-12-34-56-78-90-A0:1000</sr:RequestID>"
        b"<sr:ResponseCode>I99</sr:ResponseCode>"
        b"<sr:ResponseDateTime>2025-03-01T00:00:00Z</sr:ResponseDateTime></sr:Header>"
        b"<sr:Body><sr:ResponseMessage><sr:ServiceReference>11.3</sr:ServiceReference>"
        b"<sr:ServiceReferenceVariant>11.3</sr:ServiceReferenceVariant></sr:ResponseMessage>"
        b"</sr:Body></sr:Response>"
    )
    sealed = sec.seal(response)
    assert xmldsig.key_reference(xmldsig.parse(sealed)) is not None
    good = tmp_path / "sealed.xml"
    good.write_bytes(sealed)
    result = duis_ref.validate(good)
    assert result.passed, (result.returncode, result.stderr)
    assert "passed signature check" in result.stderr

    # The control: a byte changed after sealing fails the tool's check.
    bad = tmp_path / "tampered.xml"
    bad.write_bytes(sealed.replace(b">I99<", b">I0<"))
    result = duis_ref.validate(bad)
    assert result.returncode == 10, (result.returncode, result.stderr)


async def test_over_http_a_tool_signed_request_needs_no_token_and_is_not_replayed(
    duis_ref: DuisReference, tmp_path: Path
) -> None:
    device = format_eui64(devices(1)[0])
    unsigned = tmp_path / "read.xml"
    unsigned.write_bytes(
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<sr:Request xmlns:sr="http://www.dccinterface.co.uk/ServiceUserGateway" '
        b'schemaVersion="5.1"><sr:Header>'
        b"<sr:RequestID>90-B3-D5-1F-30-01-00-00:" + device.encode() + b":7001</sr:RequestID>"
        b"<sr:CommandVariant>1</sr:CommandVariant>"
        b"<sr:ServiceReference>11.2</sr:ServiceReference>"
        b"<sr:ServiceReferenceVariant>11.2</sr:ServiceReferenceVariant></sr:Header>"
        b"<sr:Body><sr:ReadFirmwareVersion/></sr:Body></sr:Request>"
    )
    signed = duis_ref.sign(unsigned).encode()
    supplier = _jar_file(duis_ref, tmp_path, SUPPLIER_CERT)
    dcc_cert = _jar_file(duis_ref, tmp_path, DCC_CERT)
    dcc_key = _jar_file(duis_ref, tmp_path, DCC_KEY)
    cfg = config(
        users=[{"id": USER_A, "name": "supplier", "certificate": str(supplier)}],
        duis={"signing_key": str(dcc_key), "signing_certificate": str(dcc_cert)},
    )
    s, _ = make_scheduler(ScaledClock(DEFAULT_EPOCH_SECONDS, speed=10_000), cfg, n_devices=1)
    client = TestClient(TestServer(make_app(s)))
    await client.start_server()
    task = asyncio.create_task(s.run())
    try:
        resp = await client.post("/duis", data=signed)
        body = await resp.read()
        assert resp.status == 200, body
        answer = xmldsig.parse(body)
        dcc = x509.load_pem_x509_certificate(duis_ref.jar_member(DCC_CERT))
        xmldsig.verify(answer, dcc, at=None)  # the acknowledgement is the DCC's, signed
        again = await client.post("/duis", data=signed)
        assert again.status == 409, await again.text()
        assert b"<sr:ResponseCode>E1</sr:ResponseCode>" in await again.read()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await s.close()
