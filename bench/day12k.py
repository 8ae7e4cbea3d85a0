"""day-12k in process: the demo day through scheduler, DCO and fleet on the virtual clock,
and, in the same process, the floor: copying and SHA-256 hashing the same bytes.

    python -m bench.day12k [--config fleet_configs/demo.yaml] [--no-floor]

Target (issue 6): wall ≤ 60 s and ≤ 4 × the floor on a 2-core machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.machine import machine
from orchestrator.runner import run_config
from smets1.clock import wall_seconds
from smets1.config import load_config
from smets1.image import seeded_body

ROOT = Path(__file__).resolve().parents[1]


def floor_seconds(images: int, size_bytes: int, block_bytes: int) -> float:
    """The least any faithful run can cost: every image's bytes copied block by block into
    a slot buffer once and hashed once."""
    source = seeded_body(size_bytes, 1)
    view = memoryview(source)
    t0 = wall_seconds()
    for _ in range(images):
        slot = bytearray(size_bytes)
        for off in range(0, size_bytes, block_bytes * 64):  # runs of 64 blocks, as sent
            slot[off : off + block_bytes * 64] = view[off : off + block_bytes * 64]
        hashlib.sha256(slot).digest()
    return wall_seconds() - t0


def run(config_path: Path, with_floor: bool) -> dict[str, Any]:
    config = load_config(config_path)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_config(config, Path(tmp), progress=None)
    out: dict[str, Any] = {
        "benchmark": "day-12k-in-process",
        "config": str(config_path),
        "devices": summary["devices"],
        "images_activated": summary["images_activated"],
        "bytes_delivered": summary["bytes_delivered"],
        "simulated_days": summary["simulated_days"],
        "wall_seconds": summary["wall_seconds"],
        "peak_rss_bytes": summary["peak_rss_bytes"],
        "machine": machine(),
    }
    if with_floor:
        size = max(i.size_bytes or 0 for i in config.images)
        floor = floor_seconds(summary["images_activated"], size, config.block_size_bytes)
        out["floor_seconds"] = round(floor, 3)
        out["wall_over_floor"] = round(summary["wall_seconds"] / floor, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.day12k", description=__doc__)
    p.add_argument("--config", default=str(ROOT / "fleet_configs" / "demo.yaml"))
    p.add_argument("--no-floor", action="store_true")
    args = p.parse_args(argv)
    json.dump(run(Path(args.config), not args.no_floor), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
