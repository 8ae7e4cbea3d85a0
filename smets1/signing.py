"""Manufacturer image signatures: ECDSA over P-256 (secp256r1) with SHA-256.

Signatures travel raw, 64 bytes: r || s, each a 32-byte big-endian integer (the form that
fits a fixed-size OTA sub-element), not the variable-length DER that ``cryptography`` uses.
Keys are PEM files: PKCS#8 private keys, SubjectPublicKeyInfo public keys.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from smets1.errors import Smets1Error

__all__ = [
    "SCALAR_BYTES",
    "SIGNATURE_BYTES",
    "SigningError",
    "demo_private_key",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "load_verifying_key",
    "private_key_pem",
    "public_key_pem",
    "sign",
    "verify",
]

SCALAR_BYTES = 32
SIGNATURE_BYTES = 2 * SCALAR_BYTES
# Order of the P-256 group: a private scalar must lie in [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_DEMO_KEY_LABEL = b"smets1-fleet demo manufacturer key"


class SigningError(Smets1Error):
    """A key that cannot be used: unreadable file, bad PEM, or not a P-256 key."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.path = path
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.path))


def _is_p256(key: object) -> bool:
    return isinstance(getattr(key, "curve", None), ec.SECP256R1)


@cache
def demo_private_key(manufacturer_code: int) -> ec.EllipticCurvePrivateKey:
    """A DEMO/TEST key, derived from the manufacturer code alone: anyone can recompute it,
    so it proves nothing about who built an image. It lets an emulated fleet verify
    signatures with no key distribution. Real manufacturers use `load_private_key`."""
    if not 0 <= manufacturer_code <= 0xFFFF:
        raise ValueError(f"manufacturer_code must fit in 16 bits, got {manufacturer_code}")
    digest = hashlib.sha256(_DEMO_KEY_LABEL + manufacturer_code.to_bytes(2, "big")).digest()
    scalar = int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh random P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


#: A PEM key is under a kilobyte; a key file is read no further than this.
MAX_KEY_FILE_BYTES = 64 * 1024


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise SigningError(exc.strerror or str(exc), os.fspath(path)) from exc
    except ValueError as exc:  # a NUL in the name
        raise SigningError(f"not a usable file name ({exc})", repr(os.fspath(path))) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SigningError(
            f"more than {MAX_KEY_FILE_BYTES:,} bytes; expected a PEM key", os.fspath(path)
        )
    return data


def load_private_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePrivateKey:
    """Load an unencrypted PEM private key that must be ECDSA P-256."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # TypeError is how cryptography reports an encrypted key without a password.
        raise SigningError(f"not an unencrypted PEM private key ({exc})", os.fspath(path)) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _is_p256(key):
        raise SigningError(f"holds {_describe(key)}; expected ECDSA P-256", os.fspath(path))
    return key


def load_public_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePublicKey:
    """Load a PEM public key that must be ECDSA P-256."""
    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        hint = ""
        if b"PRIVATE KEY" in data:
            hint = "; it holds a private key (keygen writes its public key as NAME.pub.pem)"
        raise SigningError(f"not a PEM public key ({exc}){hint}", os.fspath(path)) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not _is_p256(key):
        raise SigningError(f"holds {_describe(key)}; expected ECDSA P-256", os.fspath(path))
    return key


def load_verifying_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePublicKey:
    """The P-256 public key of a PEM file that holds either the public key or the private
    key (whose public half is derived): a manufacturer may hand over either."""
    data = _read(path)
    if b"PRIVATE KEY" in data and b"PUBLIC KEY" not in data:
        return load_private_key(path).public_key()
    return load_public_key(path)


def _describe(key: object) -> str:
    curve = getattr(key, "curve", None)
    if curve is not None:
        return f"an EC key on curve {curve.name}"
    return f"a {type(key).__name__.lstrip('_')}"


def public_key_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """The SubjectPublicKeyInfo PEM of a key (of a private key's public half)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """The unencrypted PKCS#8 PEM of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def sign(private_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 signature of ``message`` as 64 raw bytes, r || s."""
    if not _is_p256(private_key):
        raise SigningError(f"cannot sign with {_describe(private_key)}; expected ECDSA P-256")
    der = private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(SCALAR_BYTES, "big") + s.to_bytes(SCALAR_BYTES, "big")


def verify(public_key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` (64 raw bytes, r || s) signs ``message``.

    False for any bad signature, wrong length included; raises SigningError only for a key
    that is not P-256, which is a configuration mistake rather than a bad image.
    """
    if not _is_p256(public_key):
        raise SigningError(f"cannot verify with {_describe(public_key)}; expected ECDSA P-256")
    if len(signature) != SIGNATURE_BYTES:
        return False
    r = int.from_bytes(signature[:SCALAR_BYTES], "big")
    s = int.from_bytes(signature[SCALAR_BYTES:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
