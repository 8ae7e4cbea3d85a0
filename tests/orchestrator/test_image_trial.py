"""`smets1 image trial`: devices of a model through 11.1, 11.3 and 11.2 on the virtual
clock; activations, failures by reason, time per device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.image_trial import percentile
from smets1.signing import generate_private_key, private_key_pem, public_key_pem
from tests.orchestrator.manufacturer import Cli, assert_one_error_line, write_image


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


def trial(cli: Cli, expect: int, *argv: str | Path) -> dict[str, Any]:
    status, doc = cli.json("trial", *argv)
    assert status == expect, doc
    return doc


def test_every_device_activates_and_reads_the_new_version(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota", size_bytes=20_000, version=0x02030405)
    doc = trial(cli, 0, image, "--model", "acme-e1", "--devices", "25")
    assert (doc["devices"], doc["activated"], doc["version_confirmed"]) == (25, 25, 25)
    assert doc["failed"] == {} and doc["refused"] == {}
    assert doc["file_version"] == "0x02030405"
    assert (doc["link"], doc["faults"], doc["agreed_schedule"]) == ("model acme-e1", None, False)
    # 20,000 bytes over 20 kbit/s take 8 s at least; then a 90 s reboot
    assert 98 < doc["seconds_per_device_p50"] <= doc["seconds_per_device_p95"] < 200
    assert doc["image_stored_seconds"] > 0
    status, out, err = cli("trial", image, "--model", "acme-e1", "--devices", "3")
    assert (status, err) == (0, "")
    assert "activated 3/3; failed: none" in out
    assert "11.2 reads file version 0x02030405 on 3 device(s)" in out


@pytest.mark.parametrize(
    ("image_args", "reason"),
    [
        ({"hw": (4, 9)}, "hardware_mismatch"),
        ({"image_type": 7}, "wrong_image_type"),
        ({"key": "other"}, "bad_signature"),
        ({"size_bytes": 1_572_865}, "too_large_for_slot"),
    ],
)
def test_an_image_the_model_refuses_fails_with_the_reason(
    cli: Cli, tmp_path: Path, image_args: dict[str, Any], reason: str
) -> None:
    if image_args.get("key") == "other":
        image_args = {"key": generate_private_key()}
    image = write_image(tmp_path / "fw.ota", **image_args)
    doc = trial(cli, 1, image, "--model", "acme-e1", "--devices", "4")
    assert doc["activated"] == 0
    assert doc["failed"] == {reason: 4}
    assert doc["version_confirmed"] == 0


def test_faults_and_link_change_the_outcome(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota", size_bytes=30_000)
    doc = trial(cli, 1, image, "--model", "acme-e1", "--devices", "6",
                "--faults", "boot_failure_rate=1")  # fmt: skip
    assert doc["failed"] == {"boot_failed": 6}
    assert doc["faults"] == {"boot_failure_rate": 1.0}
    fast = trial(cli, 0, image, "--model", "acme-e1", "--devices", "4", "--link", "umts")
    slow = trial(cli, 0, image, "--model", "acme-e1", "--devices", "4", "--link", "gprs-poor",
                 "--faults", '{"block_loss_rate": 0.05}')  # fmt: skip
    assert fast["link"] == "umts" and slow["link"] == "gprs-poor"
    assert slow["seconds_per_device_p50"] > fast["seconds_per_device_p50"] + 25


def test_more_than_a_day_allowance_goes_by_an_agreed_schedule(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(
        "name: t\nmodels:\n  - {name: m1, manufacturer_code: 0x1234, image_type: 1,"
        " hardware_version: 2, slot_capacity_bytes: 20000, reboot_seconds: 10,"
        " link: umts}\n"
        "devices:\n  - {model: m1, count: 1, firmware_version: 1}\n"
        "scheduler: {large_image_threshold_bytes: 5000, user_daily_limit: 3}\n"
    )
    image = write_image(tmp_path / "fw.ota", size_bytes=6_000)
    doc = trial(cli, 0, image, "--model", "m1", "--config", config, "--devices", "8")
    assert doc["agreed_schedule"] is True
    assert (doc["activated"], doc["refused"]) == (8, {})


def test_bad_input_is_one_line_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota")
    bad = tmp_path / "bad.ota"
    data = bytearray(image.read_bytes())
    data[6] = 0x40  # header_length
    bad.write_bytes(data)
    for argv, says in [
        ((tmp_path / "absent.ota",), "No such file"),
        ((bad,), "not a well-formed image: header_length at offset 6"),
        ((image, "--config", tmp_path / "absent.yaml"), "cannot read the fleet config"),
    ]:
        assert_one_error_line(*cli("trial", *argv, "--model", "acme-e1", "--devices", "1"), says)
    with pytest.raises(SystemExit):
        cli("trial", image, "--model", "acme-e1", "--devices", "10001")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95)) == (50.0, 95.0)
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([], 0.5) is None


def test_a_manufacturers_own_key_is_trusted_with_public_key(cli: Cli, tmp_path: Path) -> None:
    """A manufacturer signs with a key of its own (keygen), as the README shows: the
    built-in model trusts only the demo key, so its devices refuse the image until the
    trial is given the key, as the private PEM or the public one."""
    private = generate_private_key()
    (tmp_path / "maker.pem").write_text(private_key_pem(private))
    (tmp_path / "maker.pub.pem").write_text(public_key_pem(private))
    image = write_image(tmp_path / "fw.ota", size_bytes=8_000, key=private)
    refused = trial(cli, 1, image, "--model", "acme-e1", "--devices", "3")
    assert refused["failed"] == {"bad_signature": 3}
    for pem in ("maker.pem", "maker.pub.pem"):
        doc = trial(cli, 0, image, "--model", "acme-e1", "--devices", "3",
                    "--public-key", tmp_path / pem)  # fmt: skip
        assert (doc["activated"], doc["version_confirmed"], doc["failed"]) == (3, 3, {})
    other = tmp_path / "other.pub.pem"
    other.write_text(public_key_pem(generate_private_key()))
    wrong = trial(cli, 1, image, "--model", "acme-e1", "--devices", "2", "--public-key", other)
    assert wrong["failed"] == {"bad_signature": 2}


@pytest.mark.parametrize(("content", "says"), [(None, "No such file"), ("junk", "PEM")])
def test_an_unusable_public_key_is_one_line(
    cli: Cli, tmp_path: Path, content: str | None, says: str
) -> None:
    image = write_image(tmp_path / "fw.ota")
    key = tmp_path / "key.pem"
    if content is not None:
        key.write_text(content)
    status, out, err = cli("trial", image, "--model", "acme-e1", "--devices", "2",
                           "--public-key", key)  # fmt: skip
    assert_one_error_line(status, out, err, says)
