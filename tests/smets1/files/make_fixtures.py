"""Write the binary image fixtures beside this file, with plain struct and cryptography.

Deliberately independent of smets1.image and smets1.signing, so the tests that read these
files check our parser against a second, hand-written reading of the format rather than
against itself. Run once; the outputs are committed:

    .venv/bin/python tests/smets1/files/make_fixtures.py

dcc_sample_like.ota
    Shaped like the DCC's SRV 11.1 sample image: a 60-byte header (field control 0x0004,
    hardware versions present) and a raw body, not in sub-element form. Unsigned.
signed_subelements.ota
    A 69-byte header (all three optional fields), then sub-elements 0x0000 (manufacturer
    image) and 0xF0A1 (64-byte raw r||s ECDSA P-256 signature over header || SHA-256(image)),
    signed with the demo key of manufacturer 0x1037 derived here from its written definition.
    ECDSA is randomized, so regenerating changes this file's bytes (not its validity).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HERE = Path(__file__).parent
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def counter_stream(label: bytes, size: int) -> bytes:
    """Deterministic filler: SHA-256 of label || counter, concatenated."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(label + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:size])


def dcc_sample_like() -> bytes:
    body = counter_stream(b"dcc sample body", 3000)
    header_length = 60
    header = struct.pack(
        "<IHHHHHIH32sIHH",
        0x0BEEF11E,  # magic
        0x0100,  # header version
        header_length,
        0x0004,  # field control: hardware versions present
        0x1037,  # manufacturer code
        0x0001,  # image type
        0x01020304,  # file version
        0x0002,  # stack version (ZigBee PRO)
        b"DCC SMETS1 sample image".ljust(32, b"\x00"),
        header_length + len(body),  # total image size
        0x0001,  # min hardware version
        0x00FF,  # max hardware version
    )
    assert len(header) == header_length
    return header + body


def signed_subelements() -> bytes:
    image = counter_stream(b"signed firmware", 1500)
    header_length = 69
    total = header_length + (6 + len(image)) + (6 + 64)
    header = struct.pack(
        "<IHHHHHIH32sIBQHH",
        0x0BEEF11E,
        0x0100,
        header_length,
        0x0007,  # all optional fields
        0x1037,
        0x0002,
        0x00000105,
        0x0002,
        b"signed fixture".ljust(32, b"\x00"),
        total,
        0x03,  # security credential version
        0x00DB1234567890A0,  # destination EUI-64 00-DB-12-34-56-78-90-A0
        0x0102,
        0x0210,
    )
    assert len(header) == header_length
    seed = hashlib.sha256(b"smets1-fleet demo manufacturer key" + (0x1037).to_bytes(2, "big"))
    scalar = int.from_bytes(seed.digest(), "big") % (P256_ORDER - 1) + 1
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    message = header + hashlib.sha256(image).digest()
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    data = (
        header
        + struct.pack("<HI", 0x0000, len(image))
        + image
        + struct.pack("<HI", 0xF0A1, len(signature))
        + signature
    )
    assert len(data) == total
    return data


def main() -> None:
    for name, data in (
        ("dcc_sample_like.ota", dcc_sample_like()),
        ("signed_subelements.ota", signed_subelements()),
    ):
        (HERE / name).write_bytes(data)
        print(name, len(data), hashlib.sha256(data).hexdigest())


if __name__ == "__main__":
    main()
