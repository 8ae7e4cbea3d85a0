"""dco-calls: what an 11.2 costs through the DCO's HTTP route and through its call channel.

    python -m bench dco-calls [--calls N] [--at-once K] [--rounds R]

One process: a DCO with an in-process fleet of 200 devices (on a clock 200 times real
time), its app served on a free port of 127.0.0.1, and a `DcoClient` calling it. Each
round reads N versions (11.2), K at a time: in process (the DCO's own call: the floor),
over HTTP (`channel=False`) and on the call channel, in turn. CPU seconds are this
process's (user + system, resource.getrusage), so each figure holds both ends of the
call, client and DCO, and the device's answer; what a transport adds is its figure less
the floor's. Prints one JSON object with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bench.machine import machine
from dco_mock.http_api import make_app
from dco_mock.service import Dco
from emulator.fleet import FleetHost, build_devices
from orchestrator.dco_client import DcoClient
from orchestrator.mosquitto import free_port
from smets1.bus import InProcessBus
from smets1.clock import ScaledClock
from smets1.config import DEVICE_ID_BASE, FleetConfig
from smets1.services import VersionReading

TOKEN = "bench-dco-calls"
DEVICES = 200
SPEED = 200.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _config() -> FleetConfig:
    return FleetConfig.model_validate(
        {
            "name": "bench-calls",
            "seed": 1,
            "models": [
                {
                    "name": "acme-e1",
                    "manufacturer_code": 0x1234,
                    "image_type": 1,
                    "hardware_version": 3,
                    "slot_capacity_bytes": 65536,
                    "reboot_seconds": 30,
                    "link": {"bandwidth_bps": 1_000_000, "latency_seconds": 0.05},
                }
            ],
            "devices": [{"model": "acme-e1", "count": DEVICES, "firmware_version": 0x01000000}],
            "images": [],
            "campaigns": [],
        }
    )


async def _measure(
    read: Callable[[int], Awaitable[VersionReading]], calls: int, at_once: int
) -> dict[str, float]:
    gate = asyncio.Semaphore(at_once)

    async def one(n: int) -> None:
        async with gate:
            reading = await read(DEVICE_ID_BASE + 1 + n % DEVICES)
            if not reading.ok:
                raise RuntimeError(f"11.2 not answered: {reading}")

    cpu0, wall0 = _cpu(), time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(calls)))
    cpu, wall = _cpu() - cpu0, time.perf_counter() - wall0
    return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3)}


async def _run(calls: int, at_once: int, rounds: int) -> dict[str, Any]:
    cfg = _config()
    clock = ScaledClock(cfg.epoch_seconds, speed=SPEED)
    bus = InProcessBus()
    host = FleetHost(clock, bus, cfg.name, build_devices(cfg))
    dco = Dco(clock, bus, cfg.name, 1, cfg.dco, block_size=cfg.block_size_bytes)
    host.start()
    dco.start()
    runner = web.AppRunner(make_app(dco, token=TOKEN, max_in_flight=at_once), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    results: dict[str, list[dict[str, float]]] = {"in_process": [], "http": [], "channel": []}
    try:
        async with (
            DcoClient([url], token=TOKEN, max_in_flight=at_once, channel=False) as http,
            DcoClient([url], token=TOKEN, max_in_flight=at_once, channel=True) as channel,
        ):
            # Warm up: connections, the channel, the devices' first frames.
            for read in (http.read_firmware_version, channel.read_firmware_version):
                await _measure(read, min(calls, 200), at_once)
            for _ in range(rounds):
                results["in_process"].append(
                    await _measure(dco.read_firmware_version, calls, at_once)
                )
                results["http"].append(await _measure(http.read_firmware_version, calls, at_once))
                results["channel"].append(
                    await _measure(channel.read_firmware_version, calls, at_once)
                )
            assert http.retries == channel.retries == 0
    finally:
        await runner.cleanup()
        await dco.close()
        await bus.close()
    floor = min(r["cpu_s"] for r in results["in_process"])
    best = {k: min(r["cpu_s"] for r in v) for k, v in results.items()}
    return {
        "benchmark": "dco-calls",
        "calls": calls,
        "at_once": at_once,
        "rounds": results,
        "least_cpu_s": best,
        "transport_us_per_call": {
            k: round((best[k] - floor) / calls * 1e6, 1) for k in ("http", "channel")
        },
        "machine": machine(),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench dco-calls", description=__doc__)
    parser.add_argument("--calls", type=int, default=2_000, help="11.2s a round (2,000)")
    parser.add_argument("--at-once", type=int, default=100, help="calls in flight (100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (3)")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.at_once < 1 or args.rounds < 1:
        parser.error("--calls, --at-once and --rounds must be at least 1")
    print(json.dumps(asyncio.run(_run(args.calls, args.at_once, args.rounds)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
