"""`smets1 run --metrics-port`: the roles' metrics, scraped while the run goes on and
parsed with prometheus-client's own parser."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from orchestrator.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
#: mp230.yaml: four Users, 2,800 devices, about 15 s of wall time here.
CONFIG = ROOT / "fleet_configs" / "mp230.yaml"


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


def _answered(page: str) -> bool:
    counts = {
        s.name: s.value
        for f in text_string_to_metric_families(page)
        for s in f.samples
        if s.name.endswith("_count")
    }
    return (
        counts.get("smets1_scheduler_release_to_answer_simulated_seconds_count", 0) > 0
        and counts.get("smets1_dco_transfer_simulated_seconds_count", 0) > 0
    )


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    (match,) = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    return match


def test_run_serves_every_roles_metrics_while_it_runs(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "orchestrator.cli", "run", str(CONFIG), "--quiet",
            "--out", str(tmp_path / "out"), "--metrics-port", str(port)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text = None
    try:
        # Scrape until some transfer is done and its request answered (one scrape reads
        # the DCO and then the scheduler while the run goes on: the first may lag).
        while proc.poll() is None:
            page = _scrape(port)
            if page and _answered(page):
                text = page
                break
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert text is not None, "the run ended before /metrics showed an answered request"

    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = [s for f in families.values() for s in f.samples]
    for f in families.values():
        assert f.documentation, f"{f.name} has no HELP"
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name
        for s in f.samples:
            assert not any("device" in k for k in s.labels), (f.name, s.labels)
    # The process collector: CPU and memory.
    assert _value(samples, "process_cpu_seconds_total") > 0
    assert _value(samples, "process_resident_memory_bytes") > 0
    # Release to answer per request, with the five-day TRT a bucket edge.
    answer = families["smets1_scheduler_release_to_answer_simulated_seconds"]
    assert answer.type == "histogram"
    assert _value(samples, "smets1_scheduler_release_to_answer_simulated_seconds_bucket",
                  le="432000.0") > 0  # fmt: skip
    # DCO transfer times, a histogram too.
    assert families["smets1_dco_transfer_simulated_seconds"].type == "histogram"
    assert _value(samples, "smets1_dco_transfer_simulated_seconds_count", role="run") > 0
    # Capacity used and left today, and per User against the 500.
    used = _value(samples, "smets1_scheduler_large_images_released_today")
    left = _value(samples, "smets1_scheduler_large_image_capacity_left_today")
    assert used + left == 12_000  # the day of the scrape: used may still be 0
    assert _value(samples, "smets1_scheduler_user_daily_limit") == 500
    per_user = [s for s in samples if s.name == "smets1_scheduler_user_large_images_released_today"]
    assert {s.labels["user"] for s in per_user} >= {"acme-supplier", "zeta-supplier"}
    assert sum(s.value for s in per_user) == used
    # Requests and devices by state; the clock.
    assert sum(s.value for s in samples if s.name == "smets1_scheduler_requests") > 0
    assert sum(s.value for s in samples if s.name == "smets1_fleet_devices_by_state") == 2_800
    assert _value(samples, "smets1_clock_simulated_seconds") > 0
    assert _value(samples, "smets1_clock_lag_simulated_seconds") == 0
    # Base units: bytes counted as bytes.
    assert _value(samples, "smets1_dco_sent_bytes_total") > 0


def test_a_metrics_port_in_use_is_one_line_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [sys.executable, "-m", "orchestrator.cli", "run",
                str(ROOT / "tests" / "orchestrator" / "files" / "tiny.yaml"), "--quiet",
                "--out", str(tmp_path / "out"), "--metrics-port", str(port)]  # fmt: skip
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--metrics-port {port}" in lines[0], done.stderr
