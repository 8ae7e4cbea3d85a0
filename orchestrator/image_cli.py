"""`smets1 image ...`: build, inspect, sign and verify firmware images from the command line.

    smets1 image build   --manufacturer CODE --image-type TYPE --file-version VERSION
                         (--body FILE | --body-size N [--seed S]) [--key PEM | --unsigned] -o OUT
    smets1 image inspect FILE [--json] [--block-size N]
    smets1 image keygen  -o PEM [--force]            (PEM and its public key, NAME.pub.pem)
    smets1 image verify  FILE [--public-key PEM]     (a public or a private key)
    smets1 image validate FILE --model MODEL [--config CONFIG] [--public-key PEM] [--json]
    smets1 image plan    FILE --devices N [--model MODEL] [--config CONFIG]
                         [--other-users K] [--loss RATE] [--json]
    smets1 image trial   FILE --model MODEL --devices N [--config CONFIG] [--link PROFILE]
                         [--faults SPEC] [--public-key PEM] [--seed S] [--json]

Handlers return an exit status: 0 success, 1 a signature that does not verify (a check
that fails, a trial device that does not activate), 2 a file or argument that cannot be
used. A bad file is one line on stderr, never a traceback.
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

from orchestrator.errors import ImageUnusable
from orchestrator.example_models import EXAMPLE_MODELS, ModelChoice, choose_model, largest_slot
from orchestrator.image_checks import model_key, read_image, validate
from smets1.config import load_config
from smets1.config_fleet import LINK_PROFILES, FaultConfig, LinkProfile
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
    load_verifying_key,
    private_key_pem,
    public_key_pem,
)

__all__ = [
    "add_image_commands",
    "cmd_build",
    "cmd_inspect",
    "cmd_keygen",
    "cmd_plan",
    "cmd_trial",
    "cmd_validate",
    "cmd_verify",
]

_OTA_LIMIT = "an OTA header's total_image_size is a u32"

EXIT_OK = 0
EXIT_BAD_SIGNATURE = 1
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
#: Other Users a plan shares the DCC's capacity with, at most (each holds a schedule on
#: every day of the horizon).
MAX_OTHER_USERS = 1_000
#: Devices a plan counts, at most: the MP230 estate is 670,000.
MAX_PLAN_DEVICES = 10_000_000
#: Most devices one trial may build (a trial is of a model, not of an estate; `smets1
#: run` with a fleet config takes more).
MAX_TRIAL_DEVICES = 10_000

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


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low:,}-{high:,}, got {value:,}")
        return value

    parse.__name__ = "count"
    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability 0-1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also NaN
        raise argparse.ArgumentTypeError(f"expected a probability 0-1, got {text!r}")
    return value


def _link(text: str) -> tuple[str, LinkProfile]:
    fields = LINK_PROFILES.get(text)
    if fields is None:
        raise argparse.ArgumentTypeError(
            f"unknown link profile {text[:40]!r}; known: {', '.join(LINK_PROFILES)}"
        )
    return text, LinkProfile(**fields)


def _faults(text: str) -> FaultConfig:
    """`none`, `KEY=VALUE,KEY=VALUE` or a JSON object of FaultConfig's fields."""
    from pydantic import ValidationError

    if text.strip() == "none":
        return FaultConfig()
    fields: Any
    if text.lstrip().startswith("{"):
        try:
            fields = json.loads(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a JSON object ({exc})") from None
        if not isinstance(fields, dict):
            raise argparse.ArgumentTypeError("expected a JSON object of fault fields")
    else:
        fields = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise argparse.ArgumentTypeError(
                    f"{item[:40]!r} is not KEY=VALUE (e.g. block_loss_rate=0.02), 'none' or"
                    " a JSON object"
                )
            fields[key.strip()] = value.strip()
    if not fields:
        raise argparse.ArgumentTypeError("expected KEY=VALUE pairs, 'none' or a JSON object")
    try:
        return FaultConfig.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "faults"
        if err["type"] == "extra_forbidden":
            msg = "unknown fault (check its spelling)"
            known = f"; known: {', '.join(FaultConfig.model_fields)}"
        else:
            msg, known = err["msg"], f" (got {str(err.get('input'))[:40]!r})"
        raise argparse.ArgumentTypeError(f"{where[:40]}: {msg}{known}") from None


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
    build.add_argument(
        "--force",
        action="store_true",
        help="build an empty body, or an image larger than the largest slot of any known model",
    )
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
        help="write a new P-256 key pair",
        description="Write a new ECDSA P-256 private key (PEM, mode 0600) and its public "
        "key beside it: -o maker.pem writes maker.pem and maker.pub.pem.",
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
        "--public-key",
        metavar="PEM",
        help="public key, or a private key whose public key is derived (default: demo key "
        "of the image's manufacturer)",
    )
    verify.set_defaults(func=cmd_verify)

    known = ", ".join(EXAMPLE_MODELS)
    validate_ = sub.add_parser(
        "validate",
        help="check an image against a device model",
        description="Check an image against a device model: header and size, manufacturer "
        "code, image type, hardware version range, slot, signature. One line a check. Exit "
        "0 all pass, 1 one fails, 2 unusable input.",
    )
    validate_.add_argument("file", metavar="FILE")
    validate_.add_argument(
        "--model", required=True, metavar="MODEL", help=f"built-in: {known}; or one of CONFIG"
    )
    validate_.add_argument("--config", metavar="CONFIG", help="fleet config holding the model")
    validate_.add_argument(
        "--public-key",
        metavar="PEM",
        help="manufacturer key (public or private) instead of the model's",
    )
    validate_.add_argument("--json", action="store_true", help="one JSON object")
    validate_.set_defaults(func=cmd_validate)

    plan = sub.add_parser(
        "plan",
        help="what MP230 and the network mean for an image",
        description="Large or not, blocks, transfer time per link profile with and without "
        "loss, whether N devices a day need an agreed schedule, and campaign days (N, and "
        "the 670,000-device estate), from the models the emulator and the scheduler run.",
    )
    plan.add_argument("file", metavar="FILE")
    plan.add_argument("--devices", type=_bounded(1, MAX_PLAN_DEVICES), required=True, metavar="N")
    plan.add_argument("--model", metavar="MODEL", help=f"built-in: {known}; or one of CONFIG")
    plan.add_argument("--config", metavar="CONFIG", help="fleet config: models, scheduler, DCO")
    plan.add_argument(
        "--other-users",
        type=_bounded(0, MAX_OTHER_USERS),
        default=1,
        metavar="K",
        help="other Users sharing the DCC's capacity (default 1)",
    )
    plan.add_argument(
        "--loss",
        type=_rate,
        metavar="RATE",
        help="block loss rate (default: the model's configured loss, else 0.02)",
    )
    plan.add_argument("--json", action="store_true", help="one JSON object")
    plan.set_defaults(func=cmd_plan)

    trial = sub.add_parser(
        "trial",
        help="run an image through 11.1, 11.3 and 11.2 on emulated devices",
        description="Run N emulated devices of a model through the whole path (11.1, 11.3, "
        "11.2) on a virtual clock. Exit 0 when every device activated it, 1 otherwise.",
    )
    trial.add_argument("file", metavar="FILE")
    trial.add_argument(
        "--model", required=True, metavar="MODEL", help=f"built-in: {known}; or one of CONFIG"
    )
    trial.add_argument("--devices", type=_bounded(1, MAX_TRIAL_DEVICES), required=True, metavar="N")
    trial.add_argument("--config", metavar="CONFIG", help="fleet config holding the model")
    trial.add_argument(
        "--link",
        type=_link,
        metavar="PROFILE",
        help=f"{', '.join(LINK_PROFILES)} (default: the model's link)",
    )
    trial.add_argument(
        "--faults",
        type=_faults,
        metavar="SPEC",
        help="KEY=VALUE,... or a JSON object of fault fields, or none (default: the "
        "model's), e.g. block_loss_rate=0.02,boot_failure_rate=0.01",
    )
    trial.add_argument(
        "--public-key",
        metavar="PEM",
        help="manufacturer key (public or private) the devices trust instead of the model's",
    )
    trial.add_argument("--seed", type=_unsigned(32), metavar="S", help="default: the config's")
    trial.add_argument("--json", action="store_true", help="one JSON object")
    trial.set_defaults(func=cmd_trial)
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
    if not args.force:
        refusal = _build_refusal(len(body), len(data))
        if refusal is not None:
            return _fail(args.body, refusal)
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


def _build_refusal(body_bytes: int, image_bytes: int) -> str | None:
    """Why an image is not worth building without --force: an empty body, or a file no
    known model's slot takes."""
    if body_bytes == 0:
        return (
            "the body is 0 bytes: an image with no firmware in it (use --force to build it anyway)"
        )
    biggest = largest_slot(EXAMPLE_MODELS)
    if image_bytes > biggest.slot_capacity_bytes:
        return (
            f"the image would be {image_bytes:,} bytes (body {body_bytes:,}), more than the"
            f" largest slot of any known model ({biggest.name}: {biggest.slot_capacity_bytes:,}"
            " bytes); use --force to build it anyway"
        )
    return None


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


def public_key_path(private_path: str) -> Path:
    """Where keygen writes the public key of `private_path`: `maker.pem` → `maker.pub.pem`
    (a name without `.pem` gets `.pub.pem` added)."""
    path = Path(private_path)
    stem = path.name[: -len(".pem")] if path.name.endswith(".pem") else path.name
    return path.with_name(stem + ".pub.pem")


def _create(path: str | Path, text: str, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if not force:
        flags |= os.O_EXCL
    # Created with its mode from the start: a private key is never readable by others.
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


def cmd_keygen(args: argparse.Namespace) -> int:
    key = generate_private_key()
    public_path = public_key_path(args.output)
    if not args.force:
        # Both names checked first: never a private key without its public one.
        for path in (Path(args.output), public_path):
            if os.path.lexists(path):
                return _fail(path, "already exists (use --force to overwrite)")
    written: list[Path] = []
    for path, text, mode in (
        (Path(args.output), private_key_pem(key), 0o600),
        (public_path, public_key_pem(key), 0o644),
    ):
        try:
            _create(path, text, mode, args.force)
        except OSError as exc:
            for done in written:  # no private key whose public key was not written
                with contextlib.suppress(OSError):
                    done.unlink()
            if isinstance(exc, FileExistsError):
                return _fail(path, "already exists (use --force to overwrite)")
            return _fail(path, _os_message(exc))
        written.append(path)
    print(f"{args.output}: private key (mode 0600); {public_path}: public key")
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
            public_key = load_verifying_key(args.public_key)
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


def _read_image(path: str, limit: int, why: str) -> tuple[bytes, Any]:
    """The bytes of an image file and `read_image` of them; OSError, _Unusable and
    ImageUnusable for the caller to report."""
    data = _read_file(path, limit, why)
    return data, read_image(data)


def _fail_lines(subject: str | None, message: str) -> int:
    """Each line of a (config) message as its own error line."""
    for line in message.splitlines() or [""]:
        _fail(subject, line)
    return EXIT_BAD_INPUT


def _choose(name: str, config: str | None) -> ModelChoice | int:
    try:
        return choose_model(name, config)
    except OSError as exc:
        return _fail(config, _os_message(exc))
    except Smets1Error as exc:
        return _fail_lines(None, str(exc))


def cmd_validate(args: argparse.Namespace) -> int:
    choice = _choose(args.model, args.config)
    if isinstance(choice, int):
        return choice
    try:
        _, read = _read_image(args.file, MAX_OTA_FILE_BYTES, _OTA_LIMIT)
    except OSError as exc:
        return _fail(args.file, _os_message(exc))
    except (_Unusable, ImageUnusable) as exc:
        return _fail(args.file, str(exc))
    try:
        key, key_name = model_key(choice.model, args.public_key)
    except SigningError as exc:
        return _fail(None, str(exc))
    checks = validate(read, choice.model, key, key_name)
    passed = all(c.passed for c in checks)
    if args.json:
        print(
            json.dumps(
                {
                    "file": args.file,
                    "model": choice.model.name,
                    "model_source": choice.source,
                    "key": key_name,
                    "passed": passed,
                    "checks": [c.as_json() for c in checks],
                }
            )
        )
    else:
        print(f"{args.file}: model {choice.model.name} ({choice.source})")
        for c in checks:
            print(f"  {c.line()}")
        failed = sum(not c.passed for c in checks)
        print(f"  {'valid' if passed else f'{failed} of {len(checks)} checks FAILED'}")
    return EXIT_OK if passed else EXIT_CHECK_FAILED


def _usable_image(path: str) -> tuple[bytes, Any] | int:
    """An image for plan and trial: well formed, at most MAX_IMAGE_BYTES; else exit 2."""
    try:
        data, read = _read_image(path, MAX_IMAGE_BYTES, "smets1.limits.MAX_IMAGE_BYTES")
    except OSError as exc:
        return _fail(path, _os_message(exc))
    except (_Unusable, ImageUnusable) as exc:
        return _fail(path, str(exc))
    if read.image is None or not read.header_check.passed:
        return _fail(path, f"not a well-formed image: {read.header_check.reason}")
    return data, read.image


def cmd_plan(args: argparse.Namespace) -> int:
    # The emulator, the DCO and the scheduler only when a plan is made.
    from orchestrator.image_plan import configured_loss, make_plan
    from orchestrator.image_plan import render as render_plan

    choice: ModelChoice | None = None
    if args.model is not None:
        chosen = _choose(args.model, args.config)
        if isinstance(chosen, int):
            return chosen
        choice = chosen
        base = choice.config
    elif args.config is not None:
        try:
            base = load_config(args.config)
        except OSError as exc:
            return _fail(args.config, _os_message(exc))
        except Smets1Error as exc:
            return _fail_lines(None, str(exc))
    else:
        base = None
    usable = _usable_image(args.file)
    if isinstance(usable, int):
        return usable
    data, image = usable
    model = choice.model if choice is not None else None
    loss = configured_loss(model, choice.source if choice is not None else "", args.loss)
    try:
        plan = make_plan(args.file, data, image, args.devices, args.other_users, model, base, loss)
    except Smets1Error as exc:
        return _fail(args.file, str(exc))
    print(json.dumps(plan.as_json()) if args.json else render_plan(plan))
    return EXIT_OK


def cmd_trial(args: argparse.Namespace) -> int:
    from orchestrator.image_trial import render as render_trial
    from orchestrator.image_trial import run_trial

    choice = _choose(args.model, args.config)
    if isinstance(choice, int):
        return choice
    usable = _usable_image(args.file)
    if isinstance(usable, int):
        return usable
    data, image = usable
    model = choice.model
    if args.public_key is not None:
        try:
            model_key(model, args.public_key)  # readable, and a P-256 key: else exit 2
        except SigningError as exc:
            return _fail(None, str(exc))
        model = model.model_copy(update={"public_key": Path(args.public_key)})
    try:
        result = run_trial(
            args.file,
            data,
            image,
            model,
            args.devices,
            choice.config,
            link=args.link,
            faults=args.faults,
            seed=args.seed,
        )
    except Smets1Error as exc:
        return _fail(args.file, str(exc))
    print(json.dumps(result.as_json()) if args.json else render_trial(result))
    return EXIT_OK if result.ok else EXIT_CHECK_FAILED
