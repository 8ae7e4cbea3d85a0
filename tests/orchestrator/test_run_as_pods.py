"""A run as the Kubernetes manifests start it (deploy/): each role a process of its own,
configured the way the pods are (the run's name, the shard count and the URLs from the
environment, `{i}` URLs), and the scheduler as the Job that ends the run: it exits when
the campaigns are done, after writing the merged summary and report.html and printing
both to its log, where `kubectl logs` finds them."""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.distributed import Service, wait_healthy
from orchestrator.mosquitto import Mosquitto, free_port
from orchestrator.roles import RoleOptions, StatusUnreadable, read_status, topic_namespace
from orchestrator.roles_cli import REPORT_LINE, SUMMARY_LINE, expand_urls
from orchestrator.status import DcoStatus, FleetStatus
from smets1.clock import ScaledClock
from smets1.config import load_config
from smets1.errors import ConfigError
from smets1.shared_clock import clock_topic

CONFIG = Path(__file__).parent / "files" / "tiny.yaml"
DEVICES = 24
TOKEN = "k8s-rehearsal-token-0123456789abcdef"


def test_a_url_with_i_stands_for_each_pod_of_a_statefulset() -> None:
    assert expand_urls(["http://dco-{i}.dco:8081"], 3, "--dco-workers") == [
        "http://dco-0.dco:8081",
        "http://dco-1.dco:8081",
        "http://dco-2.dco:8081",
    ]
    assert expand_urls(["http://a:1,http://b:2", "http://c:3"], None, "x") == [
        "http://a:1",
        "http://b:2",
        "http://c:3",
    ]
    with pytest.raises(ConfigError, match="--dco-workers"):
        expand_urls(["http://dco-{i}.dco:8081"], None, "--dco-workers")


def test_a_run_has_topics_of_its_own() -> None:
    """Two runs of one config on one broker share no topic: a new run's followers never
    join an old run's retained clock, nor hear its frames."""
    config = load_config(CONFIG)
    clock = ScaledClock(config.epoch_seconds, 1.0)
    first = RoleOptions(config, clock, run="r1")
    second = RoleOptions(config, clock, run="r2")
    assert clock_topic(first.fleet) == "smets1/tiny.r1/clock"
    assert clock_topic(first.fleet) != clock_topic(second.fleet)
    assert RoleOptions(config, clock).fleet == topic_namespace("tiny") == "tiny"


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["fleet", str(CONFIG), "--shard", "0", "--run", "a/b"], {}, "--run"),
        (["fleet", str(CONFIG), "--shard", "0"], {"SMETS1_RUN": "run 2"}, "SMETS1_RUN="),
        (["scheduler", str(CONFIG), "--dco", "http://a:1", "--fleet", "http://f:1"], {}, "--fleet"),
        (
            ["scheduler", str(CONFIG), "--dco", "http://dco-{i}.dco:1", "--exit-when-done"],
            {},
            "{i}",
        ),
        (["scheduler", str(CONFIG), "--dco", "http://a:1"], {"SMETS1_DCO_WORKERS": "0"}, "WORKERS"),
    ],
)
def test_a_bad_run_name_or_url_is_one_line_and_exit_2(
    argv: list[str],
    env: dict[str, str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SMETS1_DCO_TOKEN", TOKEN)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err_code = _exit_code(argv)
    err = capsys.readouterr().err
    assert err_code == 2 and says in err and "Traceback" not in err, err


def _exit_code(argv: list[str]) -> object:
    """main's exit status, or argparse's (it exits)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_a_status_is_read_from_a_worker_whose_broker_is_away(tmp_path: Path) -> None:
    """/health answers 503 while a role's broker is away, with its status all the same;
    a status that cannot be read at all is StatusUnreadable (exit 6: the Job tries again)."""
    status = _fleet_status()
    body = status.model_dump_json().encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503 if self.path == "/health" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            assert read_status(url, FleetStatus, wait_seconds=5.0) == status
            with pytest.raises(StatusUnreadable, match="/health"):
                read_status(url, DcoStatus, wait_seconds=0.0)  # not a DCO's status
        finally:
            server.shutdown()
            thread.join()
    with pytest.raises(StatusUnreadable, match="cannot read the status"):
        read_status(f"http://127.0.0.1:{free_port()}", FleetStatus, wait_seconds=0.0)


def _fleet_status() -> FleetStatus:
    from tests.orchestrator.test_distributed_summary import _fleet

    return _fleet(1, 1.5, 90 * 2**20, {"active": 3})


@pytest.mark.mqtt
def test_the_scheduler_job_ends_the_run_with_the_merged_summary_in_its_log(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Each role started as its pod starts it, from the environment (the run's name, the
    shard count, `{i}` URLs for the DCO workers); the scheduler exits 0 once the
    campaigns are done, and its output carries the merged summary and the report."""
    env = {
        **os.environ,
        "SMETS1_BROKER": broker.url,
        "SMETS1_RUN": "rehearsal-1",
        "SMETS1_SHARDS": "2",
        "SMETS1_DCO_TOKEN": TOKEN,
        "SMETS1_SPEED": "50",
    }
    role = [sys.executable, "-m", "orchestrator.cli"]
    # One port, a loopback address per pod (127.0.0.10, 127.0.0.11, ...): the URLs with
    # {i} that the manifests give (http://fleet-{i}.fleet:8080) work here as they are.
    dco_port, fleet_port = free_port(), free_port()
    services: list[Service] = []
    try:
        services.append(
            Service(
                "dco-0",
                [
                    *role,
                    "dco",
                    str(CONFIG),
                    "--port",
                    str(dco_port),
                    "--host",
                    "127.0.0.10",
                    "--state-dir",
                    str(tmp_path / "dco-state"),
                ],
                tmp_path,
                {**env, "SMETS1_DCO_WORKER": "dco-0"},
            )
        )
        for shard in range(2):
            services.append(
                Service(
                    f"fleet-{shard}",
                    [
                        *role,
                        "fleet",
                        str(CONFIG),
                        "--port",
                        str(fleet_port),
                        "--host",
                        f"127.0.0.1{shard}",
                        "--state-dir",
                        str(tmp_path / f"fleet-{shard}-state"),
                    ],
                    tmp_path,
                    {**env, "SMETS1_SHARD": str(shard)},
                )
            )
        sched = Service(
            "scheduler",
            [
                *role,
                "scheduler",
                str(CONFIG),
                "--port",
                str(free_port()),
                "--exit-when-done",
                "--state-dir",
                str(tmp_path / "sched-state"),
                "--out",
                str(tmp_path / "out"),
            ],
            tmp_path,
            {
                **env,
                "SMETS1_DCO_URLS": f"http://127.0.0.1{{i}}:{dco_port}",
                "SMETS1_DCO_WORKERS": "1",
                "SMETS1_FLEET_URLS": f"http://127.0.0.1{{i}}:{fleet_port}",
            },
        )
        services.append(sched)
        ready = [(services[0], f"http://127.0.0.10:{dco_port}/health")]
        ready += [(services[1 + s], f"http://127.0.0.1{s}:{fleet_port}/health") for s in (0, 1)]
        wait_healthy(ready, 30.0, leader=sched)
        rc = sched.proc.wait(90.0)
    finally:
        for svc in reversed(services):
            svc.stop()
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    # 0 for a valid run, 4 for one that ran late (this machine's load decides which).
    assert rc == (0 if summary["verdict"]["status"] == "valid" else 4), sched.tail(40)
    assert summary["images_activated"] == summary["requests"] == DEVICES, summary["failed"]
    assert summary["device_states"] == {"active": DEVICES}
    assert sum(summary["devices_per_shard"]) == DEVICES
    assert summary["run"] == "rehearsal-1"
    assert set(summary["roles"]) == {"scheduler", "dco-w0", "fleet-0", "fleet-1"}
    log = sched.log_path.read_text().splitlines()
    printed = [line.split(" ", 1)[1] for line in log if line.startswith(SUMMARY_LINE)]
    assert [json.loads(p) for p in printed] == [summary]
    packed = [line.split(" ", 1)[1] for line in log if line.startswith(REPORT_LINE)]
    assert len(packed) == 1
    html = gzip.decompress(base64.b64decode(packed[0]))
    assert html == (out / "report.html").read_bytes() and b"fleet-1" in html
    # The scheduler's store is in its own state folder, not beside the results: the
    # report still finds it and draws the charts over time.
    assert b"store was not found" not in html
    assert any("24/24 activated" in line for line in log)
    # The run's topics are its own (smets1/tiny.rehearsal-1/...).
    assert "fleet tiny.rehearsal-1" in services[0].log_path.read_text()
