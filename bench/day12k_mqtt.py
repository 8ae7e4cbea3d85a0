"""day-12k over MQTT: the demo day with scheduler, DCO and fleet shards as separate
processes through a private Mosquitto (`smets1 distributed`), beside the same config in
process (`smets1 run`, its twin and reference), on one machine, one after the other.

    python -m bench.day12k_mqtt [--config fleet_configs/demo.yaml] [--shards 2]
                                [--speed auto] [--run-blocks N] [--no-twin]

Every block's bytes move DCO -> broker -> shard and every image is hashed, its signature
checked and activated on its device. Reports, beside wall time: CPU seconds of every
process (the roles and the broker, from their own accounting) and of the in-process
twin, images per CPU second both ways and the ratio (issue 11: at most 2.5), the run's
verdict, and the twin comparison (orchestrator.compare: same outcomes, 11.3 median within
10 %, p95 within 25 %). `--speed auto` (the default) lets the run find the speed this
machine keeps up with: the wall time is then capacity, not the clock. Campaigns of more
than 500 large images a User a day need an agreed schedule (MP230); campaigns that name
no `schedule` get `schedule: agreed` in the copy. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.cpu import smets1_run
from bench.machine import machine
from orchestrator.autospeed import AUTO
from orchestrator.compare import as_json, compare_summaries
from orchestrator.distributed import run_distributed
from orchestrator.errors import DistributedError
from smets1.clock import wall_seconds

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEED = AUTO
#: At most this many times the in-process twin's CPU seconds (issue 11).
TARGET_CPU_RATIO = 2.5


def prepare_config(source: Path, run_blocks: int | None, folder: Path) -> tuple[Path, list[str]]:
    """A copy of `source` with the transport's run size and agreed schedules; what changed."""
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    changes = []
    if run_blocks is not None:
        dco = raw.setdefault("dco", {}) or {}
        raw["dco"] = dco
        if dco.get("run_blocks") != run_blocks:
            changes.append(f"dco.run_blocks: {dco.get('run_blocks', 'default')} -> {run_blocks}")
            dco["run_blocks"] = run_blocks
    for c in raw.get("campaigns") or []:
        if "schedule" not in c:
            c["schedule"] = "agreed"
            changes.append(f"campaign {c.get('name')}: schedule: agreed")
    path = folder / source.name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path, changes


def run(
    config_path: Path,
    shards: int,
    speed: float | str,
    run_blocks: int | None,
    dco_workers: int,
    timeout: float,
    out: Path | None,
    python: str = sys.executable,
    with_twin: bool = True,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="day12k-mqtt-") as tmp:
        folder = out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        config, changes = prepare_config(config_path, run_blocks, folder)
        reference = smets1_run(config, folder / "twin", python) if with_twin else None
        t0 = wall_seconds()
        s = run_distributed(
            config,
            folder / "run",
            shards=shards,
            dco_workers=dco_workers,
            speed=speed,
            timeout_seconds=timeout,
            log_level="warning",
            python=python,
        )
        wall = wall_seconds() - t0
    bus = s["bus"]
    cpu = s.get("cpu_seconds", {})
    cpu_total = round(sum(v for v in cpu.values() if v is not None), 3)
    result: dict[str, Any] = {
        "benchmark": "day-12k-mqtt",
        "config": str(config_path),
        "config_changes": changes,
        "shards": shards,
        "dco_workers": dco_workers,
        "speed": speed,
        "speed_control": s.get("speed_control"),
        "verdict": s["verdict"],
        "lateness": {k: v for k, v in s["lateness"].items() if k != "roles"},
        "devices": s["devices"],
        "requests": s["requests"],
        "images_activated": s["images_activated"],
        "failed": s["failed"],
        "unfinished": s["unfinished"],
        "held_for_schedule": s["held_for_schedule"],
        "device_states": s["device_states"],
        "blocks_delivered": s["blocks_delivered"],
        "bytes_delivered": s["bytes_delivered"],
        "blocks_sent": s["blocks_sent"],
        "trt_met": s["trt_met"],
        "trt_missed": s["trt_missed"],
        "simulated_days": s["simulated_days"],
        "activations": s["activations"],
        # From the first process's start to the merged summary: what a user waits.
        "wall_seconds": round(wall, 3),
        "campaign_wall_seconds": bus["seconds"],
        "cpu_seconds": cpu,
        "cpu_seconds_total": cpu_total,
        "images_per_cpu_second": round(s["images_activated"] / cpu_total, 2) if cpu_total else None,
        "broker": {
            # Frames (wire messages) and the MQTT messages that carried them.
            "frames": bus["messages"],
            "frames_per_second": bus["messages_per_second"],
            "mqtt_messages": bus["mqtt_messages"],
            "mqtt_messages_per_second": bus["mqtt_messages_per_second"],
            "bytes": bus["bytes"],
            "bytes_per_second": bus["bytes_per_second"],
            "republished": bus["republished"],
            "duplicates_dropped": bus["duplicates_dropped"],
            "connection_losses": bus["connection_losses"],
        },
        "worst_lag_seconds": s["worst_lag_seconds"],
        "machine": machine(),
    }
    if reference is not None:
        ref, ref_cpu, ref_wall = reference
        checks = compare_summaries(ref, s)
        result["in_process"] = {
            "cpu_seconds": ref_cpu,
            "wall_seconds": ref_wall,
            "images_per_cpu_second": round(ref["images_activated"] / ref_cpu, 2),
            "activations": ref["activations"],
        }
        result["cpu_ratio"] = round(cpu_total / ref_cpu, 2)
        result["target_cpu_ratio"] = TARGET_CPU_RATIO
        result["equal_results"] = as_json(checks)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.day12k_mqtt", description=__doc__)
    p.add_argument("--config", default=str(ROOT / "fleet_configs" / "demo.yaml"))
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--dco-workers", type=int, default=1)
    p.add_argument(
        "--speed",
        default=DEFAULT_SPEED,
        help="'auto' (default: the speed this machine keeps up with) or simulated s per wall s",
    )
    p.add_argument(
        "--run-blocks",
        type=int,
        default=0,
        help="blocks per run of blocks (default 0: as the config says)",
    )
    p.add_argument("--no-twin", action="store_true", help="skip the in-process twin")
    p.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="give up after, wall seconds (a loaded machine slows the automatic speed)",
    )
    p.add_argument("--out", help="keep the run's logs and status files here")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that runs each role, `PYTHON -m orchestrator.cli ROLE ...` "
        "(a wrapper can try another event loop)",
    )
    args = p.parse_args(argv)
    speed: float | str = args.speed if args.speed == AUTO else float(args.speed)
    try:
        result = run(
            Path(args.config),
            args.shards,
            speed,
            args.run_blocks or None,
            args.dco_workers,
            args.timeout,
            Path(args.out) if args.out else None,
            args.python,
            not args.no_twin,
        )
    except DistributedError as exc:
        print(f"bench day12k-mqtt: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0 if result["images_activated"] == result["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
