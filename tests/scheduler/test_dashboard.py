"""The live dashboard, opened in headless Chromium against a running scheduler: it shows
the scheduler's real figures, and new ones as the campaign goes on.

Chromium is Debian's `chromium`; the set-up installs it with apt-get when it is missing
and apt works (as root), and skips with the reason otherwise."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from smets1.eui64 import format_eui64
from tests.scheduler.fakes import devices
from tests.scheduler.served import Served

DEVICES = 40
#: Simulated seconds a wall second: the campaign (about 900 simulated s) in about five
#: wall seconds, and the day it runs on (432 wall s) still today when the page is read.
SPEED = 200
#: Two of them fail at the device (FakeDco: bad signature).
FAILING = frozenset(devices(2, first=7))
#: How long Chromium lets the page's script run (virtual time: no wall-clock wait).
SCRIPT_BUDGET_MS = "10000"


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    exe = _find_chromium()
    if exe is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=False, timeout=900,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        exe = _find_chromium()
    if exe is None:
        pytest.skip("no chromium, and it could not be installed with apt-get (needs root "
                    "and a working apt); install Debian's `chromium` to run this test")  # fmt: skip
    return exe


def _dom(chromium: str, url: str, home: Path) -> str:
    """The page's DOM once its script has run (headless, profile and caches in `home`)."""
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_CACHE_HOME": str(home / "cache")}  # fmt: skip
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={home / 'profile'}", f"--crash-dumps-dir={home / 'crashes'}",
            f"--virtual-time-budget={SCRIPT_BUDGET_MS}", "--dump-dom", url]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _text_of(dom: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:div|svg)>', dom, re.S)
    assert m, f"no #{element_id} in the page"
    return re.sub(r"<[^>]+>", " ", m.group(1))


def test_dashboard_in_chromium_shows_the_running_campaign(chromium: str, tmp_path: Path) -> None:
    with Served(DEVICES, speed=SPEED, run_releases=True, fail_devices=FAILING) as served:
        page = requests.get(served.url + "/dashboard", timeout=30)
        assert page.ok and "<script" in page.text
        # Nothing from elsewhere: no src or href, no URL but the SVG namespace.
        assert not re.search(r"\b(?:src|href)=", page.text)
        assert set(re.findall(r"https?://[^\s\"']+", page.text)) == {"http://www.w3.org/2000/svg"}

        before = _dom(chromium, served.url + "/dashboard", tmp_path / "chrome")
        assert _text_of(before, "requests-total").strip() == "0"
        assert "capacity" in _text_of(before, "days-chart")

        body = {"firmware_hash": served.firmware_hash, "campaign": "c1",
                "device_ids": [format_eui64(d) for d in devices(DEVICES)]}  # fmt: skip
        r = requests.post(served.url + "/v1/activations", json=body, headers=served.auth,
                          timeout=30)  # fmt: skip
        assert r.status_code == 202, r.text
        served.wait_idle()
        figures = requests.get(served.url + "/dashboard/data", timeout=30).json()
        metrics = requests.get(served.url + "/metrics", timeout=30).text

        after = _dom(chromium, served.url + "/dashboard", tmp_path / "chrome")

    # The figures the page polls are the scheduler's own, as /metrics has them.
    assert figures["requests"]["done"] == DEVICES - 2 and figures["requests"]["failed"] == 2
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(metrics) for s in f.samples}  # fmt: skip
    assert samples["smets1_scheduler_trt_total", (("outcome", "met"),)] == figures["trt_met"]

    # ... and the page, drawn by its script in Chromium, shows them.
    assert _text_of(after, "requests-total").strip() == f"{DEVICES}"
    requests_box = _text_of(after, "requests")
    assert re.search(r"done\s+38\b", requests_box) and re.search(r"failed\s+2\b", requests_box)
    assert re.search(r"met\s+40\b", _text_of(after, "trt"))  # failures answered in time too
    assert re.search(r"bad signature\s+2\b", _text_of(after, "failures"))
    assert _text_of(after, "in-flight").strip() == "0"
    days = _text_of(after, "days-chart")
    assert f"{DEVICES}" in days and "capacity 12,000 (above this scale)" in days
    users = _text_of(after, "users-chart")
    assert "500 a User a day" in users and re.search(rf"\b{DEVICES}\b", users)
    answers = _text_of(after, "answers-chart")
    assert "release to answer" in answers and re.search(rf"\b{DEVICES}\b", answers)
    assert "speed" in _text_of(after, "clock") and "200" in _text_of(after, "clock")
