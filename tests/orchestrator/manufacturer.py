"""What the tests of `smets1 image validate|plan|trial` share: the command line on one
parser, and images built to order (never fixtures from elsewhere)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from orchestrator.image_cli import add_image_commands
from smets1.image import (
    SIGNATURE_BYTES,
    SUBELEMENT_HEAD_BYTES,
    FieldControl,
    build_image,
    header_length_for,
)
from smets1.signing import demo_private_key

ACME = 0x1234
#: Header (with hardware versions), two sub-element heads and the signature.
SIGNED_OVERHEAD_BYTES = (
    header_length_for(FieldControl.HARDWARE_VERSIONS) + 2 * SUBELEMENT_HEAD_BYTES + SIGNATURE_BYTES
)


def write_image(
    path: Path,
    *,
    size_bytes: int = 4_000,
    manufacturer: int = ACME,
    image_type: int = 1,
    version: int = 0x02000000,
    hw: tuple[int, int] | None = (1, 5),
    key: EllipticCurvePrivateKey | str | None = "demo",
) -> Path:
    """A signed OTA file of exactly `size_bytes` (with `hw`), for acme-e1 by default;
    `key` None: unsigned (raw body), "demo": the demo key of `manufacturer`."""
    private = demo_private_key(manufacturer) if key == "demo" else key
    assert not isinstance(private, str)
    overhead = len(
        build_image(
            manufacturer_code=manufacturer,
            image_type=image_type,
            file_version=version,
            body=b"",
            private_key=private,
            hardware_versions=hw,
        )
    )
    data = build_image(
        manufacturer_code=manufacturer,
        image_type=image_type,
        file_version=version,
        body=bytes(range(256)) * ((size_bytes - overhead) // 256)
        + bytes((size_bytes - overhead) % 256),
        private_key=private,
        hardware_versions=hw,
    )
    assert len(data) == size_bytes
    path.write_bytes(data)
    return path


class Cli:
    """`smets1 image ...` on one parser: (exit status, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        parser = argparse.ArgumentParser(prog="smets1")
        add_image_commands(parser.add_subparsers(dest="command"))
        self.parser = parser
        self.capsys = capsys

    def __call__(self, *argv: str | Path) -> tuple[int, str, str]:
        self.capsys.readouterr()
        args = self.parser.parse_args(["image", *(str(a) for a in argv)])
        status = args.func(args)
        out, err = self.capsys.readouterr()
        return status, out, err

    def json(self, *argv: str | Path) -> tuple[int, dict[str, Any]]:
        status, out, err = self(*argv, "--json")
        assert err == ""
        return status, json.loads(out)


def assert_one_error_line(status: int, out: str, err: str, says: str) -> None:
    assert status == 2 and out == ""
    assert err.startswith("smets1: error: ") and err.endswith("\n")
    assert err.count("\n") == 1, err
    assert says in err, err
    assert "Traceback" not in err
