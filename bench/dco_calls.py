"""dco-calls: what an 11.2 costs through the DCO's HTTP route and through its call channel.

    python -m bench dco-calls [--calls N] [--at-once K] [--rounds R] [--split]

One process: a DCO with an in-process fleet of 200 devices (on a clock 200 times real
time), its app served on a free port of 127.0.0.1, and a `DcoClient` calling it. Each
round reads N versions (11.2), K at a time: in process (the DCO's own call: the floor),
over HTTP (`channel=False`) and on the call channel, in turn. CPU seconds are this
process's (user + system, resource.getrusage), so each figure holds both ends of the
call, client and DCO, and the device's answer; what a transport adds is its figure less
the floor's.

With `--split` the DCO and its fleet run in a process of their own, and each round
gives the client's CPU and the DCO process's (from /proc/PID/stat, Linux, 10 ms
ticks) apart; no floor then. Prints one JSON object with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web

from bench.cpu import self_cpu_seconds as _cpu
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


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid`, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    read: Callable[[int], Awaitable[VersionReading]],
    calls: int,
    at_once: int,
    dco_pid: int | None = None,
) -> dict[str, float]:
    gate = asyncio.Semaphore(at_once)

    async def one(n: int) -> None:
        async with gate:
            reading = await read(DEVICE_ID_BASE + 1 + n % DEVICES)
            if not reading.ok:
                raise RuntimeError(f"11.2 not answered: {reading}")

    dco0 = _proc_cpu(dco_pid) if dco_pid is not None else 0.0
    cpu0, wall0 = _cpu(), time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(calls)))
    cpu, wall = _cpu() - cpu0, time.perf_counter() - wall0
    if dco_pid is None:
        return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3)}
    dco = _proc_cpu(dco_pid) - dco0
    return {
        "client_cpu_s": round(cpu, 3),
        "dco_cpu_s": round(dco, 3),
        "cpu_s": round(cpu + dco, 3),
        "wall_s": round(wall, 3),
    }


@contextlib.asynccontextmanager
async def _warm_clients(
    port: int, calls: int, at_once: int
) -> AsyncIterator[tuple[DcoClient, DcoClient]]:
    """A client over HTTP and one over the call channel, warmed up (connections, the
    channel, the devices' first frames)."""
    url = f"http://127.0.0.1:{port}"
    async with (
        DcoClient([url], token=TOKEN, max_in_flight=at_once, channel=False) as http,
        DcoClient([url], token=TOKEN, max_in_flight=at_once, channel=True) as channel,
    ):
        for read in (http.read_firmware_version, channel.read_firmware_version):
            await _measure(read, min(calls, 200), at_once)
        yield http, channel


async def _start_dco(port: int, at_once: int) -> tuple[Dco, InProcessBus, web.AppRunner]:
    """The DCO and its in-process fleet, its HTTP app serving on `port`."""
    cfg = _config()
    clock = ScaledClock(cfg.epoch_seconds, speed=SPEED)
    bus = InProcessBus()
    host = FleetHost(clock, bus, cfg.name, build_devices(cfg))
    dco = Dco(clock, bus, cfg.name, 1, cfg.dco, block_size=cfg.block_size_bytes)
    host.start()
    dco.start()
    runner = web.AppRunner(make_app(dco, token=TOKEN, max_in_flight=at_once), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return dco, bus, runner


async def _serve_dco(port: int, at_once: int, conn: Connection) -> None:
    """The DCO and its fleet, serving on `port` until told to stop through `conn`."""
    dco, bus, runner = await _start_dco(port, at_once)
    conn.send("ready")
    try:
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    finally:
        await runner.cleanup()
        await dco.close()
        await bus.close()


def _dco_process(port: int, at_once: int, conn: Connection) -> None:
    asyncio.run(_serve_dco(port, at_once, conn))


async def _run_split(calls: int, at_once: int, rounds: int) -> dict[str, Any]:
    port = free_port()
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_dco_process, args=(port, at_once, theirs)
    )
    child.start()
    assert child.pid is not None
    results: dict[str, list[dict[str, float]]] = {"http": [], "channel": []}
    try:
        await asyncio.get_running_loop().run_in_executor(None, ours.recv)
        async with _warm_clients(port, calls, at_once) as (http, channel):
            for _ in range(rounds):
                for name, c in (("http", http), ("channel", channel)):
                    results[name].append(
                        await _measure(c.read_firmware_version, calls, at_once, child.pid)
                    )
            assert http.retries == channel.retries == 0
    finally:
        ours.send("stop")
        child.join(30)
    least = {
        k: {side: min(r[side] for r in v) for side in ("client_cpu_s", "dco_cpu_s", "cpu_s")}
        for k, v in results.items()
    }
    return {
        "benchmark": "dco-calls --split",
        "calls": calls,
        "at_once": at_once,
        "rounds": results,
        "least": least,
        "us_per_call": {
            k: {side: round(x / calls * 1e6, 1) for side, x in v.items()} for k, v in least.items()
        },
        "machine": machine(),
    }


async def _run(calls: int, at_once: int, rounds: int) -> dict[str, Any]:
    port = free_port()
    dco, bus, runner = await _start_dco(port, at_once)
    results: dict[str, list[dict[str, float]]] = {"in_process": [], "http": [], "channel": []}
    try:
        async with _warm_clients(port, calls, at_once) as (http, channel):
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
    parser.add_argument(
        "--split", action="store_true", help="the DCO in a process of its own; CPU by side"
    )
    args = parser.parse_args(argv)
    if args.calls < 1 or args.at_once < 1 or args.rounds < 1:
        parser.error("--calls, --at-once and --rounds must be at least 1")
    run = _run_split if args.split else _run
    print(json.dumps(asyncio.run(run(args.calls, args.at_once, args.rounds)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
