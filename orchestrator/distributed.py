"""`smets1 distributed`: one config run as separate processes through a real MQTT broker.

It starts (or is given) a broker, then the DCO worker(s), the fleet shards and the
scheduler, each as `python -m orchestrator.cli ROLE ...` (`smets1 ROLE`). The scheduler
leads the clock and announces it on the broker; the others wait for it before they take
work (smets1.shared_clock), so nothing wires a start time by hand. It waits for the
scheduler to finish the config's campaigns, stops the services, and
merges every process's status document (orchestrator.status) into one summary: the same
outcome counts `smets1 run` reports, plus the broker traffic, each process's CPU and lag.
The private broker is orchestrator.mosquitto's.

The DCO and the scheduler share the bearer token of the DCO's HTTP API through
SMETS1_DCO_TOKEN: the launcher's own, if set, else one made for the run (the config's
`dco.token` is then not used: a config may be shared, a run's token is not).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from orchestrator.autospeed import AUTO
from orchestrator.errors import DistributedError
from orchestrator.gate import Thresholds, gate, thresholds_of
from orchestrator.mosquitto import STOP_TIMEOUT_SECONDS, Mosquitto, free_port
from orchestrator.report import write_report
from orchestrator.run_info import run_info, write_run_info
from orchestrator.serving import PARENT_PID_ENV
from orchestrator.status import DcoStatus, FleetStatus, RoleUsage, SchedulerStatus
from orchestrator.verdict import lateness_document, verdict
from smets1.config import load_config
from smets1.dco_http import TOKEN_ENV
from smets1.lateness import lateness_threshold_seconds

_S = TypeVar("_S", bound=BaseModel)

READY_TIMEOUT_SECONDS = 30.0
#: A free port found by `free_port` may be taken by another program before the role
#: binds it: the role is started again on another port this many times.
PORT_RETRIES = 3


class Service:
    """One role's process, its output in `<out>/<name>.log`."""

    def __init__(
        self, name: str, argv: list[str], out: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = out / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)

    def crash_and_restart(self, down_seconds: float = 0.0) -> None:
        """Kill the process at once (SIGKILL: no goodbye, no status file), as a crash
        would, then start it again with the same arguments; its log goes on."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        time.sleep(down_seconds)
        self._log.write(b"--- killed and started again ---\n")
        self._log.flush()
        self.proc = self._start()

    @property
    def port(self) -> int:
        return int(self.argv[self.argv.index("--port") + 1])

    def port_was_taken(self) -> bool:
        return self.proc.poll() is not None and "Address already in use" in self.tail(40)

    def restart_on(self, port: int) -> None:
        """Start the exited process again, listening on `port` instead."""
        self.argv[self.argv.index("--port") + 1] = str(port)
        self._log.write(b"--- its port was taken: started again on another ---\n")
        self._log.flush()
        self.proc = self._start()

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def wait_healthy(
    services: list[tuple[Service, str]], timeout: float, leader: Service | None = None
) -> None:
    """Until every service's /health answers 200; a service that exits is an error, and
    so is a `leader` (the scheduler) that fails meanwhile. A fleet shard whose port
    another program took first starts again on another (no one else needs its port; a
    DCO worker's is in the scheduler's arguments already)."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    retries = dict.fromkeys((svc.name for svc, _ in services), PORT_RETRIES)
    while pending:
        if leader is not None and leader.proc.poll() not in (None, 0, 1):
            raise DistributedError(
                f"{leader.name} exited with code {leader.proc.returncode}:\n{leader.tail()}"
            )
        svc, url = pending[0]
        movable = not svc.name.startswith("dco")
        if movable and svc.port_was_taken() and retries[svc.name] > 0:
            retries[svc.name] -= 1
            old = svc.port
            svc.restart_on(free_port())
            url = url.replace(f":{old}/", f":{svc.port}/")
            pending[0] = (svc, url)
            continue
        if svc.proc.poll() is not None:
            raise DistributedError(
                f"{svc.name} exited with code {svc.proc.returncode}:\n{svc.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    pending.pop(0)
                    continue
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise DistributedError(f"{svc.name} not healthy within {timeout:g} s:\n{svc.tail()}")
        time.sleep(0.1)


def _read(path: Path, doc: type[_S]) -> _S:
    try:
        return doc.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise DistributedError(f"cannot read {path}: {exc}") from exc


def _interrupt(signum: int, frame: object) -> None:
    # Once: a second SIGTERM (`timeout` passes one on, say) must not cut the clean-up short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def clear_previous_run(out: Path) -> None:
    """Make `out` ready for a new run: no status, summary or report of the last run in
    it, none of its roles' state, and none of its private broker's persistence (that
    keeps the last run's retained clock: the roles would follow it at first, and every
    message they took as that clock's would seem hours late)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.json"), out / "report.html", out / "failed_devices.csv"]:
        stale.unlink(missing_ok=True)
    for state in [
        out / "scheduler-state",
        out / "mosquitto",
        *out.glob("w[0-9]*"),
        *out.glob("fleet-*-state"),
    ]:
        shutil.rmtree(state, ignore_errors=True)


def run_distributed(
    config: Path,
    out: Path,
    *,
    broker: str | None = None,
    shards: int = 2,
    dco_workers: int = 1,
    speed: float | str = AUTO,
    timeout_seconds: float = 600.0,
    log_level: str = "info",
    python: str = sys.executable,
    on_scheduler_started: Callable[[Service], None] | None = None,
    on_started: Callable[[dict[str, Service]], None] | None = None,
    on_finished: Callable[[dict[str, Service]], None] | None = None,
    thresholds: Thresholds | None = None,
) -> dict[str, Any]:
    """Run `config` as separate processes; return (and write) the merged summary.

    `on_scheduler_started` is called once the campaigns are under way (tests restart the
    broker from it); `on_started` then, with every process by name (`dco-w0`, `fleet-1`,
    `scheduler`: tests crash one from it); `on_finished` once the scheduler has exited,
    while the DCO and the fleet still serve (tests read every device through 11.2).
    """
    if shards < 1 or dco_workers < 1:
        raise DistributedError("--shards and --dco-workers must be at least 1")
    clear_previous_run(out)
    mosquitto: Mosquitto | None = None
    services: list[Service] = []
    # SIGTERM stops the run as Ctrl-C does: every role and the broker are stopped first.
    on_term = None
    if threading.current_thread() is threading.main_thread():
        on_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if broker is None:
            mosquitto = Mosquitto(out / "mosquitto")
            mosquitto.start()
            broker = mosquitto.url
        # Given to the DCO and the scheduler only: the fleet never calls the HTTP API.
        # Every role stops when this process is gone (orchestrator.serving.install_stop).
        parent = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
        with_token = {**parent, TOKEN_ENV: os.environ.get(TOKEN_ENV) or secrets.token_hex(32)}
        role = [python, "-m", "orchestrator.cli"]
        logs = ["--log-level", log_level]
        net = ["--broker", broker, "--host", "127.0.0.1", "--out", str(out)]
        ready: list[tuple[Service, str]] = []
        for w in range(dco_workers):
            port = free_port()
            svc = Service(
                f"dco-w{w}",
                [
                    *role,
                    *("dco", str(config), *logs, *net, "--shards", str(shards)),
                    *("--worker", f"w{w}", "--port", str(port), "--state-dir", str(out / f"w{w}")),
                ],
                out,
                with_token,
            )
            services.append(svc)
            ready.append((svc, f"http://127.0.0.1:{port}/health"))
        for s in range(shards):
            port = free_port()
            svc = Service(
                f"fleet-{s}",
                [
                    *role,
                    *("fleet", str(config), *logs, *net),
                    *("--shard", str(s), "--shards", str(shards), "--port", str(port)),
                    *("--state-dir", str(out / f"fleet-{s}-state")),
                ],
                out,
                parent,
            )
            services.append(svc)
            ready.append((svc, f"http://127.0.0.1:{port}/health"))
        dco_urls = [
            f"http://127.0.0.1:{svc.port}" for svc in services if svc.name.startswith("dco")
        ]
        # The services wait for the scheduler's clock before they serve: start it now.
        started = time.monotonic()
        sched = Service(
            "scheduler",
            [*role, "scheduler", str(config), *logs, *net, "--speed", str(speed)]
            + ["--port", str(free_port())]
            + [a for url in dco_urls for a in ("--dco", url)]
            + ["--state-dir", str(out / "scheduler-state"), "--exit-when-done"],
            out,
            with_token,
        )
        services.append(sched)
        wait_healthy(ready, READY_TIMEOUT_SECONDS, leader=sched)
        if on_scheduler_started is not None:
            on_scheduler_started(sched)
        if on_started is not None:
            on_started({svc.name: svc for svc in services})
        try:
            rc = sched.proc.wait(max(1.0, timeout_seconds - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            raise DistributedError(
                f"the campaigns did not finish within {timeout_seconds:g} s:\n{sched.tail()}"
            ) from None
        campaign_seconds = time.monotonic() - started
        if rc not in (0, 1):
            # 3: it gave up on an unreachable DCO; its last line says which and why.
            raise DistributedError(f"the scheduler exited with code {rc}:\n{sched.tail()}")
        if on_finished is not None:
            on_finished({svc.name: svc for svc in services})
    finally:
        for svc in reversed(services):
            svc.stop()
        if mosquitto is not None:
            mosquitto.stop()
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
    status = _read(out / "scheduler.json", SchedulerStatus)
    fleets = [_read(out / f"fleet-{s}.json", FleetStatus) for s in range(shards)]
    dcos = [_read(out / f"dco-w{w}.json", DcoStatus) for w in range(dco_workers)]
    fleet_config = load_config(config)
    threshold = lateness_threshold_seconds(fleet_config)
    broker_usage = None
    if mosquitto is not None:
        broker_usage = RoleUsage(
            role="broker",
            cpu_seconds=mosquitto.cpu_seconds,
            peak_rss_bytes=mosquitto.peak_rss_bytes,
        )
    summary = merge(
        status,
        fleets,
        dcos,
        campaign_seconds,
        threshold,
        broker_usage,
        thresholds or thresholds_of(fleet_config),
    )
    summary.update(
        shards=shards,
        dco_workers=dco_workers,
        speed=speed,
        speed_control=None if status.speed_control is None else status.speed_control.model_dump(),
        broker=broker if mosquitto is None else "private mosquitto",
    )
    summary["cpu_seconds"]["mosquitto"] = None if mosquitto is None else mosquitto.cpu_seconds
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_run_info(out, run_info(fleet_config, config, mode="distributed"))
    write_report(out)
    return summary


def merged_pipes(pipes: list[dict[str, float] | None]) -> dict[str, float] | None:
    """The DCO workers' outbound capacities together (each worker has its own): rates,
    frames and bytes added up, the mean wait weighted by frames; None when unlimited."""
    have = [p for p in pipes if p is not None]
    if not have:
        return None
    frames = sum(p["frames"] for p in have)
    waited = sum(p["mean_wait_seconds"] * p["frames"] for p in have)
    return {
        "bytes_per_second": sum(p["bytes_per_second"] for p in have),
        "frames": frames,
        "bytes": sum(p["bytes"] for p in have),
        "mean_wait_seconds": round(waited / frames, 3) if frames else 0.0,
    }


def merge(
    scheduler: SchedulerStatus,
    fleets: list[FleetStatus],
    dcos: list[DcoStatus],
    campaign_seconds: float,
    threshold_seconds: float,
    broker: RoleUsage | None = None,
    thresholds: Thresholds | None = None,
) -> dict[str, Any]:
    """One summary from every process's status: the scheduler's campaign summary with
    what the fleet shards and DCO workers counted (every key `smets1 run`'s summary has,
    each added up over the processes), the broker traffic, CPU and lag, the end-to-end
    lateness of every process and the verdict it leads to (orchestrator.verdict), and
    `roles`: per process (and the broker, if the launcher started it: `broker`) its CPU
    seconds, peak RSS, lag and lateness; `gate`, the run against `thresholds`
    (orchestrator.gate; none: unchecked)."""
    states: Counter[str] = Counter()
    transitions: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for f in fleets:
        states.update(f.device_states)
        transitions.update(f.device_transitions)
        faults.update(f.fleet.faults)
        dropped.update(f.fleet.frames_dropped)
    processes: list[FleetStatus | DcoStatus] = [*fleets, *dcos]
    buses = [p.bus.counters for p in processes]
    messages = sum(b.messages_published for b in buses)
    nbytes = sum(b.bytes_published for b in buses)
    # Frames travel several to an MQTT message when they queue up (smets1.mqtt).
    publishes = sum(b.mqtt_publishes for b in buses)
    lag = {
        "scheduler": scheduler.clock.worst_lag_seconds,
        **{f"dco-w{w}": d.clock.worst_lag_seconds for w, d in enumerate(dcos)},
        **{f"fleet-{s}": f.clock.worst_lag_seconds for s, f in enumerate(fleets)},
    }
    lateness = lateness_document(
        {
            "scheduler": scheduler.lateness,
            **{f"dco-w{w}": d.lateness for w, d in enumerate(dcos)},
            **{f"fleet-{s}": f.lateness for s, f in enumerate(fleets)},
        },
        threshold_seconds,
    )
    roles = {
        "scheduler": RoleUsage.of(scheduler),
        **{f"dco-w{w}": RoleUsage.of(d) for w, d in enumerate(dcos)},
        **{f"fleet-{s}": RoleUsage.of(f) for s, f in enumerate(fleets)},
    }
    if broker is not None:
        roles["mosquitto"] = broker
    campaign = scheduler.summary_document()
    return {
        **campaign,
        "blocks_delivered": sum(f.fleet.blocks_received for f in fleets),
        "bytes_delivered": sum(f.fleet.block_bytes_received for f in fleets),
        "blocks_sent": sum(d.dco.blocks_sent for d in dcos),
        "bytes_sent": sum(d.dco.bytes_sent for d in dcos),
        "transfer_rounds": sum(d.dco.rounds for d in dcos),
        "device_states": dict(sorted(states.items())),
        "device_transitions": dict(sorted(transitions.items())),
        "faults": dict(sorted(faults.items())),
        "frames_dropped": dict(sorted(dropped.items())),
        "dco_pipe": merged_pipes([d.pipe for d in dcos]),
        "dco_retries": sum(d.dco.retries for d in dcos),
        "dco_resumes": sum(d.dco.resumes for d in dcos),
        # Answers that came after their request was closed (late or repeated).
        "dco_stray_frames": sum(d.dco.stray_frames for d in dcos),
        "devices_per_shard": [f.devices for f in fleets],
        "bus": {
            "messages": messages,
            "bytes": nbytes,
            "seconds": round(campaign_seconds, 3),
            "messages_per_second": round(messages / campaign_seconds, 1),
            "mqtt_messages": publishes,
            "mqtt_messages_per_second": round(publishes / campaign_seconds, 1),
            "bytes_per_second": round(nbytes / campaign_seconds, 1),
            "republished": sum(b.republished for b in buses),
            "duplicates_dropped": sum(b.duplicates_dropped for b in buses),
            "connection_losses": sum(b.connection_losses for b in buses),
        },
        # Each process's own count (getrusage at exit); the launcher adds the broker's.
        "cpu_seconds": {
            "scheduler": scheduler.cpu_seconds,
            **{f"dco-w{w}": d.cpu_seconds for w, d in enumerate(dcos)},
            **{f"fleet-{s}": f.cpu_seconds for s, f in enumerate(fleets)},
        },
        "lag": lag,
        "lag_episodes": scheduler.clock.lag_episodes + sum(p.clock.lag_episodes for p in processes),
        "worst_lag_seconds": max(lag.values()),
        "lateness": lateness,
        "verdict": verdict(lateness, campaign["failed"], campaign["trt_missed"]),
        # The largest of any one process, as `smets1 run`'s is its one process's.
        "peak_rss_bytes": max(u.peak_rss_bytes or 0 for u in roles.values()),
        "roles": {name: u.model_dump() for name, u in roles.items()},
        "gate": gate(campaign, thresholds or Thresholds()),
    }
