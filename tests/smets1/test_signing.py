"""Tests for smets1.signing: raw ECDSA P-256 signatures and the key files they use."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from smets1.errors import Smets1Error
from smets1.signing import (
    SigningError,
    demo_private_key,
    generate_private_key,
    load_private_key,
    load_public_key,
    load_verifying_key,
    private_key_pem,
    public_key_pem,
    sign,
    verify,
)

# --- signing --------------------------------------------------------------------------------


def test_sign_and_verify_raw_signatures() -> None:
    key = generate_private_key()
    signature = sign(key, b"message")
    assert len(signature) == 64
    assert verify(key.public_key(), b"message", signature)
    assert not verify(key.public_key(), b"massage", signature)
    for bad in (b"", signature[:63], signature + b"\x00", b"\x00" * 64, b"\xff" * 64):
        assert not verify(key.public_key(), b"message", bad)


def test_demo_key_is_deterministic_per_manufacturer() -> None:
    a = public_key_pem(demo_private_key(0x1037))
    assert a == public_key_pem(demo_private_key(0x1037))
    assert a != public_key_pem(demo_private_key(0x1038))
    assert isinstance(demo_private_key(0).curve, ec.SECP256R1)
    with pytest.raises(ValueError):
        demo_private_key(0x10000)


def test_key_files_round_trip(tmp_path: Path) -> None:
    key = generate_private_key()
    (tmp_path / "private.pem").write_text(private_key_pem(key))
    (tmp_path / "public.pem").write_text(public_key_pem(key))
    loaded = load_private_key(tmp_path / "private.pem")
    public = load_public_key(tmp_path / "public.pem")
    assert public_key_pem(loaded) == public_key_pem(key) == public_key_pem(public)
    assert verify(public, b"m", sign(loaded, b"m"))


def _pem_of(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, password: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "not an unencrypted PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n", "PEM"),
        (_pem_of(ec.generate_private_key(ec.SECP384R1()), None), "secp384r1"),
        (_pem_of(rsa.generate_private_key(65537, 2048), None), "expected ECDSA P-256"),
        (_pem_of(generate_private_key(), b"secret"), "not an unencrypted PEM private key"),
    ],
)
def test_bad_private_key_files_name_the_file(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(SigningError, match=needle) as caught:
        load_private_key(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert caught.value.path == str(path)
    assert isinstance(caught.value, Smets1Error)


def test_bad_public_key_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(SigningError, match="No such file") as caught:
        load_public_key(missing)
    assert str(caught.value).startswith(f"{missing}: ")
    private = tmp_path / "private.pem"
    private.write_text(private_key_pem(generate_private_key()))
    with pytest.raises(SigningError, match="holds a private key"):
        load_public_key(private)
    p384 = tmp_path / "p384.pem"
    p384.write_text(public_key_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(SigningError, match="secp384r1"):
        load_public_key(p384)


def test_verify_with_a_key_on_another_curve_is_a_configuration_error() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(SigningError):
        verify(other.public_key(), b"m", b"\x00" * 64)
    with pytest.raises(SigningError):
        sign(other, b"m")


def test_a_verifying_key_from_a_public_or_a_private_key_file(tmp_path: Path) -> None:
    key = generate_private_key()
    private = tmp_path / "maker.pem"
    private.write_text(private_key_pem(key))
    public = tmp_path / "maker.pub.pem"
    public.write_text(public_key_pem(key))
    want = key.public_key().public_numbers()
    assert load_verifying_key(private).public_numbers() == want
    assert load_verifying_key(public).public_numbers() == want
    p384 = tmp_path / "p384.pem"
    p384.write_text(private_key_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(SigningError, match="secp384r1"):
        load_verifying_key(p384)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningError, match="not an unencrypted PEM private key"):
        load_verifying_key(garbage)
