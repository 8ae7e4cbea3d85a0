"""A campaign sent in daily batches (`batch_size`, issue 16): a User's system sending each
day's work, as the estate scenario's east-power sends 2,000 a day. Each batch is submitted
as a campaign of its own (`name#k`) `batch_every_seconds` after the one before; under
MP230 each day's batch meets the User's daily allowance afresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from orchestrator.campaign import campaign_batches
from orchestrator.cli import main
from smets1.config import CampaignConfig
from tests.factories import tiny_config

USER = "90-B3-D5-1F-30-01-00-00"


def campaign(**fields: Any) -> CampaignConfig:
    return CampaignConfig.model_validate(
        {"name": "c", "user": USER, "image": "acme-2", "devices": {"model": "acme-e1"}, **fields}
    )


def test_batches_split_the_devices_in_order_a_period_apart() -> None:
    c = campaign(batch_size=4, batch_every_seconds=3_600, submit_after_seconds=100)
    got = campaign_batches(c, list(range(10)))
    assert [(at, b.name, ids) for at, b, ids in got] == [
        (100.0, "c#1", [0, 1, 2, 3]),
        (3_700.0, "c#2", [4, 5, 6, 7]),
        (7_300.0, "c#3", [8, 9]),
    ]
    assert all(b.batch_size is None for _, b, _ in got)
    whole = campaign()
    assert campaign_batches(whole, [1, 2]) == [(0.0, whole, [1, 2])]
    assert campaign_batches(campaign(batch_size=3), []) == []


def run(tmp_path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "batches.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def test_a_user_over_its_allowance_each_day_gets_it_each_day_and_the_rest_held(
    tmp_path: Path,
) -> None:
    # 6 devices, 3 a day, large images, an allowance of 2 a User a day: each day's batch
    # has 2 released and 1 held for a schedule, not 2 on day 1 and 4 held.
    raw = tiny_config(
        campaigns=[dict(campaign(name="daily", batch_size=3).model_dump(mode="json"), user=USER)],
        scheduler={"large_image_threshold_bytes": 1_000, "user_daily_limit": 2},
    )
    s = run(tmp_path, raw)
    by_name = {c["name"]: c for c in s["campaigns"]}
    assert set(by_name) == {"daily#1", "daily#2"}
    for c in by_name.values():
        assert (c["devices"], c["activated"], c["held"]) == (3, 2, 1)
    days = [day for c in by_name.values() for day in c["released_per_day"]]
    assert len(set(days)) == 2  # one day each
    assert s["images_activated"] == 4
