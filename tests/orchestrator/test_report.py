"""The report a test lead forwards: self-contained, legible, rebuilt from the run's folder."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from orchestrator import report_charts as charts
from orchestrator.cli import main
from orchestrator.report import FAILED_SHOWN, render
from orchestrator.report_data import (
    RunRecord,
    hourly_counts,
    load_run,
    state_timeline,
)
from scheduler.requests import ActivationRequest, RequestState

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def faults_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    assert (
        main(["run", str(ROOT / "fleet_configs" / "faults.yaml"), "--out", str(out), "--quiet"])
        == 0
    )
    return out


def test_hourly_counts() -> None:
    assert hourly_counts([0, 10, 3599, 3600, 7300], start=0) == [3, 1, 1]
    assert hourly_counts([], start=0) == []


def _external_references(page: str) -> list[str]:
    """Every URL the page would fetch or link outside itself."""
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page)
    urls += re.findall(r"url\(([^)]*)\)", page)
    return [u for u in urls if not u.startswith("#") and u != "failed_devices.csv"]


def test_report_is_self_contained_and_says_what_ran(faults_run: Path) -> None:
    page = (faults_run / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    assert "<script" not in page and _external_references(page) == []
    # The config, its seed and the version.
    assert "config SHA-256" in page and "<td>7</td>" in page  # faults.yaml: seed 7
    assert "smets1-fleet version" in page and "block_size_bytes: 1024" in page
    # Labels, not raw keys; sizes, not raw bytes.
    assert "bytes_delivered" not in page and "MiB in" in page
    for section in ("Per campaign", "Per User", "Failures by reason", "Failures by model",
                    "Release to answer, against the TRT", "Devices by request state"):  # fmt: skip
        assert f">{section}" in page, section
    # Axis titles and values written on the charts.
    for axis in ("release to answer, simulated ", "failed requests", "simulated time (UTC)"):
        assert axis in page, axis
    assert "TRT 5 days (120 h)" in page


def test_failed_devices_on_the_page_and_all_in_the_csv(faults_run: Path) -> None:
    page = (faults_run / "report.html").read_text()
    rows = list(csv.DictReader((faults_run / "failed_devices.csv").open()))
    assert len(rows) == 64  # faults.yaml: 64 of 420 fail
    assert {r["reason"] for r in rows} == {
        "boot_failed", "hardware_mismatch", "offline", "refused", "too_large_for_slot"
    }  # fmt: skip
    assert {r["model"] for r in rows} >= {"acme-e1-rev9", "acme-mini"}
    assert "Failed devices (64 of 64 shown)" in page
    assert all(r["device_id"] in page for r in rows)


def test_smets1_report_rebuilds_the_same_page(faults_run: Path) -> None:
    first = (faults_run / "report.html").read_text()
    (faults_run / "report.html").unlink()
    (faults_run / "failed_devices.csv").unlink()
    assert main(["report", str(faults_run)]) == 0
    assert (faults_run / "report.html").read_text() == first
    assert (faults_run / "failed_devices.csv").is_file()


def test_report_of_a_folder_that_is_no_run_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no summary.json" in err[0]
    (tmp_path / "summary.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run summary" in capsys.readouterr().err


def _failed(n: int) -> list[ActivationRequest]:
    return [
        ActivationRequest(
            request_id=i + 1,
            user=1,
            campaign="c1",
            device_id=0x00DB_1200_0000_0001 + i,
            firmware_hash=b"\0" * 32,
            file_version=2,
            large=True,
            submitted_at=0.0,
            state=RequestState.FAILED,
            released_at=10.0,
            completed_at=3600.0 + i,
            failure="offline",
        )
        for i in range(n)
    ]


def test_only_the_first_hundred_failed_devices_are_listed() -> None:
    reqs = _failed(FAILED_SHOWN + 50)
    summary = {"config": "x", "requests": len(reqs), "failed": {"offline": len(reqs)}}
    page = render(RunRecord(summary, None, reqs, True))
    assert f"Failed devices ({FAILED_SHOWN} of {len(reqs)} shown)" in page
    assert "00-DB-12-00-00-00-00-64" in page  # the 100th
    assert "00-DB-12-00-00-00-00-65" not in page  # the 101st: in the CSV only


def test_daily_chart_scales_to_the_data_not_to_the_capacity() -> None:
    # 1,400 a day: the 12,000 capacity is said, not drawn (the bars would be slivers);
    # the 500-a-User line is drawn.
    svg = charts.daily_releases(["2025-03-01", "2025-03-02"], {"acme": [1400, 1300]}, 12_000, 500)
    assert "DCC capacity 12,000 a day (above this scale)" in svg
    assert "500 a User a day without a schedule" in svg
    assert "1,400" in svg and "large images released" in svg
    full = charts.daily_releases(["2025-03-01"], {"a": [6000], "b": [5900]}, 12_000, 500)
    assert (
        "DCC capacity 12,000 a day<" in full.replace("</", "<")
        or "DCC capacity 12,000 a day" in full
    )
    assert "above this scale" not in full.split("500 a User")[0]


def test_state_timeline_counts_every_request_once_at_every_moment() -> None:
    reqs = _failed(3)
    reqs[0].state, reqs[0].failure = RequestState.DONE, None
    held = ActivationRequest(
        request_id=9,
        user=1,
        campaign="c1",
        device_id=9,
        firmware_hash=b"\0" * 32,
        file_version=2,
        large=True,
        submitted_at=0.0,
        state=RequestState.HELD,
    )
    times, series = state_timeline([*reqs, held], points=5)
    assert len(times) == 5
    for i in range(5):
        assert sum(s[i] for s in series.values()) == 4
    assert series["held"] == [1] * 5
    assert series["activated"][-1] == 1 and series["failed"][-1] == 2
    assert series["waiting"][0] == 3 and series["in flight"][0] == 0


def test_load_run_without_the_store_leaves_the_timeline_out(
    faults_run: Path, tmp_path: Path
) -> None:
    (tmp_path / "summary.json").write_text((faults_run / "summary.json").read_text())
    record = load_run(tmp_path)
    assert not record.has_requests and record.info is None
    page = render(record)
    assert "store was not found" in page and "Failures by reason" in page


def test_tokens_in_the_config_never_reach_the_report(tmp_path: Path) -> None:
    out = tmp_path / "mp230"
    src = ROOT / "fleet_configs" / "mp230.yaml"
    assert "token: acme-token" in src.read_text()
    cfg = tmp_path / "mp230.yaml"
    # The same Users and tokens, with a small campaign: the report is what is checked.
    text = src.read_text().split("campaigns:")[0] + (
        "campaigns:\n  - {name: c, user: 90-B3-D5-1F-30-01-00-00, image: acme-2.0,\n"
        "     devices: {model: acme-e1, count: 2}}\n"
    )
    cfg.write_text(text)
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert "acme-token" not in page and "token: &lt;redacted&gt;" in page
    assert "acme-token" not in (out / "run.json").read_text()
