"""A private Mosquitto broker in a folder of its own: `smets1 distributed` starts one when
no --broker is given, and the tests that need a broker start one per test on a free port,
never touching a broker that may already run on 1883.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from orchestrator.errors import DistributedError

#: Where mosquitto lives when it is not on PATH (Debian puts it in sbin).
MOSQUITTO_PATHS = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)
#: How long a process gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT_SECONDS = 10.0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a live process has used (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state is field 3, utime 14 and stime 15 (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid: int | str) -> int | None:
    """The most resident memory a live process (`pid`, or "self") has held since it was
    started (Linux /proc: VmHWM), else None."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmHWM:"):
            # "VmHWM:     5120 kB"
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: prctl option: the signal a child gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies, however
    it dies (Linux's PR_SET_PDEATHSIG), so no private broker outlives its run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
        #: Its peak resident memory when last stopped, bytes (None: unknown).
        self.peak_rss_bytes: int | None = None

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
            [self.exe, "-c", str(conf)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        _wait_port("127.0.0.1", self.port, timeout, self.proc)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: mosquitto saves its sessions and queues first)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            self.cpu_seconds = cpu_seconds(proc.pid)
            self.peak_rss_bytes = peak_rss_bytes(proc.pid)
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
