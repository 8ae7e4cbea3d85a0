"""Scale curve: wall time, CPU seconds and peak RSS of the same campaign at growing fleet
sizes.

    python -m bench.scale_curve [--sizes 1000,10000,100000]

Each size runs in a fresh process (so peak RSS is its own): the demo's two models and
1 MiB images, devices split as in the demo, released at 12,000 a day. Cost should grow
linearly with the fleet; `seconds_per_device` makes that easy to see.
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

ROOT = Path(__file__).resolve().parents[1]


def config_for(devices: int) -> dict[str, Any]:
    cfg = yaml.safe_load((ROOT / "fleet_configs" / "demo.yaml").read_text())
    first = devices * 7 // 12
    cfg["name"] = f"scale-{devices}"
    cfg["devices"][0]["count"] = first
    cfg["devices"][1]["count"] = devices - first
    return cfg


def measure(devices: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fleet.yaml"
        path.write_text(yaml.safe_dump(config_for(devices)))
        s, cpu, wall = smets1_run(path, Path(tmp), sys.executable)
    return {
        "devices": devices,
        "images_activated": s["images_activated"],
        "simulated_days": s["simulated_days"],
        "wall_seconds": s["wall_seconds"],
        "process_wall_seconds": wall,
        "cpu_seconds": cpu,
        "peak_rss_bytes": s["peak_rss_bytes"],
        "seconds_per_device": round(s["wall_seconds"] / devices, 6),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale_curve", description=__doc__)
    p.add_argument("--sizes", default="1000,10000,100000")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    points = [measure(n) for n in sizes]
    json.dump(
        {"benchmark": "scale-curve", "points": points, "machine": machine()}, sys.stdout, indent=2
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
