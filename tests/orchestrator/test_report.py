from __future__ import annotations

from pathlib import Path

from orchestrator.report import hourly_counts, render, write_report


def test_hourly_counts() -> None:
    assert hourly_counts([0, 10, 3599, 3600, 7300], start=0) == [3, 1, 1]
    assert hourly_counts([], start=0) == []


def test_report_is_self_contained_html_with_charts(tmp_path: Path) -> None:
    summary = {
        "config": "demo<&>",
        "devices": 3,
        "images_activated": 2,
        "failed": {"hash_mismatch": 1},
        "large_images_released_per_day": {"2025-03-03": 3},
        "large_images_per_day": 12_000,
        "device_states": {"active": 2, "verify_failed": 1},
    }
    page = render(summary, [1, 1])
    assert page.startswith("<!doctype html>")
    assert "demo&lt;&amp;&gt;" in page and "demo<&>" not in page
    assert page.count("<svg") == 4
    assert "capacity 12,000" in page
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org", "")
    write_report(tmp_path / "r.html", summary)
    written = (tmp_path / "r.html").read_text()
    assert written.count("<svg") == 3 and "nothing to show" in written  # no timeline given
