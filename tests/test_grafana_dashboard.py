"""deploy/grafana-dashboard.json: valid JSON Grafana imports, over metrics the roles
really expose (a renamed metric fails here, not on a blank panel)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("smets1", "emulator", "dco_mock", "scheduler", "orchestrator")


def _declared_names() -> set[str]:
    """Every quoted metric name in the packages, with and without the smets1_ prefix."""
    names: set[str] = set()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for name in re.findall(r'"([a-z][a-z0-9_]+)"', path.read_text()):
                names.add(name if name.startswith("smets1_") else f"smets1_{name}")
    return names


def test_every_panel_queries_metrics_the_roles_expose() -> None:
    doc = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    assert doc["uid"] and doc["panels"]
    declared = _declared_names()
    used: set[str] = set()
    for panel in doc["panels"]:
        assert panel["title"] and panel["targets"], panel
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(smets1_[a-z0-9_]+|process_[a-z_]+)", target["expr"]))
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    missing = []
    for name in used:
        if name.startswith("process_"):
            continue  # prometheus-client's process collector, on every role
        base = re.sub(r"_(bucket|count|sum|total)$", "", name)
        if base not in declared:
            missing.append(name)
    assert missing == []
    # The figures the issue asks for are all there.
    for needed in (
        "smets1_scheduler_large_images_released_today",
        "smets1_scheduler_user_large_images_released_today",
        "smets1_scheduler_requests",
        "smets1_scheduler_trt_total",
        "smets1_scheduler_release_to_answer_simulated_seconds_bucket",
        "smets1_dco_transfers_in_flight",
        "smets1_scheduler_failed_requests_total",
        "smets1_clock_speed",
        "smets1_clock_lag_simulated_seconds",
    ):
        assert needed in used, needed
