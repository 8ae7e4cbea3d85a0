"""`scheduler.policy` in a fleet config: the kinds, their parameters, and the errors."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from smets1.config import load_config
from smets1.config_policy import (
    BUILT_KINDS,
    EqualSharePolicy,
    Mp230Policy,
    NoLimitPolicy,
    PolicyConfig,
    SpareCapacityPolicy,
    parse_policy,
)
from smets1.errors import ConfigError
from tests.factories import tiny_config


def _write(tmp_path: Path, policy: object, **top: object) -> Path:
    path = tmp_path / "fleet.yaml"
    raw = tiny_config(scheduler={"policy": policy}, **top)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _policy_line(path: Path) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if "policy" in line)


def test_every_tag_is_unique_and_a_built_kind() -> None:
    union = typing.get_args(typing.get_args(PolicyConfig)[0])
    tags = [typing.get_args(m.model_fields["kind"].annotation)[0] for m in union]
    assert len(tags) == len(set(tags))
    assert sorted(tags) == sorted(k.value for k in BUILT_KINDS)


def test_default_is_mp230_and_a_bare_kind_is_short_for_the_mapping(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, {"kind": "mp230"})).scheduler.policy == Mp230Policy()
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(tiny_config(), sort_keys=False))
    assert load_config(path).scheduler.policy == Mp230Policy()
    assert load_config(_write(tmp_path, "no_limit")).scheduler.policy == NoLimitPolicy()
    cfg = load_config(_write(tmp_path, {"kind": "equal_share", "users": 5}))
    assert cfg.scheduler.policy == EqualSharePolicy(users=5)
    assert parse_policy({"kind": "equal_share"}) == EqualSharePolicy(users=None)


def test_spare_capacity_without_background_is_one_line_naming_the_kind(tmp_path: Path) -> None:
    path = _write(tmp_path, {"kind": "spare_capacity"})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{_policy_line(path) + 1}: scheduler.policy.kind: "), msg
    assert "expected a background: section (background: {} for the defaults), got none" in msg
    assert "\n" not in msg


def test_spare_capacity_with_background_and_its_headroom(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "spare_capacity", background={}))
    assert cfg.scheduler.policy == SpareCapacityPolicy(headroom=0.2)
    cfg = load_config(_write(tmp_path, {"kind": "spare_capacity", "headroom": 1}, background={}))
    assert cfg.scheduler.policy == SpareCapacityPolicy(headroom=1.0)
    assert parse_policy({"kind": "spare_capacity", "headroom": "0.5"}) == SpareCapacityPolicy(
        headroom=0.5
    )


@pytest.mark.parametrize(
    ("policy", "field", "expected"),
    [
        (
            {"kind": "fastest"},
            "kind",
            "one of mp230, no_limit, equal_share, spare_capacity, got 'fastest'",
        ),
        ({"kind": "spare_capacity", "headroom": 0}, "headroom", "greater than 0"),
        ({"kind": "spare_capacity", "headroom": 1.5}, "headroom", "less than or equal to 1"),
        ({"kind": "spare_capacity", "users": 3}, "users", "unknown key"),
        ({"kind": "equal_share", "users": 0}, "users", "greater than 0"),
        ({"kind": "no_limit", "users": 3}, "users", "unknown key"),
        ({"kind": "equal_share", "share": 3}, "share", "unknown key"),
    ],
)
def test_a_bad_policy_names_its_field(
    tmp_path: Path, policy: dict[str, object], field: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, policy))
    msg = str(err.value)
    assert f": scheduler.policy.{field}: " in msg, msg
    assert expected in msg


def test_the_cli_says_it_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, {"kind": "spare_capacity"})
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("smets1: error: ") and "scheduler.policy.kind: spare_capacity" in err
    assert "expected a background: section" in err
    assert not (tmp_path / "out").exists()
