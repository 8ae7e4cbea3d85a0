"""`python -m bench [NAME [ARGS...]]`: one benchmark by name, or the quick set."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "day12k": "bench.day12k",
    "day12k-mqtt": "bench.day12k_mqtt",
    "scale": "bench.scale_curve",
    "estate-memory": "bench.bench_estate_memory",
    "estate-campaign": "bench.estate_campaign",
    "flash-shard": "bench.flash_shard",
    "mqtt-floor": "bench.mqtt_floor",
    "dco-calls": "bench.dco_calls",
}
QUICK = ["day12k", "scale"]


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks:", ", ".join(BENCHMARKS), "| default:", ", ".join(QUICK))
        return 0
    if args:
        name, rest = args[0], args[1:]
        if name not in BENCHMARKS:
            print(
                f"bench: unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}",
                file=sys.stderr,
            )
            return 2
        return int(importlib.import_module(BENCHMARKS[name]).main(rest))
    for name in QUICK:
        status = importlib.import_module(BENCHMARKS[name]).main([])
        if status:
            return int(status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
