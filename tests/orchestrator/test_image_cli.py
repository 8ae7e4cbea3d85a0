"""Tests for `smets1 image ...`, driven through argparse with add_image_commands."""

from __future__ import annotations

import argparse
import hashlib
import json
import stat
from pathlib import Path

import pytest

from orchestrator.image_cli import add_image_commands
from smets1.image import parse_image, seeded_body
from smets1.signing import (
    generate_private_key,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
)

FILES = Path(__file__).parents[1] / "smets1" / "files"  # the image fixtures


@pytest.fixture
def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smets1")
    sub = parser.add_subparsers(dest="command")
    add_image_commands(sub)
    return parser


class Run:
    def __init__(self, parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]):
        self.parser = parser
        self.capsys = capsys

    def __call__(self, *argv: str | Path) -> tuple[int, str, str]:
        args = self.parser.parse_args([str(a) for a in argv])
        status = args.func(args)
        out, err = self.capsys.readouterr()
        return status, out, err


@pytest.fixture
def run(parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(parser, capsys)


BUILD = ("image", "build", "--manufacturer", "0x1037", "--image-type", "1")


def build_file(run: Run, path: Path, *extra: str | Path) -> str:
    status, out, err = run(*BUILD, "--file-version", "0x01020304", *extra, "-o", path)
    assert (status, err) == (0, "")
    return out


def test_build_then_inspect_json(run: Run, tmp_path: Path) -> None:
    out_path = tmp_path / "fw.ota"
    out = build_file(
        run,
        out_path,
        "--body-size",
        "800000",
        "--seed",
        "4",
        "--hardware-versions",
        "0x0100:0x01FF",
        "--header-string",
        "ESME 1.2",
        "--destination",
        "00-DB-12-34-56-78-90-A0",
        "--security-credential-version",
        "2",
    )
    data = out_path.read_bytes()
    firmware_hash = hashlib.sha256(seeded_body(800_000, 4)).hexdigest()
    assert out == f"{out_path} size_bytes={len(data)} firmware_hash={firmware_hash}\n"

    status, out, err = run("image", "inspect", out_path, "--json", "--block-size", "4096")
    assert (status, err) == (0, "")
    assert out.count("\n") == 1
    summary = json.loads(out)
    assert summary["manufacturer_code"] == 0x1037
    assert summary["file_version"] == 0x01020304
    assert summary["header_length"] == 69
    assert summary["header_string"] == "ESME 1.2"
    assert summary["upgrade_file_destination"] == "00-DB-12-34-56-78-90-A0"
    assert (summary["min_hardware_version"], summary["max_hardware_version"]) == (256, 511)
    assert summary["security_credential_version"] == 2
    assert summary["size_bytes"] == len(data)
    assert summary["sha256"] == hashlib.sha256(data).hexdigest()
    assert summary["firmware_hash"] == firmware_hash
    assert summary["large"] is True
    assert summary["blocks"] == -(-len(data) // 4096)
    assert summary["block_size"] == 4096
    assert (summary["body_form"], summary["signed"]) == ("subelements", True)


def test_build_unsigned_from_a_body_file(run: Run, tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(b"\x5a" * 1000)
    out_path = tmp_path / "fw.ota"
    build_file(run, out_path, "--body", body, "--unsigned")
    assert out_path.read_bytes()[56:] == body.read_bytes()
    status, out, _ = run("image", "inspect", out_path, "--json")
    assert status == 0
    summary = json.loads(out)
    assert (summary["body_form"], summary["signed"], summary["large"]) == ("raw", False, False)


def test_build_unsigned_in_subelement_form(run: Run, tmp_path: Path) -> None:
    out_path = tmp_path / "fw.ota"
    build_file(run, out_path, "--body-size", "100", "--unsigned", "--body-form", "subelements")
    image = parse_image(out_path.read_bytes())
    assert image.subelements and image.signature is None


def test_inspect_for_a_person(run: Run) -> None:
    status, out, err = run("image", "inspect", FILES / "dcc_sample_like.ota")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 20
    columns = {line.index(":") + 1 for line in lines}
    value_starts = {len(line) - len(line.split(": ", 1)[1].lstrip()) for line in lines}
    assert len(columns) > 1 and len(value_starts) == 1  # keys vary, values aligned
    fields = {line.split(":")[0]: line.split(":", 1)[1].strip() for line in lines}
    assert fields["manufacturer_code"] == "0x1037"
    assert fields["file_version"] == "0x01020304"
    assert fields["header_string"] == '"DCC SMETS1 sample image"'
    assert fields["upgrade_file_destination"] == "-"
    assert fields["body_form"] == "raw"
    assert fields["signed"] == "no"
    assert fields["blocks"] == "3"


def _bad_files(tmp_path: Path) -> list[tuple[Path, str]]:
    empty = tmp_path / "empty.ota"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not firmware\n")
    truncated = tmp_path / "truncated.ota"
    truncated.write_bytes((FILES / "dcc_sample_like.ota").read_bytes()[:-10])
    return [
        (tmp_path / "missing.ota", "No such file or directory"),
        (tmp_path, "Is a directory"),
        (empty, "magic at offset 0: expected 4 bytes, file has 0 left"),
        (text, "magic at offset 0: expected 0x0BEEF11E"),
        (truncated, "total_image_size at offset 52: header says 3060, file has 3050 bytes"),
    ]


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_bad_files_are_one_line_and_exit_2(run: Run, tmp_path: Path, command: str) -> None:
    for path, message in _bad_files(tmp_path):
        status, out, err = run(
            "image", command, path, *(["--json"] if command == "inspect" else [])
        )
        assert status == 2
        assert out == ""
        assert err.startswith(f"smets1: error: {path}: {message}")
        assert err.count("\n") == 1 and err.endswith("\n")
        assert "Traceback" not in err


def test_verify_demo_signed_image(run: Run, tmp_path: Path) -> None:
    out_path = tmp_path / "fw.ota"
    build_file(run, out_path, "--body-size", "5000")
    status, out, err = run("image", "verify", out_path)
    assert (status, err) == (0, "")
    assert out == f"{out_path}: signature OK (demo key of manufacturer 0x1037)\n"


def test_verify_tampered_and_unsigned_images_exit_1(run: Run, tmp_path: Path) -> None:
    signed = tmp_path / "fw.ota"
    build_file(run, signed, "--body-size", "5000")
    data = bytearray(signed.read_bytes())
    data[100] ^= 0xFF
    tampered = tmp_path / "tampered.ota"
    tampered.write_bytes(data)
    status, out, _ = run("image", "verify", tampered)
    assert status == 1
    assert "does NOT verify" in out

    status, out, _ = run("image", "verify", FILES / "dcc_sample_like.ota")
    assert status == 1
    assert "not signed" in out


def test_keygen_sign_and_verify_with_own_key(run: Run, tmp_path: Path) -> None:
    key_path = tmp_path / "maker.pem"
    status, out, err = run("image", "keygen", "-o", key_path)
    assert (status, err) == (0, "")
    public_path = tmp_path / "maker.pub.pem"
    assert out == f"{key_path}: private key (mode 0600); {public_path}: public key\n"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    private = load_private_key(key_path)
    assert public_path.read_text() == public_key_pem(private)
    assert load_public_key(public_path).public_numbers() == private.public_key().public_numbers()

    image_path = tmp_path / "fw.ota"
    build_file(run, image_path, "--body-size", "3000", "--key", key_path)
    status, out, _ = run("image", "verify", image_path, "--public-key", public_path)
    assert status == 0
    assert str(public_path) in out
    # the private key serves as well: its public key is derived
    status, out, _ = run("image", "verify", image_path, "--public-key", key_path)
    assert (status, out) == (0, f"{image_path}: signature OK ({key_path})\n")
    # the demo key of the manufacturer did not sign it
    status, _, _ = run("image", "verify", image_path)
    assert status == 1
    # nor did another private key
    other = tmp_path / "other.pem"
    other.write_text(private_key_pem(generate_private_key()))
    status, out, _ = run("image", "verify", image_path, "--public-key", other)
    assert status == 1 and "does NOT verify" in out


def test_keygen_without_pem_suffix_adds_pub_pem(run: Run, tmp_path: Path) -> None:
    status, _, _ = run("image", "keygen", "-o", tmp_path / "maker")
    assert status == 0
    load_public_key(tmp_path / "maker.pub.pem")


def test_keygen_refuses_to_overwrite_without_force(run: Run, tmp_path: Path) -> None:
    key_path = tmp_path / "maker.pem"
    key_path.write_text("precious")
    status, out, err = run("image", "keygen", "-o", key_path)
    assert status == 2 and out == ""
    assert err == f"smets1: error: {key_path}: already exists (use --force to overwrite)\n"
    assert key_path.read_text() == "precious"
    assert not (tmp_path / "maker.pub.pem").exists()
    status, _, _ = run("image", "keygen", "-o", key_path, "--force")
    assert status == 0
    load_private_key(key_path)


def test_keygen_refuses_when_only_the_public_key_exists(run: Run, tmp_path: Path) -> None:
    public = tmp_path / "maker.pub.pem"
    public.write_text("precious")
    status, out, err = run("image", "keygen", "-o", tmp_path / "maker.pem")
    assert status == 2 and out == ""
    assert err == f"smets1: error: {public}: already exists (use --force to overwrite)\n"
    assert not (tmp_path / "maker.pem").exists()  # no private key without its public key
    assert public.read_text() == "precious"


def test_verify_with_a_bad_key_file_exits_2(run: Run, tmp_path: Path) -> None:
    image_path = tmp_path / "fw.ota"
    build_file(run, image_path, "--body-size", "10")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    status, out, err = run("image", "verify", image_path, "--public-key", garbage)
    assert status == 2 and out == ""
    assert err.startswith(f"smets1: error: {garbage}: not a PEM public key")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--body-size", "0"], "the body is 0 bytes"),
        (["--body-size", "2097152"], "more than the largest slot of any known model (zeta-s1"),
    ],
)
def test_build_refuses_empty_or_slotless_bodies_unless_forced(
    run: Run, tmp_path: Path, extra: list[str], says: str
) -> None:
    out_path = tmp_path / "fw.ota"
    status, out, err = run(*BUILD, "--file-version", "1", *extra, "-o", out_path)
    assert status == 2 and out == ""
    assert err.startswith("smets1: error: ") and says in err and "--force" in err
    assert err.count("\n") == 1
    assert not out_path.exists()
    status, _, err = run(*BUILD, "--file-version", "1", *extra, "--force", "-o", out_path)
    assert (status, err) == (0, "")
    assert parse_image(out_path.read_bytes()).size_bytes > int(extra[1])


def test_build_refuses_an_empty_body_file(run: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    status, _, err = run(*BUILD, "--file-version", "1", "--body", empty, "-o", tmp_path / "o")
    assert status == 2
    assert err.startswith(f"smets1: error: {empty}: the body is 0 bytes")


def test_build_takes_the_largest_body_that_fits_the_largest_slot(run: Run, tmp_path: Path) -> None:
    # zeta-s1's slot, 2,097,152 bytes, less the header and sub-element heads and signature
    overhead = 56 + 6 + 6 + 64
    out_path = tmp_path / "fw.ota"
    build_file(run, out_path, "--body-size", str(2_097_152 - overhead))
    assert out_path.stat().st_size == 2_097_152


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--body", "/nonexistent/body.bin"], "/nonexistent/body.bin: No such file or directory"),
        (["--body-size", "10", "--key", "/nonexistent/key.pem"], "/nonexistent/key.pem: No such"),
        (["--body-size", "10", "--header-string", "x" * 33], "header_string is 33 bytes"),
        (["--body-size", "10", "--hardware-versions", "9:1"], "hardware_versions min 9"),
        (["--body-size", "10", "--body-form", "raw"], "sub-element body form"),
    ],
)
def test_build_errors_are_one_line_and_exit_2(
    run: Run, tmp_path: Path, extra: list[str], message: str
) -> None:
    out_path = tmp_path / "fw.ota"
    status, out, err = run(*BUILD, "--file-version", "1", *extra, "-o", out_path)
    assert status == 2 and out == ""
    assert err.startswith("smets1: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out_path.exists()


def test_build_into_a_missing_directory_exits_2(run: Run, tmp_path: Path) -> None:
    out_path = tmp_path / "no" / "fw.ota"
    status, _, err = run(*BUILD, "--file-version", "1", "--body-size", "1", "-o", out_path)
    assert status == 2
    assert err == f"smets1: error: {out_path}: No such file or directory\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--manufacturer", "0x10000"],
        ["--manufacturer", "twelve"],
        ["--file-version", "0x100000000"],
        ["--hardware-versions", "12"],
        ["--destination", "00-DB-12"],
        ["--key", "k.pem", "--unsigned"],
    ],
)
def test_bad_arguments_are_usage_errors(
    parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    base = {
        "--manufacturer": "1",
        "--image-type": "1",
        "--file-version": "1",
        "--body-size": "1",
        "-o": "out.ota",
    }
    for flag in argv:
        base.pop(flag, None)
    full = ["image", "build", *[x for pair in base.items() for x in pair], *argv]
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(full)
    assert caught.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("00-DB-12-34-56-78-90-A0", 0x00DB1234567890A0),
        ("00:db:12:34:56:78:90:a0", 0x00DB1234567890A0),
        ("00DB1234567890A0", 0x00DB1234567890A0),
        ("0xDB1234567890A0", 0x00DB1234567890A0),
    ],
)
def test_destination_forms(parser: argparse.ArgumentParser, text: str, value: int) -> None:
    args = parser.parse_args(
        [*BUILD, "--file-version", "1", "--body-size", "1", "--destination", text, "-o", "x"]
    )
    assert args.destination == value


def test_image_needs_a_subcommand(parser: argparse.ArgumentParser) -> None:
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(["image"])
    assert caught.value.code == 2


def test_demo_key_signature_matches_library(run: Run, tmp_path: Path) -> None:
    # A key file holding the demo key signs images that verify like demo-key images.
    from smets1.signing import demo_private_key

    key_path = tmp_path / "demo.pem"
    key_path.write_text(private_key_pem(demo_private_key(0x1037)))
    image_path = tmp_path / "fw.ota"
    build_file(run, image_path, "--body-size", "10", "--key", key_path)
    status, _, _ = run("image", "verify", image_path)
    assert status == 0
