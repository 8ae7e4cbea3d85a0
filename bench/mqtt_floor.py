"""mqtt-floor: what the MQTT stack alone costs on this machine, per message and per GiB,
and so what a distributed demo day's messages and bytes cost with it.

    python -m bench mqtt-floor [--messages 5000] [--mib 512]
                               [--messages-per-device 6.5] [--devices 12000]
                               [--image-mib 1] [--twin-cpu 44.8]

Two processes with nothing in them but an aiomqtt client each (MQTT v5, QoS 1, and
paho with `smets1.paho_copies`, as smets1.mqtt uses them; `--plain-paho` without it),
through a private Mosquitto:

* **per message**: the publisher sends `--messages` small messages (60 bytes) one at a
  time, each once the last one's PUBACK is back, so that every message wakes each
  process on its own, as at `--speed auto`, where messages seldom arrive together; CPU
  of each side and of the broker, per message, from the first message to the last
  (start-up excluded). Messages that do arrive together share their wake-ups and cost
  less: this is an estimate of a paced run, not a bound below every run.
* **per GiB**: `--mib` MiB in messages of 2 MiB (a DCO round of blocks), up to 8 at once.

From those, the floor of a demo day: its MQTT messages (`--messages-per-device` times
`--devices`: 6.5 on the demo day, 3.1 DCO → shard and 3.4 back, from a run's status
files) and its bytes (`--devices` × `--image-mib`), beside the in-process twin's CPU
(`--twin-cpu`, from `python -m bench day12k-mqtt`) and issue 11's bound of 2.5 times it.
The estimate leaves out everything else a run does (the devices' own work, which the twin
does too, the scheduler's calls to the DCO, start-up), so a run costs more than it.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from bench.machine import machine
from orchestrator.mosquitto import Mosquitto, cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
BOUND = 2.5

_SIDE = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    import aiomqtt
    if sys.argv[6] == "patched":
        from smets1.paho_copies import install
        install()
    role = sys.argv[1]
    port, count, size, window = (int(x) for x in sys.argv[2:6])

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    async def main():
        async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5,
                                  max_inflight_messages=64) as c:
            if role == "sub":
                await c.subscribe("floor/#", qos=1)
                print("ready", flush=True)
                n, start = 0, None
                async for m in c.messages:
                    if start is None:
                        start = cpu()
                    if m.topic.value == "floor/end":
                        break
                    n += 1
                print(json.dumps({"messages": n, "cpu": cpu() - start}), flush=True)
                return
            sys.stdin.readline()  # the subscriber is ready
            payload = bytes(size)
            start = cpu()
            pending = set()
            for _ in range(count):
                task = asyncio.ensure_future(c.publish("floor/x", payload, qos=1))
                pending.add(task)
                task.add_done_callback(pending.discard)
                if len(pending) >= window:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if pending:
                await asyncio.wait(pending)
            print(json.dumps({"messages": count, "cpu": cpu() - start}), flush=True)
            await c.publish("floor/end", b"", qos=1)

    asyncio.run(main())
    """
)


def _pair(
    port: int, broker_pid: int, count: int, size: int, window: int, paho: str
) -> dict[str, float]:
    """CPU seconds of publisher, subscriber and broker for `count` messages of `size`,
    `window` of them awaiting their PUBACK at once."""
    args = [str(port), str(count), str(size), str(window), paho]
    sub = subprocess.Popen(
        [sys.executable, "-c", _SIDE, "sub", *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert sub.stdout is not None
    if sub.stdout.readline().strip() != "ready":
        raise SystemExit("mqtt-floor: the subscriber did not start")
    broker_before = cpu_seconds(broker_pid) or 0.0
    pub = subprocess.run(
        [sys.executable, "-c", _SIDE, "pub", *args],
        input="go\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    sub_out, _ = sub.communicate(timeout=600)
    broker = (cpu_seconds(broker_pid) or 0.0) - broker_before
    p, s = json.loads(pub.stdout.splitlines()[-1]), json.loads(sub_out.splitlines()[-1])
    if s["messages"] != count:
        raise SystemExit(f"mqtt-floor: {s['messages']} of {count} messages arrived")
    return {"publisher": p["cpu"], "subscriber": s["cpu"], "broker": broker}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench mqtt-floor")
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--messages-per-device", type=float, default=6.5)
    ap.add_argument("--devices", type=int, default=12_000)
    ap.add_argument("--image-mib", type=float, default=1.0)
    ap.add_argument("--twin-cpu", type=float, default=44.8)
    ap.add_argument(
        "--plain-paho", action="store_true", help="without smets1.paho_copies (the roles use it)"
    )
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smets1-floor-") as tmp, Mosquitto(Path(tmp)) as mq:
        assert mq.proc is not None
        paho = "plain" if a.plain_paho else "patched"
        small = _pair(mq.port, mq.proc.pid, a.messages, 60, 1, paho)
        big_count = max(1, a.mib // 2)
        big = _pair(mq.port, mq.proc.pid, big_count, 2 * 2**20, 8, paho)
    per_message = {k: v / a.messages * 1e6 for k, v in small.items()}
    gib = big_count * 2 / 1024
    per_gib = {k: v / gib for k, v in big.items()}
    messages = a.messages_per_device * a.devices
    day_gib = a.devices * a.image_mib / 1024
    floor_messages = messages * sum(per_message.values()) / 1e6
    floor_bytes = day_gib * sum(per_gib.values())
    result: dict[str, Any] = {
        "benchmark": "mqtt-floor",
        "machine": machine(),
        "paho": "plain" if a.plain_paho else "smets1.paho_copies installed",
        "cpu_us_per_message": {k: round(v, 1) for k, v in per_message.items()},
        "cpu_seconds_per_gib": {k: round(v, 3) for k, v in per_gib.items()},
        "demo_day": {
            "mqtt_messages": round(messages),
            "gib": round(day_gib, 2),
            "floor_cpu_seconds_messages": round(floor_messages, 1),
            "floor_cpu_seconds_bytes": round(floor_bytes, 1),
            "twin_cpu_seconds": a.twin_cpu,
            "floor_with_twin_cpu_seconds": round(floor_messages + floor_bytes + a.twin_cpu, 1),
            "bound_cpu_seconds": round(BOUND * a.twin_cpu, 1),
            "floor_ratio": round((floor_messages + floor_bytes + a.twin_cpu) / a.twin_cpu, 2),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
