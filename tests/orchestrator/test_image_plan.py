"""`smets1 image plan`: MP230's size class and days, and transfer times that are the
emulator's own (a trial of the same image on the same link agrees with them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.image_plan import SAMPLES_PER_LINK, samples_per_link
from smets1.config_fleet import LINK_PROFILES
from tests.orchestrator.manufacturer import Cli, assert_one_error_line, write_image


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


@pytest.fixture(scope="module")
def large_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image(tmp_path_factory.mktemp("plan") / "large.ota", size_bytes=750_001)


def plan(cli: Cli, *argv: str | Path) -> dict[str, Any]:
    status, doc = cli.json("plan", *argv)
    assert status == 0
    return doc


def test_large_image_figures(cli: Cli, large_image: Path) -> None:
    doc = plan(cli, large_image, "--devices", "1000", "--model", "acme-e1")
    assert doc["large"] is True
    assert doc["bytes_over_threshold"] == 1
    assert (doc["block_size"], doc["blocks"], doc["run_blocks"], doc["runs"]) == (
        1024, 733, 64, 12,
    )  # fmt: skip
    assert doc["needs_agreed_schedule"] is True
    assert "more than 500 large images a day" in doc["schedule_reason"]
    camp, estate = doc["campaign"], doc["estate"]
    assert camp["per_day_without_schedule"] == 500
    assert (camp["days_without_schedule"], camp["days_at_capacity_alone"]) == (2, 1)
    assert estate["devices"] == 670_000
    # 670,000 at 500 a day; at 12,000 a day alone (MP230: 56 days); sharing with one
    # other User, the fair half of each day
    assert estate["days_without_schedule"] == 1_340
    assert estate["days_at_capacity_alone"] == 56
    assert (estate["other_users"], estate["days_at_capacity_sharing"]) == (1, 112)


def test_transfer_times_per_link(cli: Cli, large_image: Path) -> None:
    doc = plan(cli, large_image, "--devices", "1", "--model", "acme-e1", "--loss", "0.05")
    links = {t["link"]: t for t in doc["links"]}
    assert list(links) == [*LINK_PROFILES, "model acme-e1"]
    assert doc["loss"] == {"block_loss_rate": 0.05, "block_corruption_rate": 0.0,
                           "source": "--loss"}  # fmt: skip
    for name, t in links.items():
        # at least the bytes over the bandwidth; loss costs rounds; every transfer ended
        assert t["transfer_seconds"] > 750_001 * 8 / t["bandwidth_bps"], name
        assert t["transfer_seconds_with_loss"] > t["transfer_seconds"], name
        assert (t["incomplete_with_loss"], t["samples"]) == (0, SAMPLES_PER_LINK)
    order = sorted(LINK_PROFILES, key=lambda n: links[n]["transfer_seconds"])
    assert order == sorted(LINK_PROFILES, key=lambda n: -LINK_PROFILES[n]["bandwidth_bps"])


def test_plan_and_trial_agree_on_the_transfer(cli: Cli, tmp_path: Path) -> None:
    """The plan's transfer time over a model's link, plus what the activation adds, is the
    time a device of the trial takes from its 11.3's release to its response: the
    ACTIVATE there and its answer back (one link latency), the reboot, and the 11.2 read
    with which the scheduler confirms the version (one more latency)."""
    config = tmp_path / "fleet.yaml"
    config.write_text(
        "name: t\nmodels:\n  - {name: m1, manufacturer_code: 0x1234, image_type: 1,"
        " hardware_version: 2, slot_capacity_bytes: 200000, reboot_seconds: 45,"
        " link: {bandwidth_bps: 50000, latency_seconds: 2.0}}\n"
        "devices:\n  - {model: m1, count: 1, firmware_version: 1}\n"
    )
    image = write_image(tmp_path / "fw.ota", size_bytes=120_000)
    doc = plan(cli, image, "--devices", "1", "--model", "m1", "--config", config)
    transfer = {t["link"]: t for t in doc["links"]}["model m1"]["transfer_seconds"]
    status, trial = cli.json("trial", image, "--model", "m1", "--config", config,
                             "--devices", "3")  # fmt: skip
    assert status == 0 and trial["activated"] == 3
    activation = 2.0 + 45 + 2.0
    assert trial["seconds_per_device_p50"] == pytest.approx(transfer + activation, abs=0.3)


def test_small_image_is_not_large(cli: Cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "fw.ota", size_bytes=750_000)
    status, out, err = cli("plan", image, "--devices", "20000")
    assert (status, err) == (0, "")
    assert "large: no, exactly 750,000 bytes (large is over it)" in out
    doc = plan(cli, image, "--devices", "20000")
    assert (doc["large"], doc["bytes_over_threshold"]) == (False, 0)
    assert doc["needs_agreed_schedule"] is False
    assert "MP230's daily limits do not apply" in doc["schedule_reason"]
    assert doc["campaign"] is None and doc["estate"] is None
    assert doc["model"] is None and len(doc["links"]) == len(LINK_PROFILES)


@pytest.mark.parametrize(
    ("devices", "needs", "says"),
    [
        (500, False, "within 500 large images a day"),
        (501, True, "more than 500 large images a day"),
        (12_001, True, "more than the DCC's capacity of 12,000"),
    ],
)
def test_devices_a_day_and_the_agreed_schedule(
    cli: Cli, large_image: Path, devices: int, needs: bool, says: str
) -> None:
    doc = plan(cli, large_image, "--devices", str(devices), "--other-users", "3")
    assert doc["needs_agreed_schedule"] is needs
    assert says in doc["schedule_reason"]
    # three other Users: a quarter of each day's 12,000
    assert doc["estate"]["days_at_capacity_sharing"] == 224


def test_the_config_sets_threshold_limits_capacity_and_loss(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(
        "name: t\nblock_size_bytes: 512\nmodels:\n  - {name: m1, manufacturer_code: 0x1234,"
        " image_type: 1, hardware_version: 2, slot_capacity_bytes: 200000,"
        " faults: {block_loss_rate: 0.1}}\n"
        "devices:\n  - {model: m1, count: 1, firmware_version: 1}\n"
        "scheduler: {large_image_threshold_bytes: 10000, large_images_per_day: 1000,"
        " user_daily_limit: 100}\n"
    )
    image = write_image(tmp_path / "fw.ota", size_bytes=10_240)
    doc = plan(cli, image, "--devices", "150", "--model", "m1", "--config", config,
               "--other-users", "0")  # fmt: skip
    assert (doc["large"], doc["bytes_over_threshold"]) == (True, 240)
    assert (doc["block_size"], doc["blocks"]) == (512, 20)
    assert doc["needs_agreed_schedule"] is True
    assert doc["loss"]["block_loss_rate"] == 0.1
    assert doc["loss"]["source"] == f"model m1 in {config}"
    camp = doc["campaign"]
    assert (camp["per_day_without_schedule"], camp["days_without_schedule"]) == (100, 2)
    assert camp["days_at_capacity_alone"] == 1
    estate = doc["estate"]
    assert estate["days_without_schedule"] == 6_700
    # 670 days at 1,000 a day are past the scheduler's 400-day horizon: the policy refuses
    assert estate["days_at_capacity_alone"] is None
    assert any("no room for 670000 devices within 400 days" in n for n in estate["notes"])


def test_the_plan_for_a_person(cli: Cli, large_image: Path) -> None:
    status, out, err = cli("plan", large_image, "--devices", "600", "--model", "zeta-s1")
    assert (status, err) == (0, "")
    assert f"{large_image}: 750,001 bytes, for model zeta-s1" in out
    assert "large: yes, 1 bytes over the 750,000 threshold (MP230)" in out
    assert f"mean of {SAMPLES_PER_LINK} devices; loss 0.02, default" in out
    assert "600 devices a day: needs an agreed schedule" in out
    assert "estate of 670,000: 1,340 days at 500 a day without a schedule; 56 days" in out


def test_bad_input_is_one_line_and_exit_2(cli: Cli, tmp_path: Path, large_image: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    for argv, says in [
        ((tmp_path / "absent.ota", "--devices", "1"), "No such file"),
        ((text, "--devices", "1"), "not a ZigBee OTA image"),
        ((large_image, "--devices", "1", "--model", "x"), "unknown model 'x'"),
        ((large_image, "--devices", "1", "--config", text), "expected a mapping"),
    ]:
        assert_one_error_line(*cli("plan", *argv), says)


def test_fewer_devices_per_link_for_an_image_whose_copies_would_not_fit() -> None:
    # 64 MiB of copies at once: two settings of n devices each
    assert samples_per_link(1_048_576) == SAMPLES_PER_LINK
    assert samples_per_link(16 * 2**20) == 2
    assert samples_per_link(256 * 2**20) == 1
