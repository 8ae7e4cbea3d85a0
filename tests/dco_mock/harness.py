"""A real DCO, fleet host and in-process bus on a virtual clock, for tests of whole 11.3s.

The DCO is the subject; the fleet is the real one, so what a test checks is the DCO
against real devices, links and faults, not against a stand-in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dco_mock.service import Dco, Recovery
from emulator.fleet import FleetHost, build_devices
from smets1.bus import InProcessBus
from smets1.clock import VirtualClock
from smets1.config import DEVICE_ID_BASE, FleetConfig
from tests.factories import tiny_config

T = TypeVar("T")

#: The first device of a harness fleet.
FIRST = DEVICE_ID_BASE + 1
#: Blocks small enough that a tiny image still has tens of them, in runs of a few.
BLOCK_BYTES = 256

#: Quick retries so a test crosses an offline stretch in few steps of virtual time.
QUICK = Recovery(retry_initial_seconds=30.0, retry_max_seconds=600.0, give_up_seconds=86_400.0)


def fleet_config(
    groups: list[dict[str, Any]] | None = None,
    link: dict[str, Any] | str | None = None,
    dco: dict[str, Any] | None = None,
    **model: Any,
) -> FleetConfig:
    """tiny_config with 256-byte blocks, runs of 8, a 2 kbit/s link by default."""
    raw = tiny_config(
        block_size_bytes=BLOCK_BYTES,
        dco={"run_blocks": 8, "reply_timeout_seconds": 600, "max_rounds": 4, **(dco or {})},
    )
    m = raw["models"][0]
    m["link"] = link if link is not None else {"bandwidth_bps": 2_000, "latency_seconds": 1.0}
    m.update(model)
    if groups is not None:
        raw["devices"] = [{"model": "acme-e1", "firmware_version": 0x01000000, **g} for g in groups]
    return FleetConfig.model_validate(raw)


class TamperingBus(InProcessBus):
    """An in-process bus that passes every payload through `tamper` on its way."""

    def __init__(self, tamper: Callable[[bytes], bytes]) -> None:
        super().__init__()
        self.tamper = tamper

    def publish(self, topic: str, payload: bytes, sent_at: float | None = None) -> None:
        super().publish(topic, self.tamper(payload))


@dataclass
class Harness:
    clock: VirtualClock
    bus: InProcessBus
    host: FleetHost
    dco: Dco


def run(
    config: FleetConfig,
    body: Callable[[Harness], Awaitable[T]],
    recovery: Recovery = QUICK,
    bus: InProcessBus | None = None,
) -> T:
    """Build the fleet and a DCO on one bus, run `body` on the virtual clock, tidy up."""
    clock = VirtualClock(config.epoch_seconds)

    async def main() -> T:
        bus_ = bus if bus is not None else InProcessBus()
        host = FleetHost(clock, bus_, config.name, build_devices(config))
        dco = Dco(
            clock,
            bus_,
            config.name,
            1,
            config.dco,
            block_size=config.block_size_bytes,
            recovery=recovery,
        )
        host.start()
        dco.start()
        try:
            return await body(Harness(clock, bus_, host, dco))
        finally:
            await dco.close()
            await bus_.close()

    return clock.run(main())
