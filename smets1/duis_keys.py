"""The XML-signing key material of DUIS: X.509 certificates and EC P-256 private keys.

Read from the files a fleet config names (`scheduler.users[].certificate`,
`scheduler.duis.signing_key`/`signing_certificate`). Every failure is a `KeyFileError`
whose message says what the file is and what was expected, so the config layer can put
it beside the field and its line.

    cert = load_certificate(path)          # PEM (or DER) X.509
    key = load_private_key(path)           # PEM or DER (PKCS#8 / SEC1), EC P-256 only
    check_pair(key, cert)                  # KeyFileError if the key is not the cert's
    issuer_serial(cert)                    # ("CN=Z1,OU=07", 27572613927499351639968579586655397031)
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_pem_private_key,
)

from smets1.errors import Smets1Error

#: Larger than any certificate or key file has reason to be.
MAX_KEY_FILE_BYTES = 64 * 1024


class KeyFileError(Smets1Error, ValueError):
    """A certificate or key file that cannot be used; the message says why."""


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path} is over {MAX_KEY_FILE_BYTES:,} bytes; expected {what}")
    if not data.strip():
        raise KeyFileError(f"{path} is empty; expected {what}")
    return data


def _check_curve(public: object, where: str) -> None:
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP256R1
    ):
        curve = getattr(getattr(public, "curve", None), "name", type(public).__name__)
        raise KeyFileError(f"{where}: expected an EC P-256 (secp256r1) key, got {curve}")


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM (or DER) X.509 certificate with an EC P-256 public key."""
    what = "a PEM X.509 certificate"
    data = _read(path, what)
    try:
        if b"-----BEGIN" in data:
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not {what}: {exc}") from None
    _check_curve(cert.public_key(), f"{path}")
    return cert


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An unencrypted EC P-256 private key, PEM or DER (PKCS#8 or SEC1)."""
    what = "an unencrypted PEM private key (EC P-256)"
    data = _read(path, what)
    try:
        if b"-----BEGIN" in data:
            key = load_pem_private_key(data, password=None)
        else:
            key = load_der_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{path} is encrypted; expected {what}") from None
    except ValueError as exc:
        raise KeyFileError(f"{path} is not {what}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path}: expected an EC P-256 key, got {type(key).__name__}")
    _check_curve(key.public_key(), f"{path}")
    return key


def check_pair(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    """KeyFileError unless `key` is the private half of `cert`'s public key."""
    mine = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    theirs = public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    if mine != theirs:
        raise KeyFileError(
            f"the key does not match the certificate (serial {cert.serial_number}, subject "
            f"{cert.subject.rfc4514_string() or '(empty)'}): they are not one key pair"
        )


def issuer_serial(cert: x509.Certificate) -> tuple[str, int]:
    """The certificate's issuer (RFC 4514, as XMLDSig's X509IssuerName) and serial."""
    return cert.issuer.rfc4514_string(), cert.serial_number
