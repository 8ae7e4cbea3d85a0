"""`smets1 distributed`: one config run as separate processes through a real MQTT broker.

It starts (or is given) a broker, then the DCO worker(s), the fleet shards and last the
scheduler, each as `python -m smets1.services_cli ROLE ...` with the same speed and
wall0, waits for the scheduler to finish the config's campaigns, stops the services, and
merges every process's status into one summary: the same outcome counts `smets1 run`
reports, plus the broker traffic.

`Mosquitto` runs a private broker in a folder of its own (tests use it too).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from smets1.errors import Smets1Error

#: Where mosquitto lives when it is not on PATH (Debian puts it in sbin).
MOSQUITTO_PATHS = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)
#: Simulated time starts this long after launch, so the scheduler submits on time.
STARTUP_ALLOWANCE_SECONDS = 3.0
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


class DistributedError(Smets1Error):
    """A process of a distributed run failed or did not finish in time."""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a live process has used (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state is field 3, utime 14 and stime 15 (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DistributedError(f"mosquitto exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise DistributedError(f"mosquitto did not listen on {host}:{port} within {timeout:g} s")


class Mosquitto:
    """A private mosquitto on 127.0.0.1, persistence on so a restart keeps sessions."""

    def __init__(
        self,
        workdir: Path,
        exe: str | None = None,
        port: int | None = None,
        *,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """`users`: name → password, and anonymous clients are refused; `tls`: (CA file,
        certificate, key) to listen with TLS instead of plain TCP."""
        found = exe or find_mosquitto()
        if found is None:
            raise DistributedError(
                "mosquitto not found on PATH or in /usr/sbin: install it "
                "(apt-get install mosquitto, brew install mosquitto) or give --broker URL"
            )
        self.exe = found
        self.workdir = workdir
        self.port = port or free_port()
        self.users = users or {}
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        #: CPU seconds the broker had used when last stopped (None: unknown).
        self.cpu_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _password_file(self) -> Path:
        path = self.workdir / "passwords"
        path.write_text("")
        tool = Path(self.exe).with_name("mosquitto_passwd")
        if not tool.exists():
            tool = Path(shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd")
        for user, password in self.users.items():
            subprocess.run([str(tool), "-b", str(path), user, password], check=True, timeout=10)
        return path

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        auth = (
            f"allow_anonymous false\npassword_file {self._password_file()}\n"
            if self.users
            else "allow_anonymous true\n"
        )
        tls = (
            f"cafile {self.tls[0]}\ncertfile {self.tls[1]}\nkeyfile {self.tls[2]}\n"
            if self.tls
            else ""
        )
        lines = [
            f"listener {self.port} 127.0.0.1",
            auth + tls + "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 60",
            # A slow subscriber must not lose QoS 1 frames to a short queue.
            "max_queued_messages 1000000",
            "max_inflight_messages 1000",
            "set_tcp_nodelay true",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to a user who cannot write here
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> None:
        conf = self._write_config()
        self._log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(conf)], stdout=self._log, stderr=subprocess.STDOUT
        )
        _wait_port("127.0.0.1", self.port, timeout, self.proc)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: mosquitto saves its sessions and queues first)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            self.cpu_seconds = cpu_seconds(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Service:
    """One role's process, its output in `<out>/<name>.log`."""

    def __init__(self, name: str, argv: list[str], out: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = out / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

    def crash_and_restart(self, down_seconds: float = 0.0) -> None:
        """Kill the process at once (SIGKILL: no goodbye, no status file), as a crash
        would, then start it again with the same arguments; its log goes on."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        time.sleep(down_seconds)
        self._log.write(b"--- killed and started again ---\n")
        self._log.flush()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)

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


def wait_healthy(services: list[tuple[Service, str]], timeout: float) -> None:
    """Until every service's /health answers 200; a service that exits is an error."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending:
        svc, url = pending[0]
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


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise DistributedError(f"cannot read {path}: {exc}") from exc


def run_distributed(
    config: Path,
    out: Path,
    *,
    broker: str | None = None,
    shards: int = 2,
    dco_workers: int = 1,
    speed: float = 1440.0,
    timeout_seconds: float = 600.0,
    log_level: str = "info",
    python: str = sys.executable,
    on_scheduler_started: Callable[[Service], None] | None = None,
    on_started: Callable[[dict[str, Service]], None] | None = None,
) -> dict[str, Any]:
    """Run `config` as separate processes; return (and write) the merged summary.

    `on_scheduler_started` is called once the campaigns are under way (tests restart the
    broker from it); `on_started` then, with every process by name (`dco-w0`, `fleet-1`,
    `scheduler`: tests crash one from it).
    """
    if shards < 1 or dco_workers < 1:
        raise DistributedError("--shards and --dco-workers must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.json"):
        stale.unlink()
    for state in [out / "scheduler-state", *out.glob("w[0-9]*")]:
        shutil.rmtree(state, ignore_errors=True)
    mosquitto: Mosquitto | None = None
    services: list[Service] = []
    try:
        if broker is None:
            mosquitto = Mosquitto(out / "mosquitto")
            mosquitto.start()
            broker = mosquitto.url
        wall0 = time.time() + STARTUP_ALLOWANCE_SECONDS
        role = [python, "-m", "smets1.services_cli"]
        clock = ["--speed", repr(speed), "--wall0", repr(wall0), "--log-level", log_level]
        net = ["--broker", broker, "--host", "127.0.0.1", "--out", str(out)]
        ready: list[tuple[Service, str]] = []
        dco_urls = []
        for w in range(dco_workers):
            port = free_port()
            svc = Service(
                f"dco-w{w}",
                [
                    *role,
                    *("dco", str(config), *clock, *net, "--shards", str(shards)),
                    *("--worker", f"w{w}", "--port", str(port), "--state-dir", str(out / f"w{w}")),
                ],
                out,
            )
            services.append(svc)
            dco_urls.append(f"http://127.0.0.1:{port}")
            ready.append((svc, f"{dco_urls[-1]}/health"))
        for s in range(shards):
            port = free_port()
            svc = Service(
                f"fleet-{s}",
                [
                    *role,
                    *("fleet", str(config), *clock, *net),
                    *("--shard", str(s), "--shards", str(shards), "--port", str(port)),
                ],
                out,
            )
            services.append(svc)
            ready.append((svc, f"http://127.0.0.1:{port}/health"))
        wait_healthy(ready, READY_TIMEOUT_SECONDS)
        started = time.monotonic()
        sched = Service(
            "scheduler",
            [*role, "scheduler", str(config), *clock, "--host", "127.0.0.1", "--out", str(out)]
            + [a for url in dco_urls for a in ("--dco", url)]
            + ["--state-dir", str(out / "scheduler-state"), "--exit-when-done"],
            out,
        )
        services.append(sched)
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
            raise DistributedError(f"the scheduler exited with code {rc}:\n{sched.tail()}")
    finally:
        for svc in reversed(services):
            svc.stop()
        if mosquitto is not None:
            mosquitto.stop()
    summary = _read(out / "summary.json")
    fleets = [_read(out / f"fleet-{s}.json") for s in range(shards)]
    dcos = [_read(out / f"dco-w{w}.json") for w in range(dco_workers)]
    states: Counter[str] = Counter()
    for f in fleets:
        states.update(f["device_states"])
    messages = sum(p["bus"]["messages_published"] for p in fleets + dcos)
    nbytes = sum(p["bus"]["bytes_published"] for p in fleets + dcos)
    # Frames travel several to an MQTT message when they queue up (smets1.mqtt).
    publishes = sum(p["bus"].get("mqtt_publishes", 0) for p in fleets + dcos)
    summary.update(
        {
            "shards": shards,
            "dco_workers": dco_workers,
            "speed": speed,
            "broker": broker if mosquitto is None else "private mosquitto",
            "blocks_delivered": sum(f["fleet"]["blocks_received"] for f in fleets),
            "bytes_delivered": sum(f["fleet"]["block_bytes_received"] for f in fleets),
            "blocks_sent": sum(d["dco"]["blocks_sent"] for d in dcos),
            "bytes_sent": sum(d["dco"]["bytes_sent"] for d in dcos),
            "device_states": dict(sorted(states.items())),
            "devices_per_shard": [f["devices"] for f in fleets],
            "bus": {
                "messages": messages,
                "bytes": nbytes,
                "seconds": round(campaign_seconds, 3),
                "messages_per_second": round(messages / campaign_seconds, 1),
                "mqtt_messages": publishes,
                "mqtt_messages_per_second": round(publishes / campaign_seconds, 1),
                "bytes_per_second": round(nbytes / campaign_seconds, 1),
                "republished": sum(p["bus"]["republished"] for p in fleets + dcos),
                "duplicates_dropped": sum(p["bus"]["duplicates_dropped"] for p in fleets + dcos),
                "connection_losses": sum(p["bus"]["connection_losses"] for p in fleets + dcos),
            },
            # Each process's own count (getrusage at exit), the broker's from /proc.
            "cpu_seconds": {
                "scheduler": summary.get("cpu_seconds"),
                **{f"dco-w{w}": d.get("cpu_seconds") for w, d in enumerate(dcos)},
                **{f"fleet-{s}": f.get("cpu_seconds") for s, f in enumerate(fleets)},
                "mosquitto": None if mosquitto is None else mosquitto.cpu_seconds,
            },
            "lag": {
                "scheduler": summary["clock"]["worst_lag_seconds"],
                **{f"dco-w{w}": d["clock"]["worst_lag_seconds"] for w, d in enumerate(dcos)},
                **{f"fleet-{s}": f["clock"]["worst_lag_seconds"] for s, f in enumerate(fleets)},
            },
            "lag_episodes": sum(p["clock"]["lag_episodes"] for p in [summary, *fleets, *dcos]),
            "worst_lag_seconds": max(
                [summary["clock"]["worst_lag_seconds"]]
                + [p["clock"]["worst_lag_seconds"] for p in fleets + dcos]
            ),
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
