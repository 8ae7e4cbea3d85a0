"""XML-signing identities the tests make for themselves: an EC P-256 key and a
self-signed X.509 certificate, written as PEM files under a test's tmp_path (never
committed keys).

    ident = make_identity(tmp_path, "supplier")   # Identity(key, cert, key_path, cert_path)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Identity:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    key_path: Path
    cert_path: Path


def make_identity(
    folder: Path,
    name: str,
    *,
    serial: int | None = None,
    not_after: datetime | None = None,
    curve: ec.EllipticCurve | None = None,
) -> Identity:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    issuer = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "07"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"test-ca-{name}"),
        ]
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime(2020, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or datetime.now(UTC) + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / f"{name}.key"
    cert_path = folder / f"{name}.pem"
    key_path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    return Identity(key, cert, key_path, cert_path)
