"""`smets1 dco | fleet | scheduler | distributed`: the roles as services of their own.

    smets1 dco CONFIG --shards N [--worker ID] [--port 8081] [--state-dir DIR]
    smets1 fleet CONFIG --shard I --shards N [--port P] [--state-dir DIR]
    smets1 scheduler CONFIG --dco URL [--dco URL ...] [--exit-when-done] [--out DIR]
    smets1 distributed CONFIG [--broker URL] [--shards N] [--dco-workers K] [--out DIR]

Every role takes `--broker mqtt://user:pass@host:port` (or mqtts://), `--speed` (simulated
seconds per wall second) and `--wall0` (the Unix time at which simulated time is the
config's epoch). Processes of one run must share speed and wall0. Each option has an
environment default, for Kubernetes: SMETS1_BROKER, SMETS1_SPEED, SMETS1_WALL0,
SMETS1_SHARD (else the trailing ordinal of the host name, as a StatefulSet pod has),
SMETS1_SHARDS, SMETS1_DCO_WORKER, SMETS1_DCO_URLS (comma separated), SMETS1_STATE_DIR
(the fleet shard's flash).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
from pathlib import Path

from smets1.broker_url import parse_broker_url
from smets1.clock import ScaledClock
from smets1.config import load_config
from smets1.errors import ConfigError, Smets1Error

EXIT_USAGE = 2
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
#: A simulated day per wall minute.
DEFAULT_SPEED = 1440.0
DEFAULT_DCO_PORT = 8081


def _fail(message: str) -> int:
    print(f"smets1: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _clock(args: argparse.Namespace, epoch: float) -> ScaledClock:
    if args.speed <= 0:
        raise ConfigError(f"--speed must be positive, got {args.speed:g}")
    if args.wall0 is None:
        logging.getLogger("orchestrator.roles").warning(
            "no --wall0 (or SMETS1_WALL0): this process starts its own clock; "
            "give every process of a run the same --wall0 and --speed"
        )
    return ScaledClock(epoch, args.speed, args.wall0)


def shard_from_host(hostname: str | None = None) -> int | None:
    """The ordinal a StatefulSet gives its pods: `fleet-3` → 3."""
    m = re.search(r"-(\d+)$", hostname or socket.gethostname())
    return int(m.group(1)) if m else None


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _common(p: argparse.ArgumentParser, broker: bool = True) -> None:
    p.add_argument("config", help="YAML fleet config (the same file for every role)")
    if broker:
        p.add_argument(
            "--broker",
            default=os.environ.get("SMETS1_BROKER", DEFAULT_BROKER),
            help=f"MQTT broker URL, mqtt:// or mqtts:// (default {DEFAULT_BROKER})",
        )
    p.add_argument(
        "--speed",
        type=float,
        default=_env_float("SMETS1_SPEED") or DEFAULT_SPEED,
        help=f"simulated seconds per wall second (default {DEFAULT_SPEED:g}: a day a minute)",
    )
    p.add_argument(
        "--wall0",
        type=float,
        default=_env_float("SMETS1_WALL0"),
        help="Unix time at which simulated time equals the config's epoch (shared by all)",
    )
    p.add_argument("--host", default="0.0.0.0", help="address the HTTP server listens on")
    p.add_argument("--log-level", default=os.environ.get("SMETS1_LOG_LEVEL", "info"))


def _run_role(args: argparse.Namespace) -> int:
    """Load the config, build the clock and run the role's coroutine on it."""
    from orchestrator import roles  # the heavy imports only when a role runs

    _setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        clock = _clock(args, config.epoch_seconds)
        out = Path(args.out) if getattr(args, "out", None) else None
        opts = roles.RoleOptions(config, clock, listen_host=args.host)
        if args.command == "dco":
            broker = parse_broker_url(args.broker)
            opts.http_port = args.port
            opts.status_file = out / f"dco-{args.worker}.json" if out else None
            state = (
                Path(args.state_dir)
                if args.state_dir
                else Path("runs") / config.name / f"dco-{args.worker}-state"
            )
            clock.run(roles.run_dco(opts, broker, args.shards, args.worker, state))
        elif args.command == "fleet":
            broker = parse_broker_url(args.broker)
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
            clock.run(roles.run_fleet(opts, broker, shard, args.shards, state))
        else:
            given = args.dco or [os.environ.get("SMETS1_DCO_URLS", "")]
            urls = [u for arg in given for u in arg.split(",") if u]
            if not urls:
                raise ConfigError("--dco URL (or SMETS1_DCO_URLS) is needed")
            opts.http_port = args.port
            out = out or Path("runs") / config.name
            opts.status_file = out / "scheduler.json"
            state = Path(args.state_dir) if args.state_dir else out / "scheduler-state"
            done = clock.run(
                roles.run_scheduler(
                    opts, urls, state, args.exit_when_done, summary_file=out / "summary.json"
                )
            )
            if args.exit_when_done and done.summary.unfinished:
                return 1
    except Smets1Error as exc:
        return _fail(str(exc))
    return 0


def _run_distributed(args: argparse.Namespace) -> int:
    from orchestrator.distributed import run_distributed

    try:
        config = load_config(args.config)
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
        )
    except Smets1Error as exc:
        return _fail(str(exc))
    failed = ", ".join(f"{k} {v}" for k, v in summary["failed"].items()) or "none"
    bus = summary["bus"]
    print(
        f"{summary['config']} (distributed, {args.shards} shard(s), {args.dco_workers} DCO "
        f"worker(s)): {summary['images_activated']}/{summary['requests']} activated on "
        f"{summary['devices']} devices; failed: {failed}\n"
        f"  {summary['blocks_delivered']:,} blocks ({summary['bytes_delivered']:,} bytes) "
        f"delivered; {summary['simulated_days']} simulated days in "
        f"{summary['wall_seconds']} s wall\n"
        f"  broker: {bus['messages']:,} messages, {bus['bytes']:,} bytes published "
        f"({bus['messages_per_second']:,.0f} msg/s, {bus['bytes_per_second'] / 1e6:,.2f} MB/s "
        f"over {bus['seconds']} s of campaign)\n"
        f"  summary: {out / 'summary.json'}"
    )
    return 0 if not summary.get("unfinished") else 1


def add_role_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `dco`, `fleet`, `scheduler` and `distributed` on the `smets1` command line."""
    dco = sub.add_parser("dco", help="run a DCO worker: MQTT to the fleet, HTTP to the scheduler")
    _common(dco)
    dco.add_argument("--shards", type=int, default=_env_int("SMETS1_SHARDS") or 1)
    dco.add_argument(
        "--worker",
        default=os.environ.get("SMETS1_DCO_WORKER", "w0"),
        help="this worker's id in the topics (several workers need distinct ids)",
    )
    dco.add_argument("--port", type=int, default=DEFAULT_DCO_PORT, help="HTTP API port")
    dco.add_argument(
        "--state-dir", help="the image store's folder (default runs/<name>/dco-<worker>-state)"
    )
    dco.add_argument("--out", help="folder for the dco-<worker>.json status at exit")
    dco.set_defaults(func=_run_role)

    fleet = sub.add_parser("fleet", help="run one fleet shard: its share of the devices")
    _common(fleet)
    fleet.add_argument("--shard", type=int, default=_env_int("SMETS1_SHARD"))
    fleet.add_argument("--shards", type=int, default=_env_int("SMETS1_SHARDS") or 1)
    fleet.add_argument("--port", type=int, default=None, help="HTTP port for /health, /metrics")
    fleet.add_argument(
        "--state-dir",
        default=os.environ.get("SMETS1_STATE_DIR"),
        help="the shard's flash: a restarted shard resumes from it "
        "(default runs/<name>/fleet-<shard>-state)",
    )
    fleet.add_argument("--out", help="folder for the fleet-<shard>.json status at exit")
    fleet.set_defaults(func=_run_role)

    sched = sub.add_parser("scheduler", help="run the scheduler against DCO worker(s) over HTTP")
    _common(sched, broker=False)
    sched.add_argument(
        "--dco",
        action="append",
        help="DCO worker base URL, e.g. http://127.0.0.1:8081 (repeat for several)",
    )
    sched.add_argument(
        "--port",
        type=int,
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
    sched.set_defaults(func=_run_role)

    dist = sub.add_parser(
        "distributed",
        help="run a config as separate processes (scheduler, DCO, fleet shards) over MQTT",
    )
    dist.add_argument("config", help="YAML fleet config")
    dist.add_argument("--broker", help="MQTT broker URL (default: start a private mosquitto)")
    dist.add_argument("--shards", type=int, default=2)
    dist.add_argument("--dco-workers", type=int, default=1)
    dist.add_argument("--speed", type=float, default=DEFAULT_SPEED)
    dist.add_argument("--out", help="folder for summary.json and each process's status and log")
    dist.add_argument("--timeout", type=float, default=600.0, help="give up after, wall seconds")
    dist.add_argument("--log-level", default="info")
    dist.set_defaults(func=_run_distributed)
