from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smets1.config import DEVICE_ID_BASE, FleetConfig, load_config
from smets1.errors import ConfigError
from tests.factories import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("name", ["small.yaml", "demo.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(ROOT / "fleet_configs" / name)
    assert cfg.campaigns and cfg.images


def test_demo_is_a_dcc_day() -> None:
    cfg = load_config(ROOT / "fleet_configs" / "demo.yaml")
    assert sum(g.count for g in cfg.devices) == 12_000
    assert len(cfg.models) >= 2
    assert {i.size_bytes for i in cfg.images} == {1_048_576}
    assert cfg.block_size_bytes == 1024


def test_unknown_key_names_the_field(tmp_path: Path) -> None:
    data = tiny_config()
    data["models"][0]["reboot_secs"] = 5
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    text = str(err.value)
    assert str(tmp_path / "fleet.yaml") in text
    assert "models.0.reboot_secs: unknown key" in text


def test_bad_number_names_field_and_value(tmp_path: Path) -> None:
    data = tiny_config()
    data["models"][0]["manufacturer_code"] = "0xZZ"
    with pytest.raises(ConfigError, match=r"models\.0\.manufacturer_code: .*0xZZ"):
        load_config(write(tmp_path, data))


def test_unknown_reference_is_an_error(tmp_path: Path) -> None:
    data = tiny_config()
    data["campaigns"][0]["image"] = "nope"
    with pytest.raises(ConfigError, match=r"campaigns\.0\.image: unknown image 'nope'"):
        load_config(write(tmp_path, data))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_hex_strings_and_eui64_and_numbering() -> None:
    data = tiny_config()
    data["models"][0]["manufacturer_code"] = "0x1234"
    data["devices"].append(
        {
            "model": "acme-e1",
            "count": 2,
            "firmware_version": 1,
            "first_id": "00-DB-12-34-00-00-00-10",
        }
    )
    cfg = FleetConfig.model_validate(data)
    assert cfg.models[0].manufacturer_code == 0x1234
    ids = [i for i, _ in cfg.device_ids()]
    assert ids[:6] == [DEVICE_ID_BASE + 1 + k for k in range(6)]
    assert ids[6:] == [0x00DB123400000010, 0x00DB123400000011]
    assert cfg.campaigns[0].user == 0x90B3D51F30010000


A_USER, B_USER, DESK_USER = (
    "90-B3-D5-1F-30-01-00-00",
    "90-B3-D5-1F-30-02-00-00",
    "90-B3-D5-1F-30-FF-00-00",
)


def _two_suppliers(**group: object) -> dict[str, object]:
    data = tiny_config()
    data["devices"][0].update(group)
    data["scheduler"] = {
        "users": [
            {"id": A_USER, "token": "a"},
            {"id": B_USER, "token": "b"},
            {"id": DESK_USER, "token": "d", "service_desk": True},
        ]
    }
    return data


def test_with_two_suppliers_every_group_names_its_supplier(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"devices\.0\.supplier: required .* \(2\)"):
        load_config(write(tmp_path, _two_suppliers()))
    cfg = load_config(write(tmp_path, _two_suppliers(supplier=A_USER)))
    supplier = cfg.supplier_of()
    first = DEVICE_ID_BASE + 1
    assert [supplier(first + i) for i in (-1, 0, 5, 6)] == [
        None,
        int(A_USER.replace("-", ""), 16),
        int(A_USER.replace("-", ""), 16),
        None,
    ]


@pytest.mark.parametrize(
    ("supplier", "message"),
    [
        (DESK_USER, "is a Service Desk User, not a supplier"),
        ("90-B3-D5-1F-30-09-00-00", "is neither a scheduler User nor the User of a campaign"),
    ],
)
def test_a_supplier_is_a_supplying_user(tmp_path: Path, supplier: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"devices\.0\.supplier: {supplier} {message}"):
        load_config(write(tmp_path, _two_suppliers(supplier=supplier)))


def test_one_supplying_user_needs_no_supplier_field(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, tiny_config()))
    assert cfg.supplier_of()(DEVICE_ID_BASE + 1) is None


def test_a_bad_token_is_named_but_never_echoed(tmp_path: Path) -> None:
    data = tiny_config(dco={"token": 987654321})
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    assert "dco.token" in str(err.value) and "987654321" not in str(err.value)
