"""`smets1 image ...`: build, inspect, sign and verify firmware images from the command line.

    smets1 image build   --manufacturer CODE --image-type TYPE --file-version VERSION
                         (--body FILE | --body-size N [--seed S]) [--key PEM | --unsigned] -o OUT
    smets1 image inspect FILE [--json] [--block-size N]
    smets1 image keygen  -o PEM [--force]
    smets1 image verify  FILE [--public-key PEM]

Handlers return an exit status: 0 success, 1 a signature that does not verify, 2 a file or
argument that cannot be used. A bad file is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smets1.errors import Smets1Error
from smets1.image import (
    DEFAULT_BLOCK_BYTES,
    LARGE_IMAGE_BYTES,
    build_image,
    image_summary,
    parse_image,
    seeded_body,
    verify_signature,
)
from smets1.limits import MAX_IMAGE_BYTES, MAX_OTA_FILE_BYTES
from smets1.signing import (
    SigningError,
    demo_private_key,
    generate_private_key,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
)

__all__ = [
    "add_image_commands",
    "cmd_build",
    "cmd_inspect",
    "cmd_keygen",
    "cmd_verify",
]

_OTA_LIMIT = "an OTA header's total_image_size is a u32"

EXIT_OK = 0
EXIT_BAD_SIGNATURE = 1
EXIT_BAD_INPUT = 2

# Summary fields a person reads more easily in hex (codes and versions, as ZigBee writes them).
_HEX_DIGITS = {
    "field_control": 4,
    "manufacturer_code": 4,
    "image_type": 4,
    "file_version": 8,
    "stack_version": 4,
    "min_hardware_version": 4,
    "max_hardware_version": 4,
}


def _unsigned(bits: int) -> Callable[[str], int]:
    """An argparse type: an integer in decimal or 0x hex that fits ``bits`` bits unsigned."""

    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number (write decimal or 0x hex)"
            ) from None
        if not 0 <= value < 1 << bits:
            raise argparse.ArgumentTypeError(f"{text} does not fit in {bits} bits unsigned")
        return value

    parse.__name__ = f"u{bits}"
    return parse


def _positive(text: str) -> int:
    value = _unsigned(63)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _body_size(text: str) -> int:
    value = _unsigned(63)(text)
    if value > MAX_IMAGE_BYTES:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_IMAGE_BYTES:,} bytes (smets1.limits.MAX_IMAGE_BYTES), got {value:,}"
        )
    return value


def _output_file(text: str) -> str:
    if not Path(text).name or Path(text).name == "..":
        raise argparse.ArgumentTypeError(f"expected a file name to write, got {text!r}")
    return text


def _hardware_versions(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:MAX")
    u16 = _unsigned(16)
    return u16(low), u16(high)


def _eui64(text: str) -> int:
    """``00-DB-12-34-56-78-90-A0`` (also with colons, or 16 bare hex digits), or 0x hex."""
    digits = text.replace("-", "").replace(":", "")
    if len(digits) == 16 and not text.lower().startswith("0x"):
        try:
            return int(digits, 16)
        except ValueError:
            pass
    try:
        return _unsigned(64)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an EUI-64 (write 00-DB-12-34-56-78-90-A0)"
        ) from None


def _fail(subject: str | os.PathLike[str] | None, message: str) -> int:
    prefix = f"{os.fspath(subject)}: " if subject is not None else ""
    print(f"smets1: error: {prefix}{message}", file=sys.stderr)
    return EXIT_BAD_INPUT


class _Unusable(Smets1Error):
    """A file the command cannot use as a whole: too large, or not a regular file."""


def _read_file(path: str, limit: int, why: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (`why` says whose limit);
    _Unusable, before reading, for anything else."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _Unusable("not a regular file; expected a file of bytes")
        if st.st_size > limit:
            raise _Unusable(f"{st.st_size:,} bytes, more than {limit:,} ({why})")
        return f.read(limit + 1)


def _os_message(exc: OSError) -> str:
    return exc.strerror or str(exc)


def add_image_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``image`` and its subcommands on an argparse subparsers object."""
    image = subparsers.add_parser(
        "image",
        help="build, inspect and verify firmware images (ZigBee OTA files)",
        description="Build, inspect and verify SMETS1 firmware images (ZigBee OTA files).",
    )
    sub = image.add_subparsers(dest="image_command", metavar="SUBCOMMAND", required=True)

    build = sub.add_parser(
        "build",
        help="build an OTA file around a manufacturer image",
        description="Build an OTA file. Numbers are decimal or 0x hex. Signed with the demo "
        "key of the manufacturer code unless --key or --unsigned is given.",
    )
    build.add_argument("--manufacturer", type=_unsigned(16), required=True, metavar="CODE")
    build.add_argument("--image-type", type=_unsigned(16), required=True, metavar="TYPE")
    build.add_argument("--file-version", type=_unsigned(32), required=True, metavar="VERSION")
    body = build.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", metavar="FILE", help="manufacturer image bytes")
    body.add_argument("--body-size", type=_body_size, metavar="N", help="N bytes of seeded content")
    build.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed for --body-size (default 0)"
    )
    build.add_argument("--hardware-versions", type=_hardware_versions, metavar="MIN:MAX")
    build.add_argument("--header-string", default="", metavar="S")
    build.add_argument("--stack-version", type=_unsigned(16), default=2, metavar="V")
    build.add_argument("--destination", type=_eui64, metavar="EUI64")
    build.add_argument("--security-credential-version", type=_unsigned(8), metavar="V")
    key = build.add_mutually_exclusive_group()
    key.add_argument("--key", metavar="PEM", help="P-256 private key (default: demo key)")
    key.add_argument("--unsigned", action="store_true", help="no signature")
    build.add_argument(
        "--body-form",
        choices=("subelements", "raw"),
        help="default: subelements when signed, raw (like the DCC sample) when --unsigned",
    )
    build.add_argument("-o", "--output", type=_output_file, required=True, metavar="OUT")
    build.set_defaults(func=cmd_build)

    inspect = sub.add_parser(
        "inspect",
        help="describe an OTA file",
        description="Describe an OTA file: header fields, size class, blocks, hashes.",
    )
    inspect.add_argument("file", metavar="FILE")
    inspect.add_argument("--json", action="store_true", help="one JSON object")
    inspect.add_argument("--block-size", type=_positive, default=DEFAULT_BLOCK_BYTES, metavar="N")
    inspect.add_argument(
        "--large-threshold",
        type=_unsigned(63),
        default=LARGE_IMAGE_BYTES,
        metavar="BYTES",
        help=f"an image over this is large (MP230 default {LARGE_IMAGE_BYTES})",
    )
    inspect.set_defaults(func=cmd_inspect)

    keygen = sub.add_parser(
        "keygen",
        help="write a new P-256 private key",
        description="Write a new ECDSA P-256 private key (PEM, mode 0600) and print its "
        "public key.",
    )
    keygen.add_argument("-o", "--output", type=_output_file, required=True, metavar="PEM")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing file")
    keygen.set_defaults(func=cmd_keygen)

    verify = sub.add_parser(
        "verify",
        help="check an OTA file's signature",
        description="Check an OTA file's signature. Exit 0 valid, 1 missing or invalid, "
        "2 unreadable file or key.",
    )
    verify.add_argument("file", metavar="FILE")
    verify.add_argument(
        "--public-key", metavar="PEM", help="default: demo key of the image's manufacturer"
    )
    verify.set_defaults(func=cmd_verify)
    return image


def cmd_build(args: argparse.Namespace) -> int:
    if args.body is not None:
        try:
            body = _read_file(args.body, MAX_IMAGE_BYTES, "smets1.limits.MAX_IMAGE_BYTES")
        except OSError as exc:
            return _fail(args.body, _os_message(exc))
        except _Unusable as exc:
            return _fail(args.body, str(exc))
    else:
        body = seeded_body(args.body_size, args.seed)
    try:
        if args.unsigned:
            private_key = None
        elif args.key is not None:
            private_key = load_private_key(args.key)
        else:
            private_key = demo_private_key(args.manufacturer)
        subelements = None if args.body_form is None else args.body_form == "subelements"
        data = build_image(
            manufacturer_code=args.manufacturer,
            image_type=args.image_type,
            file_version=args.file_version,
            body=body,
            private_key=private_key,
            stack_version=args.stack_version,
            header_string=args.header_string,
            security_credential_version=args.security_credential_version,
            upgrade_file_destination=args.destination,
            hardware_versions=args.hardware_versions,
            subelements=subelements,
        )
    except SigningError as exc:
        return _fail(None, str(exc))
    except ValueError as exc:
        return _fail(None, str(exc))
    output = Path(args.output)
    try:
        existing = output.stat().st_mode
    except OSError:  # absent, or a name the write below reports
        existing = None
    if existing is not None and not stat.S_ISREG(existing):
        # The rename below would replace it: a folder, a device such as /dev/null.
        return _fail(args.output, "exists and is not a regular file; expected a file name")
    # Written beside the target then renamed, so a reader never sees half an image.
    partial = output.with_name(output.name + ".partial")
    try:
        partial.write_bytes(data)
        partial.replace(output)
    except OSError as exc:
        with contextlib.suppress(OSError):  # the same error may stop the clean-up too
            partial.unlink(missing_ok=True)
        return _fail(args.output, _os_message(exc))
    firmware_hash = parse_image(data).firmware_hash.hex()
    print(f"{output} size_bytes={len(data)} firmware_hash={firmware_hash}")
    return EXIT_OK


def _human(summary: dict[str, Any]) -> str:
    width = max(len(key) for key in summary)
    lines = []
    for key, value in summary.items():
        if value is None:
            text = "-"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif key in _HEX_DIGITS and isinstance(value, int):
            text = f"0x{value:0{_HEX_DIGITS[key]}X}"
        elif key == "header_string":
            text = json.dumps(value, ensure_ascii=False)
        else:
            text = str(value)
        lines.append(f"{key + ':':<{width + 1}} {text}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        data = _read_file(args.file, MAX_OTA_FILE_BYTES, _OTA_LIMIT)
        summary = image_summary(data, args.block_size, args.large_threshold)
    except OSError as exc:
        return _fail(args.file, _os_message(exc))
    except Smets1Error as exc:
        return _fail(args.file, str(exc))
    print(json.dumps(summary) if args.json else _human(summary))
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    key = generate_private_key()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if not args.force:
        flags |= os.O_EXCL
    try:
        # Created 0600 from the start: a private key is never readable by others, even briefly.
        fd = os.open(args.output, flags, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(private_key_pem(key))
    except FileExistsError:
        return _fail(args.output, "already exists (use --force to overwrite)")
    except OSError as exc:
        return _fail(args.output, _os_message(exc))
    print(public_key_pem(key), end="")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        image = parse_image(_read_file(args.file, MAX_OTA_FILE_BYTES, _OTA_LIMIT))
    except OSError as exc:
        return _fail(args.file, _os_message(exc))
    except Smets1Error as exc:
        return _fail(args.file, str(exc))
    manufacturer = image.header.manufacturer_code
    try:
        if args.public_key is not None:
            public_key = load_public_key(args.public_key)
            key_name = args.public_key
        else:
            public_key = demo_private_key(manufacturer).public_key()
            key_name = f"demo key of manufacturer 0x{manufacturer:04X}"
    except SigningError as exc:
        return _fail(None, str(exc))
    if image.signature is None:
        print(f"{args.file}: not signed (body form {_body_form(image.subelements)})")
        return EXIT_BAD_SIGNATURE
    if not verify_signature(image, public_key):
        print(f"{args.file}: signature does NOT verify with {key_name}")
        return EXIT_BAD_SIGNATURE
    print(f"{args.file}: signature OK ({key_name})")
    return EXIT_OK


def _body_form(subelements: bool) -> str:
    return "subelements" if subelements else "raw"
