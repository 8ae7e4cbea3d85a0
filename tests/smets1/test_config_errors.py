"""A config that cannot be used: one line a problem, naming the file, the line, the field
and what was expected (issue 10, item 10)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import smets1.config
from orchestrator.preflight import check_images_fit_memory, image_bytes
from smets1.config import FleetConfig, load_config
from smets1.config_types import FieldError
from smets1.errors import ConfigError
from smets1.limits import MAX_CONFIG_VALUES, MAX_FLEET_DEVICES, MAX_IMAGE_BYTES
from tests.factories import tiny_config

# tiny_config written block style, one key a line: the lines the tests point at.
TINY = yaml.safe_dump(tiny_config(), sort_keys=False)


def _line(text: str, needle: str, nth: int = 0) -> int:
    """1-based line of the nth line holding `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth]


def _load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value)


def _edit(data_edit: dict | None = None, **top: object) -> str:
    data = tiny_config(**top)
    for dotted, value in (data_edit or {}).items():
        *parents, last = dotted.split(".")
        node: object = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]  # type: ignore[index]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value  # type: ignore[index]
    return yaml.safe_dump(data, sort_keys=False)


def test_a_huge_count_names_file_line_field_and_limit(tmp_path: Path) -> None:
    text = _edit({"devices.0.count": 1_000_000_000})
    msg = _load(tmp_path, text)
    where = f"{tmp_path / 'fleet.yaml'}:{_line(text, 'count: 1000000000')}: devices.0.count: "
    assert msg.startswith(where), msg
    assert f"at most {MAX_FLEET_DEVICES:,} devices, got 1,000,000,000" in msg
    assert "\n" not in msg


def test_groups_together_over_the_limit_name_the_group_that_passes_it(tmp_path: Path) -> None:
    data = tiny_config()
    group = {"model": "acme-e1", "count": 6_000_000, "firmware_version": 1}
    data["devices"] = [dict(group), dict(group)]
    msg = _load(tmp_path, yaml.safe_dump(data, sort_keys=False))
    assert "devices.1.count: " in msg and "(12,000,000 with the groups before)" in msg


def test_an_image_of_a_terabyte_is_refused_with_its_line(tmp_path: Path) -> None:
    text = _edit({"images.0.size_bytes": 10**12})
    msg = _load(tmp_path, text)
    assert f":{_line(text, 'size_bytes: 1000000000000')}: images.0.size_bytes: at most" in msg
    assert f"{MAX_IMAGE_BYTES:,} bytes" in msg


def test_first_id_whose_range_passes_the_last_eui64(tmp_path: Path) -> None:
    text = _edit({"devices.0.first_id": "FF-FF-FF-FF-FF-FF-FF-FE"})
    msg = _load(tmp_path, text)
    assert f":{_line(text, 'first_id')}: devices.0.first_id: 6 ids from" in msg
    assert "expected a first_id at most FF-FF-FF-FF-FF-FF-FF-FA" in msg


def test_numbering_on_past_the_last_eui64_blames_the_count(tmp_path: Path) -> None:
    data = tiny_config()
    data["devices"][0]["first_id"] = "FF-FF-FF-FF-FF-FF-FF-F0"
    data["devices"].append({"model": "acme-e1", "count": 20, "firmware_version": 1})
    msg = _load(tmp_path, yaml.safe_dump(data, sort_keys=False))
    assert "devices.1.count: 20 ids from FF-FF-FF-FF-FF-FF-FF-F6 pass the last EUI-64" in msg


def test_overlapping_groups(tmp_path: Path) -> None:
    data = tiny_config()
    data["devices"].append(
        {
            "model": "acme-e1",
            "count": 2,
            "firmware_version": 1,
            "first_id": "00-DB-12-00-00-00-00-03",
        }
    )
    msg = _load(tmp_path, yaml.safe_dump(data, sort_keys=False))
    assert "devices.1.first_id: ids of devices.0 and devices.1 overlap from" in msg


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    text = TINY.replace("seed: 3\n", "seed: 3\nseed: 4\n")
    msg = _load(tmp_path, text)
    assert msg == (
        f"{tmp_path / 'fleet.yaml'}:{_line(text, 'seed: 4')}: seed: duplicate key (first at"
        f" line {_line(text, 'seed: 3')}); a key may appear once in a mapping"
    )
    nested = TINY.replace("  count: 6\n", "  count: 6\n  count: 7\n")
    assert "devices.0.count: duplicate key" in _load(tmp_path, nested)
    # 1 and 0x1 are the same key once YAML has read them.
    assert "a.1: duplicate key" in _load(tmp_path, "a: {1: x, 0x1: y}\n")


def test_yaml_errors_name_the_file_and_line_not_unicode_string(tmp_path: Path) -> None:
    msg = _load(tmp_path, "name: x\nmodels: [\n  - a\n")
    assert msg.startswith(f"{tmp_path / 'fleet.yaml'}:3:")
    assert "not valid YAML" in msg and "<unicode string>" not in msg


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: x\nepoch: 2025-13-01\n", ":2:8: not valid YAML: month must be in 1..12"),
        ("name: x\nseed: " + "9" * 5000 + "\n", ":2:7: not valid YAML: Exceeds the limit"),
        ("name: x\nseed: " + "[" * 100_000 + "\n", ":2:71: not valid YAML: nested more than 64"),
        ("a:\n" + "".join(" " * k + "- \n" for k in range(1, 1000)), "nested too deeply"),
        ("a: &a [*a]\n", ":1:4: a.0: an alias refers to a value that holds it"),
        ("name: x\nseed:\t1\n", ":2:6: not valid YAML: found character '\\t'"),
    ],
)
def test_yaml_that_python_cannot_hold(tmp_path: Path, text: str, says: str) -> None:
    msg = _load(tmp_path, text)
    assert says in msg and "Traceback" not in msg


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 9)]
    msg = _load(tmp_path, "\n".join(lines) + "\n")
    assert f"expands to more than {MAX_CONFIG_VALUES:,} values through aliases" in msg


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_bytes(b"name: x\nseed: \xff\n")
    with pytest.raises(ConfigError, match=r"fleet\.yaml:2: not UTF-8 text: byte 0xFF at offset"):
        load_config(path)


def test_a_file_too_large_for_a_config_is_not_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smets1.config, "MAX_CONFIG_BYTES", 100)
    msg = _load(tmp_path, "name: x\n" * 20)
    assert "more than 100 bytes; expected a YAML fleet config" in msg


def test_infinity_and_nan_are_not_numbers_here(tmp_path: Path) -> None:
    text = _edit({"models.0.reboot_seconds": float("inf")})
    msg = _load(tmp_path, text)
    assert (
        f":{_line(text, 'reboot_seconds')}: models.0.reboot_seconds: Input should be a fini" in msg
    )


def test_every_problem_on_a_line_of_its_own_with_its_line(tmp_path: Path) -> None:
    text = _edit({"models.0.reboot_secs": 5, "devices.0.count": 0, "images.0.image_type": "x"})
    msg = _load(tmp_path, text)
    lines = msg.splitlines()
    assert len(lines) == 3
    path = str(tmp_path / "fleet.yaml")
    assert f"{path}:{_line(text, 'reboot_secs')}: models.0.reboot_secs: unknown key" in lines[0]
    assert any(f"{path}:{_line(text, 'count: 0')}: devices.0.count: " in x for x in lines)
    assert any(f"{path}:{_line(text, 'image_type: x')}: images.0.image_type: " in x for x in lines)


def test_problems_past_twenty_are_counted(tmp_path: Path) -> None:
    data = tiny_config()
    data["devices"] = [{"model": "acme-e1", "count": -1, "firmware_version": 1}] * 30
    lines = _load(tmp_path, yaml.safe_dump(data)).splitlines()
    assert len(lines) == 21 and lines[-1].endswith("10 more problem(s) not shown")


def test_a_cross_field_check_points_at_the_field(tmp_path: Path) -> None:
    text = _edit({"campaigns.0.image": "nope"})
    msg = _load(tmp_path, text)
    assert msg.endswith(f":{_line(text, 'image: nope')}: campaigns.0.image: unknown image 'nope'")
    with pytest.raises(Exception, match=r"campaigns\.0\.image: unknown image 'nope'"):
        FleetConfig.model_validate(yaml.safe_load(text))  # the same words without a file


def test_image_sizes_and_hardware_versions_are_checked_with_the_config(tmp_path: Path) -> None:
    msg = _load(tmp_path, _edit({"images.0.hardware_versions": [5, 1]}))
    assert "images.0.hardware_versions: expected [min, max] with min <= max, got [5, 1]" in msg
    msg = _load(tmp_path, _edit({"images.0.size_bytes": 100}))
    assert "images.0.size_bytes: at least 136 bytes are needed" in msg


def test_a_long_input_is_shown_cut(tmp_path: Path) -> None:
    msg = _load(tmp_path, _edit({"devices.0.count": "x" * 10_000}))
    assert len(msg) < 400 and "..." in msg


def test_field_error_reads_as_before_outside_a_file() -> None:
    assert str(FieldError(("devices", 0, "model"), "unknown model 'x'")) == (
        "devices.0.model: unknown model 'x'"
    )


def test_images_against_memory(tmp_path: Path) -> None:
    config = FleetConfig.model_validate(tiny_config())
    check_images_fit_memory(config, "c.yaml", memory=10**9)
    with pytest.raises(ConfigError, match=r"c\.yaml: images: 1 image\(s\) of 20,480 bytes"):
        check_images_fit_memory(config, "c.yaml", memory=50_000)


def test_an_image_file_over_the_limit_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.ota"
    with big.open("wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)  # sparse: no disk, and never read
    data = tiny_config()
    data["images"][0].pop("size_bytes")
    data["images"][0]["file"] = str(big)
    config = FleetConfig.model_validate(data)
    with pytest.raises(ConfigError, match=r"images\.0\.file: .*big\.ota is 268,435,457 bytes"):
        image_bytes(config)


def test_a_plain_value_error_that_names_its_field_gets_the_line() -> None:
    """Validators written `raise ValueError("devices.0.model: ...")` keep working."""
    from pydantic import ValidationError, model_validator

    from smets1.config import _format_error
    from smets1.config_types import Strict

    class Checked(Strict):
        devices: list[dict[str, int]]

        @model_validator(mode="after")
        def _check(self) -> Checked:
            raise ValueError("devices.0.count: expected fewer")

    with pytest.raises(ValidationError) as err:
        Checked.model_validate({"devices": [{"count": 5}]})
    lines = {("devices",): 2, ("devices", 0): 3, ("devices", 0, "count"): 3}
    text = _format_error(Path("f.yaml"), err.value, lines)
    assert text == "f.yaml:3: devices.0.count: expected fewer"


def test_a_file_name_with_nul_is_a_config_error(tmp_path: Path) -> None:
    text = _edit({"models.0.public_key": "k\x00"})
    msg = _load(tmp_path, text)
    assert "models.0.public_key: expected a file name (not empty, no NUL character)" in msg


def test_an_image_file_that_never_ends_is_not_read_forever(tmp_path: Path) -> None:
    from orchestrator.campaign import make_image

    data = tiny_config()
    data["images"][0].pop("size_bytes")
    data["images"][0]["file"] = "/dev/zero"
    config = FleetConfig.model_validate(data)
    with pytest.raises(ConfigError, match=r"images\.acme-2\.file: /dev/zero is not a regular"):
        make_image(config.images[0])
