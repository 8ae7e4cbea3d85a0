"""`smets1 dco | fleet | scheduler | distributed`: the roles as services of their own.

    smets1 dco CONFIG --shards N [--worker ID] [--port 8081] [--state-dir DIR]
    smets1 fleet CONFIG --shard I --shards N [--port P] [--state-dir DIR]
    smets1 scheduler CONFIG --dco URL [--dco URL ...] [--exit-when-done] [--out DIR]
                     [--fleet URL ...]   (with --exit-when-done: the run's merged summary)
    smets1 distributed CONFIG [--broker URL] [--shards N] [--dco-workers K] [--out DIR]
    smets1 clock CONFIG [--speed N]

Every role takes `--broker mqtt://user:pass@host:port` (or mqtts://). The scheduler leads
the run's clock and announces it on the broker (smets1.shared_clock); the DCO and the
fleet follow it, waiting up to `--clock-wait` seconds for it. The scheduler's `--speed`
(and `distributed`'s) is `auto` by default: the scheduler starts slow and slows or speeds
the clock to what every role keeps up with (orchestrator.autospeed); a number (simulated
seconds per wall second) is a fixed speed for a new clock. `--wall0`
(the Unix time at which simulated time is the config's epoch) overrides the start of a
new clock; `smets1 clock --speed N` changes the speed while a run goes on. Each option
has an environment default, for Kubernetes: SMETS1_BROKER, SMETS1_SPEED, SMETS1_WALL0,
SMETS1_CLOCK_WAIT, SMETS1_SHARD (else the trailing ordinal of the host name, as a
StatefulSet pod has), SMETS1_SHARDS, SMETS1_DCO_WORKER, SMETS1_DCO_URLS (comma
separated; a URL with {i} stands for each of SMETS1_DCO_WORKERS), SMETS1_FLEET_URLS (the
same, for each of SMETS1_SHARDS), SMETS1_RUN (the run's name: topics, clock and state of
its own), SMETS1_LOG_LEVEL, SMETS1_STATE_DIR (the fleet shard's flash).

A bad flag is argparse's error naming the flag; a bad environment value is one line
naming the variable; both exit 2. Flags and variables are checked before the config is
read, and the config's limits (orchestrator.preflight) before anything is built.

`dco` and `scheduler` share the bearer token of the DCO's HTTP API: `dco.token` in the
config, or SMETS1_DCO_TOKEN in the environment (which wins: a Kubernetes Secret). Never
an option, so that it does not show in a process list.

Exit status: 0 done, 1 requests left unfinished (`--exit-when-done`), 2 a usage or config
error, 3 the scheduler gave up on a DCO it could not reach (`--dco-give-up`), 4 (from
`distributed`) the run finished but is invalid: some process ran later than the config's
lateness threshold allows (orchestrator.verdict), so its results are not to be trusted,
5 (from `distributed`) the run is valid but passed a threshold: `--max-failed`,
`--max-trt-missed` or the config's `max_failed`, `max_trt_missed` (orchestrator.gate),
6 (`scheduler --fleet`) the campaigns are done but a fleet shard's or DCO worker's status
could not be read (a new start resumes the finished run and reads them again).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from orchestrator.autospeed import AUTO, SpeedController
from orchestrator.gate import EXIT_THRESHOLD, add_threshold_flags, gate_line, thresholds_of
from orchestrator.preflight import check_images_fit_memory, preflight
from smets1.broker_url import parse_broker_url
from smets1.clock import ScaledClock
from smets1.config import FleetConfig, load_config
from smets1.dco_http import TOKEN_ENV, check_token
from smets1.errors import ConfigError, Smets1Error
from smets1.heap import collector_for_a_run
from smets1.lateness import lateness_threshold_seconds
from smets1.limits import MAX_SHARDS
from smets1.shared_clock import FOLLOW_WAIT_SECONDS, check_speed

if TYPE_CHECKING:
    from orchestrator.status import SchedulerStatus

EXIT_USAGE = 2
EXIT_DCO_GAVE_UP = 3
EXIT_INVALID_RUN = 4
EXIT_STATUS_UNREADABLE = 6
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
#: A simulated day per wall minute: where a fixed speed is needed and none is given.
DEFAULT_FIXED_SPEED = 1440.0
#: The scheduler's and `smets1 distributed`'s default: what every role keeps up with.
DEFAULT_SPEED = AUTO
DEFAULT_DCO_PORT = 8081


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _fail(message: str) -> int:
    """One line a problem on stderr, exit status 2."""
    for line in message.splitlines():
        print(f"smets1: error: {line}", file=sys.stderr)
    return EXIT_USAGE


# -- flag types: each raises ArgumentTypeError saying what was expected -----------------------


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_number(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _unix_time(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a Unix time in seconds, got {text!r}")
    return value


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low}-{high}, got {value}")
        return value

    parse.__name__ = "number"
    return parse


_port = _whole(1, 65_535)
_shards = _whole(1, MAX_SHARDS)
_shard = _whole(0, MAX_SHARDS - 1)


def _broker(text: str) -> str:
    try:
        parse_broker_url(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _worker(text: str) -> str:
    # It goes into MQTT topics and file names: no '/', '+', '#', spaces or dots alone.
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}", text):
        raise argparse.ArgumentTypeError(
            f"expected 1-64 letters, digits, '_', '-' or '.', got {text!r}"
        )
    return text


def _http_urls(text: str) -> str:
    """Base URLs, comma separated: http://host[:port]."""
    for url in (u for u in text.split(",") if u):
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018  (raises ValueError for a bad port)
        except ValueError:
            ok = False
        if not ok:
            raise argparse.ArgumentTypeError(f"expected http://host:port, got {url!r}")
    return text


_RUN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


def _run_name(text: str) -> str:
    # It goes into MQTT topics, client ids and folder names.
    if not _RUN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected 1-40 letters, digits, '_' or '-' (a letter or digit first), got {text!r}"
        )
    return text


def expand_urls(given: list[str], count: int | None, names: str) -> list[str]:
    """Base URLs from flags or a variable, each comma separated; a URL with `{i}` in it
    stands for `count` URLs, `{i}` = 0 .. count-1 (a StatefulSet's pods: dco-{i}.dco)."""
    urls: list[str] = []
    for url in (u for arg in given for u in arg.split(",") if u):
        if "{i}" not in url:
            urls.append(url)
        elif count is None:
            raise ConfigError(f"{url}: {{i}} stands for each of {names}, which is not given")
        else:
            urls.extend(url.replace("{i}", str(i)) for i in range(count))
    return urls


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return text.lower()


@dataclass(frozen=True)
class _FromEnv:
    """A default taken from an environment variable. Kept raw while argparse runs and
    parsed after, so a bad value is reported with the variable's name, not a flag's."""

    name: str
    raw: str
    parse: Callable[[str], Any]

    def value(self) -> Any:
        try:
            return self.parse(self.raw)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{self.name}={self.raw!r}: {exc}") from None


def _env(name: str, parse: Callable[[str], Any], fallback: Any = None) -> Any:
    """The default of a flag: `name` from the environment if set and not empty."""
    raw = os.environ.get(name)
    return _FromEnv(name, raw, parse) if raw else fallback


def _resolve_env(args: argparse.Namespace) -> None:
    """Parse every default that came from the environment; ConfigError naming the variable."""
    for key, value in vars(args).items():
        if isinstance(value, _FromEnv):
            setattr(args, key, value.value())


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _clock(args: argparse.Namespace, config: FleetConfig) -> ScaledClock:
    """The process's clock: the leader's own until it announces or a follower joins.
    With `--speed auto` a new clock starts at the controller's conservative guess."""
    speed = getattr(args, "speed", DEFAULT_FIXED_SPEED)
    if speed == AUTO:
        speed = SpeedController(lateness_threshold_seconds(config)).start_speed()
    return ScaledClock(config.epoch_seconds, speed, getattr(args, "wall0", None))


def _speed_or_auto(text: str) -> float | str:
    """`auto` (the leader picks, orchestrator.autospeed) or a fixed speed."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    return _speed(text)


def _speed(text: str) -> float:
    value = _positive_number(text)
    problem = check_speed(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def shard_from_host(hostname: str | None = None) -> int | None:
    """The ordinal a StatefulSet gives its pods: `fleet-3` → 3."""
    m = re.search(r"-(\d+)$", hostname or socket.gethostname())
    return int(m.group(1)) if m else None


def _dco_token(config: FleetConfig) -> str:
    """The DCO's bearer token: SMETS1_DCO_TOKEN, else the config's dco.token."""
    env = os.environ.get(TOKEN_ENV)
    if env:
        return check_token(env, TOKEN_ENV)
    return check_token(config.dco.token, "dco.token")


def _common(p: argparse.ArgumentParser, leader: bool = False) -> None:
    p.add_argument("config", help="YAML fleet config (the same file for every role)")
    p.add_argument(
        "--broker",
        type=_broker,
        default=_env("SMETS1_BROKER", _broker, DEFAULT_BROKER),
        help=f"MQTT broker URL, mqtt:// or mqtts:// (default {DEFAULT_BROKER})",
    )
    if leader:
        p.add_argument(
            "--speed",
            type=_speed_or_auto,
            default=_env("SMETS1_SPEED", _speed_or_auto, DEFAULT_SPEED),
            help="simulated seconds per wall second, or 'auto' (the default): start "
            "conservatively, slow down when any role falls behind, speed up while all keep "
            "up (up to 1440, a day a minute); a number keeps that speed; a restarted "
            "scheduler goes on from its run's clock",
        )
        p.add_argument(
            "--wall0",
            type=_unix_time,
            default=_env("SMETS1_WALL0", _unix_time),
            help="start a new clock whose simulated time is the config's epoch at this "
            "Unix time (default: now, or the run's clock when the state folder has one)",
        )
    else:
        p.add_argument(
            "--clock-wait",
            type=_positive_number,
            default=_env("SMETS1_CLOCK_WAIT", _positive_number, FOLLOW_WAIT_SECONDS),
            metavar="SECONDS",
            help="how long to wait for the scheduler's clock announcement, wall seconds "
            f"(default {FOLLOW_WAIT_SECONDS:g})",
        )
    p.add_argument(
        "--run",
        type=_run_name,
        default=_env("SMETS1_RUN", _run_name),
        help="the run's name: its processes share topics and a clock of their own on the "
        "broker (smets1/<config name>.<run>/...), so a new run takes nothing of an earlier "
        "one's; every process of a run needs the same (default: none, the config's name)",
    )
    p.add_argument("--host", default="0.0.0.0", help="address the HTTP server listens on")
    p.add_argument(
        "--log-level",
        type=_log_level,
        default=_env("SMETS1_LOG_LEVEL", _log_level, "info"),
        help=f"one of {', '.join(LOG_LEVELS)} (default info)",
    )


def _run_role(args: argparse.Namespace) -> int:
    """Load the config, build the clock and run the role's coroutine on it."""
    from orchestrator import roles  # the heavy imports only when a role runs
    from orchestrator.errors import DcoGaveUp
    from orchestrator.roles import StatusUnreadable

    try:
        _resolve_env(args)
    except ConfigError as exc:
        return _fail(str(exc))
    _setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        if args.command == "fleet":
            preflight(config, args.config, args.shards, "--shards")
        else:
            check_images_fit_memory(config, args.config)
        clock = _clock(args, config)
        out = Path(args.out) if getattr(args, "out", None) else None
        opts = roles.RoleOptions(config, clock, listen_host=args.host, run=args.run or "")
        broker = parse_broker_url(args.broker)
        if args.command == "scheduler":
            opts.wall0 = args.wall0
            opts.auto_speed = args.speed == AUTO
        else:
            opts.clock_wait_seconds = args.clock_wait
        if args.command in ("dco", "scheduler"):
            opts.dco_token = _dco_token(config)
        if args.command == "dco":
            opts.http_port = args.port
            opts.status_file = out / f"dco-{args.worker}.json" if out else None
            state = (
                Path(args.state_dir)
                if args.state_dir
                else Path("runs") / config.name / f"dco-{args.worker}-state"
            )
            with collector_for_a_run():
                clock.run(roles.run_dco(opts, broker, args.shards, args.worker, state))
        elif args.command == "fleet":
            shard = args.shard if args.shard is not None else shard_from_host()
            if shard is None:
                raise ConfigError("--shard not given, no SMETS1_SHARD, no ordinal in host name")
            if not 0 <= shard < args.shards:
                raise ConfigError(f"--shard must be in 0..{args.shards - 1}, got {shard}")
            opts.http_port = args.port
            opts.status_file = out / f"fleet-{shard}.json" if out else None
            state = (
                Path(args.state_dir)
                if args.state_dir
                else Path("runs") / config.name / f"fleet-{shard}-state"
            )
            with collector_for_a_run():
                clock.run(roles.run_fleet(opts, broker, shard, args.shards, state))
        else:
            given = args.dco or [args.dco_urls]
            urls = expand_urls(given, args.dco_workers, "--dco-workers (SMETS1_DCO_WORKERS)")
            if not urls:
                raise ConfigError("--dco URL (or SMETS1_DCO_URLS) is needed")
            fleet_urls = expand_urls(
                args.fleet or [args.fleet_urls], args.shards, "--shards (SMETS1_SHARDS)"
            )
            if fleet_urls and not args.exit_when_done:
                raise ConfigError("--fleet (SMETS1_FLEET_URLS) needs --exit-when-done")
            opts.http_port = args.port
            out = out or Path("runs") / config.name
            opts.status_file = out / "scheduler.json"
            state = Path(args.state_dir) if args.state_dir else out / "scheduler-state"
            if args.dco_give_up <= 0:
                raise ConfigError(f"--dco-give-up must be positive, got {args.dco_give_up:g}")
            with collector_for_a_run():
                done = clock.run(
                    roles.run_scheduler(
                        opts,
                        broker,
                        urls,
                        state,
                        args.exit_when_done,
                        summary_file=out / "summary.json",
                        dco_give_up_seconds=args.dco_give_up,
                    )
                )
            if fleet_urls and not done.summary.unfinished:  # (unfinished: it was stopped)
                return _finish_run(done, fleet_urls, urls, config, args, out)
            if args.exit_when_done and done.summary.unfinished:
                return 1
    except DcoGaveUp as exc:
        print(f"smets1: error: {exc}", file=sys.stderr)
        return EXIT_DCO_GAVE_UP
    except StatusUnreadable as exc:
        print(f"smets1: error: {exc}", file=sys.stderr)
        return EXIT_STATUS_UNREADABLE
    except Smets1Error as exc:
        return _fail(str(exc))
    except OSError as exc:  # a port in use, a host that does not resolve, a folder
        return _fail(_os_error(exc))
    except ExceptionGroup as group:  # the same, raised inside a role's task group
        leaf = _first_leaf(group)
        if isinstance(leaf, Smets1Error):
            return _fail(str(leaf))
        if isinstance(leaf, OSError):
            return _fail(_os_error(leaf))
        raise
    return 0


def _finish_run(
    done: SchedulerStatus,
    fleet_urls: list[str],
    dco_urls: list[str],
    config: FleetConfig,
    args: argparse.Namespace,
    out: Path,
) -> int:
    """`scheduler --exit-when-done --fleet URL`: once the campaigns are done, read every
    fleet shard's and DCO worker's status over HTTP, merge them with the scheduler's as
    `smets1 distributed` does, write OUT/summary.json and OUT/report.html, and print the
    summary (its lines, the JSON on one line, and the report gzipped in base64 on one
    line: `kubectl logs` carries the results out of the cluster)."""
    import base64
    import gzip
    import json

    from orchestrator.distributed import merge
    from orchestrator.report import write_report
    from orchestrator.roles import collect_statuses
    from orchestrator.run_info import run_info, write_run_info

    fleets, dcos = collect_statuses(fleet_urls, dco_urls)
    summary = merge(done, fleets, dcos, done.wall_seconds, lateness_threshold_seconds(config))
    summary.update(
        run=args.run or None,
        shards=len(fleets),
        dco_workers=len(dcos),
        speed=args.speed,
        speed_control=None if done.speed_control is None else done.speed_control.model_dump(),
        broker=_without_password(args.broker),
    )
    summary["cpu_seconds"]["mosquitto"] = None
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_run_info(out, run_info(config, Path(args.config), mode="distributed"))
    write_report(out, store_dir=Path(args.state_dir) if args.state_dir else None)
    status = print_summary(summary, out, len(fleets), len(dcos))
    print(f"{SUMMARY_LINE} {json.dumps(summary, separators=(',', ':'))}")
    packed = base64.b64encode(gzip.compress((out / "report.html").read_bytes(), mtime=0))
    print(f"{REPORT_LINE} {packed.decode()}")
    sys.stdout.flush()
    return status


#: The first word of the log line that carries the merged summary as JSON, and of the one
#: that carries report.html (gzip, base64) (`--fleet`; deploy/README.md reads them back).
SUMMARY_LINE = "summary.json:"
REPORT_LINE = "report.html.gz.base64:"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _processes_line(roles: dict[str, dict[str, Any]]) -> str:
    """CPU seconds of every process of a distributed run, and the largest peak RSS."""
    cpu = {n: u["cpu_seconds"] for n, u in roles.items() if u.get("cpu_seconds") is not None}
    rss = {n: u["peak_rss_bytes"] for n, u in roles.items() if u.get("peak_rss_bytes")}
    if not cpu:
        return "no figures"
    each = ", ".join(f"{n} {c:.1f}" for n, c in cpu.items())
    line = f"{sum(cpu.values()):.1f} CPU s in all ({each})"
    if rss:
        top = max(rss, key=lambda n: rss[n])
        line += f"; peak RSS at most {rss[top] / 2**20:.0f} MiB ({top})"
    return line


def _run_distributed(args: argparse.Namespace) -> int:
    from orchestrator.distributed import run_distributed

    try:
        config = load_config(args.config)
        preflight(config, args.config, args.shards, "--shards")
        out = Path(args.out) if args.out else Path("runs") / f"{config.name}-distributed"
        summary = run_distributed(
            Path(args.config),
            out,
            broker=args.broker,
            shards=args.shards,
            dco_workers=args.dco_workers,
            speed=args.speed,
            timeout_seconds=args.timeout,
            log_level=args.log_level,
            thresholds=thresholds_of(config, args.max_failed, args.max_trt_missed),
        )
    except Smets1Error as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    return print_summary(summary, out, args.shards, args.dco_workers)


def print_summary(summary: dict[str, Any], out: Path, shards: int, dco_workers: int) -> int:
    """The lines `smets1 distributed` ends with; the exit status the summary calls for:
    4 for an invalid run, 1 for requests left unfinished, else 0."""
    failed = ", ".join(f"{k} {v}" for k, v in summary["failed"].items()) or "none"
    bus = summary["bus"]
    print(
        f"{summary['config']} (distributed, {shards} shard(s), {dco_workers} DCO worker(s)): "
        f"{summary['images_activated']}/{summary['requests']} activated on "
        f"{summary['devices']} devices; failed: {failed}\n"
        f"  {summary['blocks_delivered']:,} blocks ({summary['bytes_delivered']:,} bytes) "
        f"delivered; {summary['simulated_days']} simulated days in "
        f"{summary['wall_seconds']} s wall\n"
        f"  broker: {bus['messages']:,} messages, {bus['bytes']:,} bytes published "
        f"({bus['messages_per_second']:,.0f} msg/s, {bus['bytes_per_second'] / 1e6:,.2f} MB/s "
        f"over {bus['seconds']} s of campaign)\n"
        f"  summary: {out / 'summary.json'}, report: {out / 'report.html'}"
    )
    print(f"  processes: {_processes_line(summary.get('roles', {}))}")
    lateness, verdict = summary["lateness"], summary["verdict"]
    print(
        f"  lateness: worst {lateness['worst_seconds']:g} simulated s, p99 "
        f"{lateness['p99_seconds']:g} s, threshold {verdict['threshold_seconds']:g} s"
    )
    control = summary.get("speed_control")
    if control is not None:
        print(
            f"  speed: auto, from {control['start_speed']:g} to {control['speed']:g} "
            f"(between {control['min_speed']:g} and {control['max_speed']:g}, "
            f"{control['changes']} change(s))"
        )
    if verdict["status"] != "valid":
        # Last, on one line: whatever the counts above say, they do not count.
        print(f"smets1: invalid run: {verdict['reason']}", file=sys.stderr)
        return EXIT_INVALID_RUN
    line = gate_line(summary)
    if line is not None:
        # Last, on one line: the threshold the (valid) run passed, for a CI log.
        print(line, file=sys.stderr)
        return EXIT_THRESHOLD
    return 0 if not summary.get("unfinished") else 1


async def _clock_command(args: argparse.Namespace, fleet: str) -> dict[str, Any]:
    """Read the clock in force; with --speed, ask the leader for it and wait for it."""
    from orchestrator.serving import client_id
    from smets1.mqtt import MqttBus
    from smets1.shared_clock import ClockFollower, SpeedRequest, speed_topic

    bus = MqttBus(parse_broker_url(args.broker), client_id(fleet, "clock"))
    clock = ScaledClock(0.0, 1.0)
    follower = ClockFollower(clock, bus, fleet, "smets1 clock")
    await bus.start()
    try:
        current = await follower.wait(args.wait)
        if args.speed is not None:
            follower.joined.clear()
            bus.publish(speed_topic(fleet), SpeedRequest(args.speed).serialize())
            while (current := await follower.wait(args.wait)).speed != args.speed:
                follower.joined.clear()
    finally:
        await bus.close()
    return {
        "run_id": f"{current.run_id:016x}",
        "sequence": current.sequence,
        "speed": current.speed,
        "origin_wall": current.origin_wall,
        "origin_sim": current.origin_sim,
        "simulated_time": clock.datetime().isoformat(),
    }


def _run_clock(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from orchestrator.roles import topic_namespace

    try:
        _resolve_env(args)
        config = load_config(args.config)
        doc = asyncio.run(_clock_command(args, topic_namespace(config.name, args.run or "")))
    except Smets1Error as exc:
        return _fail(str(exc))
    print(json.dumps(doc))
    return 0


def add_role_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `dco`, `fleet`, `scheduler` and `distributed` on the `smets1` command line."""
    dco = sub.add_parser("dco", help="run a DCO worker: MQTT to the fleet, HTTP to the scheduler")
    _common(dco)
    dco.add_argument("--shards", type=_shards, default=_env("SMETS1_SHARDS", _shards, 1))
    dco.add_argument(
        "--worker",
        type=_worker,
        default=_env("SMETS1_DCO_WORKER", _worker, "w0"),
        help="this worker's id in the topics (several workers need distinct ids)",
    )
    dco.add_argument("--port", type=_port, default=DEFAULT_DCO_PORT, help="HTTP API port")
    dco.add_argument(
        "--state-dir", help="the image store's folder (default runs/<name>/dco-<worker>-state)"
    )
    dco.add_argument("--out", help="folder for the dco-<worker>.json status at exit")
    dco.set_defaults(func=_run_role)

    fleet = sub.add_parser("fleet", help="run one fleet shard: its share of the devices")
    _common(fleet)
    fleet.add_argument("--shard", type=_shard, default=_env("SMETS1_SHARD", _shard))
    fleet.add_argument("--shards", type=_shards, default=_env("SMETS1_SHARDS", _shards, 1))
    fleet.add_argument("--port", type=_port, default=None, help="HTTP port for /health, /metrics")
    fleet.add_argument(
        "--state-dir",
        default=os.environ.get("SMETS1_STATE_DIR") or None,
        help="the shard's flash: a restarted shard resumes from it "
        "(default runs/<name>/fleet-<shard>-state)",
    )
    fleet.add_argument("--out", help="folder for the fleet-<shard>.json status at exit")
    fleet.set_defaults(func=_run_role)

    sched = sub.add_parser("scheduler", help="run the scheduler against DCO worker(s) over HTTP")
    _common(sched, leader=True)
    sched.add_argument(
        "--dco",
        action="append",
        type=_http_urls,
        help="DCO worker base URL, e.g. http://127.0.0.1:8081 (repeat for several)",
    )
    sched.set_defaults(dco_urls=_env("SMETS1_DCO_URLS", _http_urls, ""))
    sched.add_argument(
        "--dco-workers",
        type=_shards,
        default=_env("SMETS1_DCO_WORKERS", _shards),
        help="how many DCO workers a --dco URL with {i} stands for (http://dco-{i}.dco:8081)",
    )
    sched.add_argument(
        "--fleet",
        action="append",
        type=_http_urls,
        help="with --exit-when-done: a fleet shard's base URL (repeat, or one with {i} for "
        "each of --shards): at the end the scheduler reads every shard's and DCO worker's "
        "status and writes the run's merged summary.json and report.html to --out, and "
        "prints them",
    )
    sched.set_defaults(fleet_urls=_env("SMETS1_FLEET_URLS", _http_urls, ""))
    sched.add_argument(
        "--shards",
        type=_shards,
        default=_env("SMETS1_SHARDS", _shards),
        help="how many fleet shards a --fleet URL with {i} stands for",
    )
    sched.add_argument(
        "--port",
        type=_port,
        default=None,
        help="HTTP port of the scheduler API (DUIS, JSON, /healthz)",
    )
    sched.add_argument(
        "--out",
        help="folder for summary.json and the scheduler.json status (default runs/<config name>/)",
    )
    sched.add_argument(
        "--state-dir", help="the scheduler's SQLite store (default OUT/scheduler-state)"
    )
    sched.add_argument(
        "--exit-when-done",
        action="store_true",
        help="exit once every request of the config's campaigns has its answer",
    )
    sched.add_argument(
        "--dco-give-up",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="with --exit-when-done: exit with status 3 once a DCO worker has been "
        "unreachable this long, wall seconds (default 300; without it: wait for ever)",
    )
    sched.set_defaults(func=_run_role)

    clk = sub.add_parser(
        "clock",
        help="show the clock a distributed run shares; --speed N: change its speed",
    )
    clk.add_argument("config", help="YAML fleet config (names the fleet's topics)")
    clk.add_argument(
        "--broker",
        type=_broker,
        default=_env("SMETS1_BROKER", _broker, DEFAULT_BROKER),
        help=f"MQTT broker URL (default {DEFAULT_BROKER})",
    )
    clk.add_argument(
        "--speed", type=_speed, help="ask the scheduler to go on at this speed from now"
    )
    clk.add_argument(
        "--run",
        type=_run_name,
        default=_env("SMETS1_RUN", _run_name),
        help="the run's name, as its processes were given it",
    )
    clk.add_argument(
        "--wait",
        type=_positive_number,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the clock (and the change), wall seconds (default 30)",
    )
    clk.set_defaults(func=_run_clock)

    dist = sub.add_parser(
        "distributed",
        help="run a config as separate processes (scheduler, DCO, fleet shards) over MQTT",
    )
    dist.add_argument("config", help="YAML fleet config")
    dist.add_argument(
        "--broker", type=_broker, help="MQTT broker URL (default: start a private mosquitto)"
    )
    dist.add_argument("--shards", type=_shards, default=2)
    dist.add_argument("--dco-workers", type=_shards, default=1)
    dist.add_argument(
        "--speed",
        type=_speed_or_auto,
        default=DEFAULT_SPEED,
        help="'auto' (default: the scheduler finds a speed every role keeps up with) or a "
        "fixed speed, simulated seconds per wall second",
    )
    dist.add_argument(
        "--out", help="folder for summary.json, report.html and each process's status and log"
    )
    dist.add_argument(
        "--timeout", type=_positive_number, default=600.0, help="give up after, wall seconds"
    )
    dist.add_argument("--log-level", type=_log_level, default="info", help="as for the roles")
    add_threshold_flags(dist)
    dist.set_defaults(func=_run_distributed)
