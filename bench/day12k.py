"""day-12k in process: the demo day as `smets1 run` does it (scheduler, DCO and fleet on
the virtual clock, in a process of its own: start-up, image building and the report
included), beside the floor: copying and SHA-256 hashing the same bytes, in this process.

    python -m bench.day12k [--config fleet_configs/demo.yaml] [--no-floor]
                           [--idle-devices N] [--background] [--rounds N]

Reports CPU seconds (user + system) and wall seconds of both, and `cpu_over_floor`:
issue 17 asks for at most 2.5 (issue 6 asked for wall ≤ 60 s and ≤ 4 × the floor).
`--idle-devices N` runs the same day a second time with N more devices that no campaign
touches (a model of their own, a copy of the config's first), and reports
`idle_cpu_ratio`: what N idle devices add to a day of activations (issue 17: 100,000
devices in a process within 10 % of the demo day, so `--idle-devices 88000`).
`--background` runs the same day a second time with background traffic on (the config
with `BENCH_BACKGROUND` added: four reads a device a day of three kinds, the default
profile) and reports both CPU figures and `background_cpu_ratio` (issue 16: at most 1.5).
`--rounds N` takes every measure N times, alternated, and reports the least of each with
every round's figure, `cpu_spread` (how far the rounds of each measure differ) and
`trust`: on this kind of machine the same run's CPU seconds have varied by 10 % from one
minute to the next, as much as the idle target's whole margin.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.cpu import smets1_run
from bench.machine import machine
from smets1.clock import wall_seconds
from smets1.config import load_config
from smets1.image import seeded_body

ROOT = Path(__file__).resolve().parents[1]
#: Issue 17: the demo day's whole `smets1 run` process, in CPU seconds, against the floor.
TARGET_CPU_OVER_FLOOR = 2.5
#: Issue 17: a day among 100,000 devices against the demo day's 12,000.
TARGET_IDLE_CPU_RATIO = 1.10
#: Issue 16: the demo day with background traffic against the same day without.
TARGET_BACKGROUND_CPU_RATIO = 1.5
#: The background section `--background` adds: a realistic rate, about four reads a device
#: a day of three kinds (smets1.config_background's defaults).
BENCH_BACKGROUND: dict[str, Any] = {}


def floor_seconds(images: int, size_bytes: int, block_bytes: int) -> tuple[float, float]:
    """The least any faithful run can cost: every image's bytes copied block by block into
    a slot buffer once and hashed once. (CPU seconds, wall seconds)."""
    source = seeded_body(size_bytes, 1)
    view = memoryview(source)
    c0, t0 = time.process_time(), wall_seconds()
    for _ in range(images):
        slot = bytearray(size_bytes)
        for off in range(0, size_bytes, block_bytes * 64):  # runs of 64 blocks, as sent
            slot[off : off + block_bytes * 64] = view[off : off + block_bytes * 64]
        hashlib.sha256(slot).digest()
    return time.process_time() - c0, wall_seconds() - t0


def with_idle_devices(source: Path, idle: int, folder: Path) -> Path:
    """A copy of `source` with `idle` more devices of a model no campaign names."""
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    first = raw["models"][0]
    model = {**first, "name": f"{first['name']}-idle"}
    raw["models"].append(model)
    group = next(g for g in raw["devices"] if g["model"] == first["name"])
    raw["devices"].append({**group, "model": model["name"], "count": idle})
    raw["name"] = f"{raw.get('name', 'fleet')}-idle"
    path = folder / f"idle-{source.name}"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def with_background(source: Path, folder: Path) -> Path:
    """A copy of `source` with background traffic on (`BENCH_BACKGROUND`)."""
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw["background"] = BENCH_BACKGROUND
    raw["name"] = f"{raw.get('name', 'fleet')}-background"
    path = folder / f"background-{source.name}"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _run(config: Path, folder: Path) -> dict[str, Any]:
    summary, cpu, wall = smets1_run(config, folder, sys.executable)
    return {
        "devices": summary["devices"],
        "images_activated": summary["images_activated"],
        "bytes_delivered": summary["bytes_delivered"],
        "simulated_days": summary["simulated_days"],
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "campaign_wall_seconds": summary["wall_seconds"],
        "peak_rss_bytes": summary["peak_rss_bytes"],
        "outcomes_sha256": summary["activations"]["outcomes_sha256"],
        "background": summary.get("background"),
    }


def _least(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the least CPU seconds, and every round's CPU and wall seconds: on a
    shared machine the least is the one least disturbed."""
    best = dict(min(rounds, key=lambda r: float(r["cpu_seconds"])))
    if len(rounds) > 1:
        best["cpu_seconds_rounds"] = [r["cpu_seconds"] for r in rounds]
        best["wall_seconds_rounds"] = [r["wall_seconds"] for r in rounds]
    return best


def spread(values: list[float]) -> float:
    """How far the greatest is above the least, as a fraction of the least."""
    return max(values) / min(values) - 1 if values and min(values) > 0 else 0.0


def run(
    config_path: Path,
    with_floor: bool,
    idle_devices: int = 0,
    background: bool = False,
    rounds: int = 1,
) -> dict[str, Any]:
    """Each measure `rounds` times, alternated (day, floor, idle, background, day, ...), so
    that a slow spell of the machine falls on all alike; the ratios are of the least of
    each, and `trust` says how far the rounds of one measure disagreed."""
    config = load_config(config_path)
    size = max(i.size_bytes or 0 for i in config.images)
    days: list[dict[str, Any]] = []
    floors: list[tuple[float, float]] = []
    idles: list[dict[str, Any]] = []
    bgs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        idle_config = (
            with_idle_devices(config_path, idle_devices, Path(tmp)) if idle_devices else None
        )
        bg_config = with_background(config_path, Path(tmp)) if background else None
        for k in range(rounds):
            days.append(_run(config_path, Path(tmp) / f"day{k}"))
            if with_floor:
                floors.append(
                    floor_seconds(days[-1]["images_activated"], size, config.block_size_bytes)
                )
            if idle_config is not None:
                idles.append(_run(idle_config, Path(tmp) / f"idle{k}"))
            if bg_config is not None:
                bgs.append(_run(bg_config, Path(tmp) / f"background{k}"))
    day = _least(days)
    day.pop("background", None)
    out: dict[str, Any] = {"benchmark": "day-12k-in-process", "config": str(config_path)}
    out.update(day)
    spreads = {"day": spread([r["cpu_seconds"] for r in days])}
    if floors:
        cpu, wall = min(floors)
        out["floor_cpu_seconds"] = round(cpu, 3)
        out["floor_wall_seconds"] = round(wall, 3)
        if rounds > 1:
            out["floor_cpu_seconds_rounds"] = [round(c, 3) for c, _ in floors]
        spreads["floor"] = spread([c for c, _ in floors])
        out["cpu_over_floor"] = round(day["cpu_seconds"] / cpu, 2)
        out["wall_over_floor"] = round(day["wall_seconds"] / wall, 2)
        out["target_cpu_over_floor"] = TARGET_CPU_OVER_FLOOR
    if idles:
        idle = _least(idles)
        idle.pop("background", None)
        out["with_idle_devices"] = {"idle_devices": idle_devices, **idle}
        out["idle_cpu_ratio"] = round(idle["cpu_seconds"] / day["cpu_seconds"], 3)
        out["target_idle_cpu_ratio"] = TARGET_IDLE_CPU_RATIO
        spreads["idle"] = spread([r["cpu_seconds"] for r in idles])
    if bgs:
        bg = _least(bgs)
        counts = bg.pop("background") or {}
        out["with_background"] = {
            **{k: bg[k] for k in ("images_activated", "simulated_days", "cpu_seconds")},
            **{k: bg[k] for k in ("wall_seconds", "peak_rss_bytes", "outcomes_sha256")},
            **{k: v for k, v in bg.items() if k.endswith("_rounds")},
            **{
                k: counts.get(k)
                for k in ("requests", "met", "missed", "p50_seconds", "p95_seconds")
            },
        }
        out["background_cpu_ratio"] = round(bg["cpu_seconds"] / day["cpu_seconds"], 3)
        out["target_background_cpu_ratio"] = TARGET_BACKGROUND_CPU_RATIO
        spreads["background"] = spread([r["cpu_seconds"] for r in bgs])
    out["rounds"] = rounds
    out["cpu_spread"] = {k: round(v, 3) for k, v in spreads.items()}
    out["trust"] = trust(rounds, spreads)
    out["machine"] = machine()
    return out


#: Rounds of one measure further apart than this leave a ratio in doubt at the targets'
#: own margins (issue 17's 10 %).
NOISY_SPREAD = 0.05


def trust(rounds: int, spreads: dict[str, float]) -> str:
    """Whether the figures can be taken as they stand, in words."""
    if rounds < 2:
        return "one round: the machine's noise is unseen (run with --rounds 3)"
    noisy = {k: v for k, v in spreads.items() if v > NOISY_SPREAD}
    if not noisy:
        return f"steady: {rounds} rounds of each measure within {NOISY_SPREAD:.0%} of each other"
    worst = ", ".join(f"{k} {v:.0%}" for k, v in sorted(noisy.items(), key=lambda kv: -kv[1]))
    return (
        f"noisy: the rounds of one measure differ by up to {worst}; the ratios are of the"
        " least of each, but a ratio within that of its target is not settled"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.day12k", description=__doc__)
    p.add_argument("--config", default=str(ROOT / "fleet_configs" / "demo.yaml"))
    p.add_argument("--no-floor", action="store_true")
    p.add_argument("--idle-devices", type=int, default=0, metavar="N")
    p.add_argument(
        "--background", action="store_true", help="the day again with background traffic"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="each measure N times, alternated; the least of each is reported (default 1)",
    )
    args = p.parse_args(argv)
    if args.idle_devices < 0:
        p.error("--idle-devices must be 0 or more")
    if args.rounds < 1:
        p.error("--rounds must be 1 or more")
    out = run(Path(args.config), not args.no_floor, args.idle_devices, args.background, args.rounds)
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
