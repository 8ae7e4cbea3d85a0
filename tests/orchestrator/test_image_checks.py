"""`smets1 image validate`: each check passing and failing, on images built here."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.example_models import EXAMPLE_MODELS
from smets1.config import load_config
from smets1.signing import generate_private_key, private_key_pem, public_key_pem
from tests.orchestrator.manufacturer import Cli, assert_one_error_line, write_image

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ["header", "manufacturer", "image_type", "hardware_version", "slot", "signature"]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


def results(cli: Cli, *argv: str | Path) -> tuple[int, dict[str, tuple[str, str]]]:
    status, doc = cli.json("validate", *argv)
    assert [c["check"] for c in doc["checks"]] == CHECKS
    assert doc["passed"] == (status == 0)
    return status, {c["check"]: (c["result"], c["reason"]) for c in doc["checks"]}


def only_failing(checks: dict[str, tuple[str, str]]) -> list[str]:
    return [name for name, (result, _) in checks.items() if result == "FAIL"]


def test_every_check_passes_for_an_image_made_for_the_model(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota", size_bytes=100_000)
    status, out, err = cli("validate", image, "--model", "acme-e1")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"{image}: model acme-e1 (built-in example)"
    assert [line.split()[:2] for line in lines[1:7]] == [["PASS", f"{c}:"] for c in CHECKS]
    assert "total_image_size 100,000 = file size 100,000" in lines[1]
    assert "image covers 1..5, model acme-e1 is 3" in lines[4]
    assert "100,000 bytes in a slot of 1,572,864 (1,472,864 to spare)" in lines[5]
    assert "verifies with demo key of manufacturer 0x1234" in lines[6]
    assert lines[7] == "  valid"


def test_manufacturer_code_fails(cli: Cli, tmp_path: Path) -> None:
    # Signed with acme's demo key so only the code is wrong.
    from smets1.signing import demo_private_key

    image = write_image(tmp_path / "fw.ota", manufacturer=0x4321, key=demo_private_key(0x1234))
    status, checks = results(cli, image, "--model", "acme-e1")
    assert status == 1
    assert only_failing(checks) == ["manufacturer"]
    assert checks["manufacturer"][1] == "image 0x4321, model acme-e1 0x1234"


def test_image_type_fails(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota", image_type=2)
    status, checks = results(cli, image, "--model", "acme-e1")
    assert status == 1
    assert only_failing(checks) == ["image_type"]
    assert checks["image_type"][1] == "image 0x0002, model acme-e1 0x0001"


def test_hardware_range_fails_and_no_range_passes(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota", hw=(4, 9))
    status, checks = results(cli, image, "--model", "acme-e1")
    assert status == 1
    assert only_failing(checks) == ["hardware_version"]
    assert checks["hardware_version"][1] == "image covers 4..9, model acme-e1 is 3"

    image = write_image(tmp_path / "any.ota", hw=None)
    status, checks = results(cli, image, "--model", "acme-e1")
    assert status == 0
    assert "names no range" in checks["hardware_version"][1]


def test_slot_fails_by_the_bytes_over(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota", size_bytes=1_572_865)
    status, checks = results(cli, image, "--model", "acme-e1")
    assert status == 1
    assert only_failing(checks) == ["slot"]
    assert checks["slot"][1] == "1,572,865 bytes, 1 more than the slot of 1,572,864"
    # zeta-s1's slot is larger: the same size fits there (its codes do not)
    status, checks = results(cli, image, "--model", "zeta-s1")
    assert checks["slot"][0] == "PASS"


def test_signature_fails_with_another_key_and_passes_with_it(cli: Cli, tmp_path: Path) -> None:
    key = generate_private_key()
    image = write_image(tmp_path / "fw.ota", key=key)
    status, checks = results(cli, image, "--model", "acme-e1")
    assert status == 1
    assert only_failing(checks) == ["signature"]
    assert checks["signature"][1].startswith(
        "does NOT verify with demo key of manufacturer 0x1234; FirmwareHash "
    )
    public = tmp_path / "maker.pub.pem"
    public.write_text(public_key_pem(key))
    private = tmp_path / "maker.pem"
    private.write_text(private_key_pem(key))
    for pem in (public, private):  # a private key serves: its public key is derived
        status, checks = results(cli, image, "--model", "acme-e1", "--public-key", pem)
        assert status == 0, checks
        assert checks["signature"][1].startswith(f"verifies with {pem}; FirmwareHash ")


def test_unsigned_image_fails_the_signature(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota", key=None)
    status, checks = results(cli, image, "--model", "acme-e1")
    assert status == 1
    assert only_failing(checks) == ["signature"]
    assert checks["signature"][1].startswith("not signed (body form raw)")


def test_model_key_from_a_config(cli: Cli, tmp_path: Path) -> None:
    key = generate_private_key()
    (tmp_path / "maker.pub.pem").write_text(public_key_pem(key))
    config = tmp_path / "fleet.yaml"
    config.write_text(
        "name: t\nmodels:\n  - {name: m1, manufacturer_code: 0x1234, image_type: 1,"
        " hardware_version: 2, slot_capacity_bytes: 9000, public_key: maker.pub.pem}\n"
        "devices:\n  - {model: m1, count: 1, firmware_version: 1}\n"
    )
    image = write_image(tmp_path / "fw.ota", key=key, size_bytes=9_000)
    status, out, err = cli("validate", image, "--model", "m1", "--config", config)
    assert (status, err) == (0, ""), out
    assert f"model m1 ({config})" in out
    assert f"verifies with {tmp_path / 'maker.pub.pem'} (model m1)" in out
    status, _, _ = cli("validate", write_image(tmp_path / "demo.ota"), "--model", "m1",
                       "--config", config)  # fmt: skip
    assert status == 1  # the demo key is not the key this model trusts


def test_trailing_bytes_fail_the_header_but_the_rest_is_checked(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota")
    with image.open("ab") as f:
        f.write(b"\0" * 10)
    status, checks = results(cli, image, "--model", "acme-e1")
    assert status == 1
    assert only_failing(checks) == ["header"]
    assert checks["header"][1] == (
        "total_image_size at offset 52 says 4,000 bytes, the file has 4,010 (10 bytes past its end)"
    )


def test_malformed_header_fails_and_nothing_else_is_checked(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota")
    data = bytearray(image.read_bytes())
    data[4] = 0x02  # header_version 0x0102
    image.write_bytes(data)
    status, checks = results(cli, image, "--model", "acme-e1")
    assert status == 1
    assert checks["header"] == (
        "FAIL",
        "header_version at offset 4: expected 0x0100, got 0x0102",
    )
    assert all(checks[c] == ("FAIL", "not checked: the header is not well formed")
               for c in CHECKS[1:])  # fmt: skip


def test_unusable_input_is_one_line_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    good = write_image(tmp_path / "fw.ota")
    cut = tmp_path / "cut.ota"
    cut.write_bytes(good.read_bytes()[:3_000])
    short = tmp_path / "short.ota"
    short.write_bytes(good.read_bytes()[:30])
    text = tmp_path / "notes.txt"
    text.write_text("release notes\n")
    other = tmp_path / "other.yaml"
    other.write_text(
        "name: t\nmodels:\n  - {name: m1, manufacturer_code: 1, image_type: 1,"
        " hardware_version: 2, slot_capacity_bytes: 9000}\n"
        "devices:\n  - {model: m1, count: 1, firmware_version: 1}\n"
    )
    cases = [
        ((tmp_path / "absent.ota", "--model", "acme-e1"), "absent.ota: No such file"),
        ((text, "--model", "acme-e1"), "not a ZigBee OTA image: magic at offset 0"),
        ((cut, "--model", "acme-e1"),
         "truncated: total_image_size at offset 52 says 4,000 bytes, the file has 3,000"),
        ((short, "--model", "acme-e1"), "truncated: header_string at offset 20"),
        ((good, "--model", "acme-e9"),
         "unknown model 'acme-e9'; the built-in examples hold: acme-e1, zeta-s1"),
        ((good, "--model", "acme-e1", "--config", other),
         f"unknown model 'acme-e1'; the config {other} holds: m1"),
        ((good, "--model", "acme-e1", "--config", tmp_path / "absent.yaml"),
         "cannot read the fleet config"),
        ((good, "--model", "acme-e1", "--public-key", text), "not a PEM public key"),
    ]  # fmt: skip
    for argv, says in cases:
        assert_one_error_line(*cli("validate", *argv), says)


def test_the_built_in_models_are_those_of_the_fleet_configs() -> None:
    for name in ("small", "demo", "estate", "mp230"):
        config = load_config(ROOT / "fleet_configs" / f"{name}.yaml")
        for model in config.models:
            if model.name in EXAMPLE_MODELS:
                assert model == EXAMPLE_MODELS[model.name], (name, model.name)
    small = {m.name for m in load_config(ROOT / "fleet_configs" / "small.yaml").models}
    assert set(EXAMPLE_MODELS) == small
