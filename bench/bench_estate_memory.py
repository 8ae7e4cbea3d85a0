"""estate-memory: what an idle fleet costs to build and to hold, in one process.

    python -m bench.bench_estate_memory [--devices N] [--faulty-share F]

Builds N devices (default 100,000) of two models from a fleet config, as `smets1 run`
does, plus the fleet host that serves them, and prints JSON: devices, seconds to build,
RSS before and after, and the RSS delta per device. With `--faulty-share`, that share of
the devices gets a fault model (faults cost nothing until the first frame: the random
stream is made lazily).

Target (issue 3): 100,000 devices start in under 10 s and hold under 1.5 KiB each.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
from typing import Any

from bench.cpu import self_cpu_seconds
from bench.machine import machine
from emulator.fleet import FleetHost, build_devices
from smets1.bus import InProcessBus
from smets1.clock import VirtualClock, wall_seconds
from smets1.config import FleetConfig, load_config

TARGET_SECONDS = 10.0
TARGET_BYTES_PER_DEVICE = 1_536


def rss_bytes() -> int:
    """The resident set now (not the peak), from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def estate_config(devices: int, faulty_share: float) -> FleetConfig:
    faulty = round(devices * faulty_share)
    acme = (devices - faulty) * 7 // 12
    zeta = devices - faulty - acme
    groups: list[dict[str, Any]] = [
        {"model": "acme-e1", "count": acme, "firmware_version": 0x01000000},
        {"model": "zeta-s1", "count": zeta, "firmware_version": 0x00030001},
        {
            "model": "acme-e1",
            "count": faulty,
            "firmware_version": 0x01000000,
            "link": "gprs-poor",
            "faults": {"block_loss_rate": 0.01, "power_loss_during_transfer": 0.05},
        },
    ]
    return FleetConfig.model_validate(
        {
            "name": "estate",
            "seed": 1,
            "models": [
                {
                    "name": "acme-e1",
                    "manufacturer_code": 0x1234,
                    "image_type": 1,
                    "hardware_version": 3,
                    "slot_capacity_bytes": 1_572_864,
                    "link": "gprs",
                },
                {
                    "name": "zeta-s1",
                    "manufacturer_code": 0x5A45,
                    "image_type": 0x0102,
                    "hardware_version": 1,
                    "slot_capacity_bytes": 2_097_152,
                    "link": {"bandwidth_bps": 40_000, "latency_seconds": 0.8},
                },
            ],
            "devices": [g for g in groups if g["count"] > 0],
        }
    )


def measure(config: FleetConfig, faulty_share: float) -> dict[str, Any]:
    clock = VirtualClock(config.epoch_seconds)
    gc.collect()
    rss0 = rss_bytes()

    async def build() -> tuple[float, int, int]:
        t0, c0 = wall_seconds(), self_cpu_seconds()
        fleet = build_devices(config)
        host = FleetHost(clock, InProcessBus(), config.name, fleet)
        host.start()
        seconds, cpu = wall_seconds() - t0, self_cpu_seconds() - c0
        gc.collect()
        return seconds, cpu, rss_bytes(), len(host.devices)

    seconds, cpu, rss1, built = clock.run(build())
    per_device = (rss1 - rss0) / built
    return {
        "benchmark": "estate-memory",
        "devices": built,
        "faulty_share": faulty_share,
        "build_seconds": round(seconds, 3),
        "build_cpu_seconds": round(cpu, 3),
        "rss_before_bytes": rss0,
        "rss_after_bytes": rss1,
        "rss_delta_per_device_bytes": round(per_device, 1),
        "target_build_seconds": TARGET_SECONDS,
        "target_bytes_per_device": TARGET_BYTES_PER_DEVICE,
        "within_target": seconds < TARGET_SECONDS and per_device < TARGET_BYTES_PER_DEVICE,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_estate_memory", description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--faulty-share", type=float, default=0.0)
    parser.add_argument(
        "--config", help="build the devices of this fleet config instead (e.g. the estate)"
    )
    args = parser.parse_args(argv)
    if args.config:
        config = load_config(args.config)
    else:
        config = estate_config(args.devices, args.faulty_share)
    print(json.dumps(measure(config, args.faulty_share), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
