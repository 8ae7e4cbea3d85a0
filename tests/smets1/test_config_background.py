"""The `background:` section (issue 16): off unless given, defaults that make sense, and
one line naming the field and what was expected for each thing wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from smets1.config import load_config
from smets1.config_background import DEFAULT_HOURLY_WEIGHTS, BackgroundConfig
from smets1.errors import ConfigError
from tests.factories import tiny_config

KIND = {"per_device_per_day": 2, "request_bytes": 64, "response_bytes": 96, "target_seconds": 30}


def _write(tmp_path: Path, background: Any) -> Path:
    raw = tiny_config()
    if background is not None:
        raw["background"] = background
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _error(tmp_path: Path, background: Any) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, background))
    return str(err.value)


def test_off_unless_the_section_is_there(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, None)).background is None


def test_an_empty_section_turns_it_on_with_the_defaults(tmp_path: Path) -> None:
    bg = load_config(_write(tmp_path, {})).background
    assert isinstance(bg, BackgroundConfig)
    assert bg.hourly_weights == DEFAULT_HOURLY_WEIGHTS and len(bg.hourly_weights) == 24
    assert set(bg.kinds) == {"read_registers", "read_daily_log", "read_profile"}
    assert bg.per_device_per_day == 4
    # morning and evening peaks above the night
    night, morning, evening = bg.hourly_weights[3], bg.hourly_weights[8], bg.hourly_weights[18]
    assert morning > 3 * night and evening > morning


def test_kinds_as_given(tmp_path: Path) -> None:
    bg = load_config(_write(tmp_path, {"kinds": {"read_event_log": KIND}})).background
    assert bg is not None and list(bg.kinds) == ["read_event_log"]
    assert bg.kinds["read_event_log"].target_seconds == 30


@pytest.mark.parametrize(
    ("background", "field", "says"),
    [
        ({"kinds": {"read_meter": KIND}}, "background.kinds.read_meter",
         "unknown kind 'read_meter'; expected one of read_registers, read_daily_log,"
         " read_profile, read_event_log"),
        ({"kinds": {}}, "background.kinds", "expected at least one kind"),
        ({"kinds": {"read_profile": {**KIND, "per_device_per_day": 0}}}, "background.kinds",
         "every kind has per_device_per_day 0"),
        ({"hourly_weights": [1] * 23}, "background.hourly_weights",
         "expected 24 weights, one an hour from 00:00, got 23"),
        ({"hourly_weights": [1] * 5 + [-1] + [1] * 18}, "background.hourly_weights.5",
         "expected a weight of 0 or more, got -1"),
        ({"hourly_weights": [0] * 24}, "background.hourly_weights",
         "expected some hour with a weight above 0"),
        ({"kinds": {"read_registers": {**KIND, "request_bytes": 10}}},
         "background.kinds.read_registers.request_bytes", "greater than or equal to 19"),
        ({"kinds": {"read_registers": {**KIND, "response_bytes": 70_000}}},
         "background.kinds.read_registers.response_bytes", "less than or equal to 65535"),
        ({"kinds": {"read_registers": {**KIND, "target_seconds": 0}}},
         "background.kinds.read_registers.target_seconds", "greater than 0"),
        ({"give_up_seconds": 20, "kinds": {"read_registers": KIND}}, "background.give_up_seconds",
         "expected at least the longest target_seconds (30), got 20"),
        ({"max_open_requests": 0}, "background.max_open_requests", "greater than 0"),
        ({"rate": 4}, "background.rate", "unknown key"),
        ({"kinds": {"read_registers": {**KIND, "size": 3}}}, "background.kinds.read_registers.size",
         "unknown key"),
    ],
)  # fmt: skip
def test_one_line_names_the_field_and_what_was_expected(
    tmp_path: Path, background: dict[str, Any], field: str, says: str
) -> None:
    msg = _error(tmp_path, background)
    assert len(msg.splitlines()) == 1, msg
    assert f": {field}: " in msg and says in msg, msg
    assert msg.startswith(f"{tmp_path / 'fleet.yaml'}:")
