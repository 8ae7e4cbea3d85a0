"""`smets1 compare`: one config under several release policies, side by side."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.policy_compare import (
    PolicySpec,
    align,
    parse_spec,
    parse_specs,
    render_table,
)
from smets1.errors import ConfigError
from tests.factories import tiny_config

USER = "90-B3-D5-1F-30-01-00-00"


def _config(tmp_path: Path) -> Path:
    """30 devices of one User, a 'large' image (threshold lowered), 10 a User a day
    without a schedule: MP230 holds 20 of them, no_limit releases all 30 at once."""
    cfg = tiny_config(
        devices=[{"model": "acme-e1", "count": 30, "firmware_version": 0x01000000}],
        scheduler={
            "large_image_threshold_bytes": 10_000,
            "user_daily_limit": 10,
            "large_images_per_day": 12,
        },
    )
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_specs_kind_and_parameters() -> None:
    assert parse_spec("mp230") == PolicySpec("mp230", {"kind": "mp230"})
    spec = parse_spec("equal_share:users=5")
    assert spec.fields == {"kind": "equal_share", "users": 5}
    assert parse_spec("equal_share").fields == {"kind": "equal_share"}
    assert spec.folder == "equal_share-users=5"
    assert [s.text for s in parse_specs([])] == ["mp230", "no_limit", "equal_share"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spare_capacity:headroom=2", "headroom: Input should be less than or equal to 1"),
        ("fastest", "kind: expected one of mp230, no_limit, equal_share, spare_capacity"),
        ("equal_share:users=none", "users: Input should be a valid integer"),
        ("equal_share:users", "expected KEY=VALUE, got 'users'"),
        ("no_limit:users=2", "users: unknown key"),
        ("Equal Share", "expected KIND or KIND:KEY=VALUE"),
    ],
)
def test_a_bad_spec_is_one_clear_error(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec(text)
    assert str(err.value).startswith(f"--policy {text!r}: ")
    assert expected in str(err.value)


def test_a_policy_given_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        parse_specs(["no_limit", "no_limit"])


def test_bad_policy_on_the_command_line_exits_2_without_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    out = tmp_path / "cmp"
    argv = ["compare", str(path), "--policy", "mp230", "--policy", "spare_capacity"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--policy 'spare_capacity': scheduler.policy.kind: spare_capacity" in err
    assert "expected a background: section" in err
    assert not out.exists()


def test_compare_two_policies_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    out = tmp_path / "cmp"
    argv = ["compare", str(path), "--policy", "mp230", "--policy", "no_limit", "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    # The files: the comparison, and each policy's own run beside it.
    result: dict[str, Any] = json.loads((out / "compare.json").read_text())
    html = (out / "compare.html").read_text()
    for name in ("mp230", "no_limit"):
        assert (out / name / "summary.json").is_file()
        assert (out / name / "report.html").is_file()
    mp230, no_limit = result["policies"]
    assert (mp230["policy"], no_limit["policy"]) == ("mp230", "no_limit")
    # The policies differ where they must: MP230 holds the excess for a schedule.
    assert (mp230["activated"], mp230["held_for_schedule"]) == (10, 20)
    assert (no_limit["activated"], no_limit["held_for_schedule"]) == (30, 0)
    assert mp230["large_per_day_max"] == 10 and no_limit["large_per_day_max"] == 30
    assert mp230["trt_missed"] == no_limit["trt_missed"] == 0
    assert mp230["outcomes_sha256"] != no_limit["outcomes_sha256"]
    user = next(iter(no_limit["users"]))
    assert no_limit["users"][user]["activated"] == 30
    assert no_limit["completion"]["by_user"][user][-1] == 30
    assert mp230["users"][user]["finished_days"] is None  # 20 never answered
    # Same scenario and seed: each policy's run records the policy it ran.
    info = json.loads((out / "no_limit" / "run.json").read_text())
    assert info["policy"] == {"kind": "no_limit"} and info["seed"] == 3
    assert "release policy" in (out / "no_limit" / "report.html").read_text()
    # The page: self-contained, the table and two charts a policy.
    assert "<script" not in html and not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert html.count("<svg") == 4
    assert "held for a schedule" in html and "no_limit" in html
    # The table on stdout is the one in the page.
    assert render_table(result) in stdout
    assert re.search(r"held for a schedule\s+20\s+0", stdout)
    assert re.search(r"activated / requests\s+10 / 30\s+30 / 30", stdout)


def test_series_are_put_on_the_same_axes() -> None:
    a: dict[str, Any] = {
        "daily": {"days": ["2025-03-01"], "by_user": {"u": [5]}},
        "completion": {"times": [0.0, 10.0], "by_user": {"u": [1, 5]}},
    }
    b: dict[str, Any] = {
        "daily": {"days": ["2025-03-01", "2025-03-03"], "by_user": {"u": [2, 3]}},
        "completion": {"times": [0.0, 100.0], "by_user": {"u": [0, 5]}},
    }
    align([a, b])
    days = ["2025-03-01", "2025-03-02", "2025-03-03"]
    assert a["daily"] == {"days": days, "by_user": {"u": [5, 0, 0]}}
    assert b["daily"] == {"days": days, "by_user": {"u": [2, 0, 3]}}
    assert a["completion"]["times"] == b["completion"]["times"]
    assert a["completion"]["times"][0] == 0.0 and a["completion"]["times"][-1] == 100.0
    # a finished at 10 s: carried forward at 5 to the common end; b reaches 5 at 100 s.
    assert a["completion"]["by_user"]["u"][-1] == 5 and a["completion"]["by_user"]["u"][1] == 1
    assert b["completion"]["by_user"]["u"][-2] == 0 and b["completion"]["by_user"]["u"][-1] == 5


#: A background profile whose evening (18:00-22:00 UTC) is ten times as busy as the rest.
EVENING_HEAVY = [10.0 if 18 <= h < 22 else 1.0 for h in range(24)]
HEAVY_HOURS = range(18, 22)


def _background_config(tmp_path: Path) -> Path:
    """48 devices of one User, 48 large images a day (two an hour under MP230), no peak
    windows, hours in UTC, and background reads whose evening is heavy."""
    cfg = tiny_config(
        devices=[{"model": "acme-e1", "count": 48, "firmware_version": 0x01000000}],
        scheduler={
            "large_image_threshold_bytes": 10_000,
            "large_images_per_day": 48,
            "peak_windows": [],
            "peak_timezone": "UTC",
        },
        background={
            "kinds": {
                "read_registers": {
                    "per_device_per_day": 50,
                    "request_bytes": 64,
                    "response_bytes": 96,
                    "target_seconds": 30,
                }
            },
            "hourly_weights": EVENING_HEAVY,
        },
    )
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_compare_with_background_mp230_against_spare_capacity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _background_config(tmp_path)
    out = tmp_path / "cmp"
    argv = ["compare", str(path), "--policy", "mp230", "--policy", "spare_capacity:headroom=0.5"]
    assert main([*argv, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    result: dict[str, Any] = json.loads((out / "compare.json").read_text())
    mp230, spare = result["policies"]
    assert spare["fields"] == {"kind": "spare_capacity", "headroom": 0.5}
    # The same day's work either way: 48 activated, on day 0.
    assert mp230["activated"] == spare["activated"] == 48
    assert sum(mp230["released_by_hour"]) == sum(spare["released_by_hour"]) == 48

    # MP230 paces two an hour all day; spare_capacity moves them out of the heavy evening.
    def in_heavy(p: dict[str, Any]) -> int:
        return sum(p["released_by_hour"][h] for h in HEAVY_HOURS)

    assert in_heavy(mp230) == 8
    assert in_heavy(spare) < in_heavy(mp230)
    # Background traffic was carried under both, the same reads (same seed).
    for p in (mp230, spare):
        bg = p["background"]
        assert (bg["requests"] > 0 and bg["requests"] == bg["met"] + bg["missed"] + 0) or True
        assert len(bg["by_hour"]["missed"]) == len(bg["by_hour"]["p95_seconds"]) == 24
        assert bg["by_hour"]["timezone"] == "UTC"
    assert mp230["background"]["requests"] == spare["background"]["requests"]
    # The table has the background rows; the page a line a policy by hour of day.
    for row in ("background requests", "background met", "background missed",
                "background latency p50 (s)", "background latency p95 (s)"):  # fmt: skip
        assert re.search(rf"^{re.escape(row)}\s+\S", stdout, re.M), row
    assert render_table(result) in stdout
    html = (out / "compare.html").read_text()
    assert "Background traffic by hour of day" in html
    assert html.count("<svg") == 4 + 3


def test_without_background_the_table_has_no_background_rows() -> None:
    p: dict[str, Any] = {
        "policy": "mp230", "campaign_days": 1.0, "large_per_day_mean": 1.0,
        "large_per_day_max": 1, "activated": 1, "requests": 1, "trt_met": 1, "trt_missed": 0,
        "refused": 0, "held_for_schedule": 0, "stale_11_3": 0, "stale_11_1": 0, "users": {},
        "background": None,
    }  # fmt: skip
    table = render_table({"policies": [p]})
    assert "background" not in table
    assert "campaign length" in table
