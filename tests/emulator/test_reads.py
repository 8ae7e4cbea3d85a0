"""Background reads at the device and on its link (issue 16): a device answers a read
unless it is off or offline; a read waits on the link behind the blocks already on their
way, so a device receiving a transfer answers later than an idle one."""

from __future__ import annotations

from typing import Any

from emulator.fleet import LINK_OVERHEAD_BYTES, FleetHost, build_devices
from smets1.bus import InProcessBus, down_topic, up_topic
from smets1.clock import VirtualClock
from smets1.codes import ReadKind
from smets1.config import DEVICE_ID_BASE, FleetConfig
from smets1.image import parse_image
from smets1.wire import Blocks, Initiate, Reading, ReadRequest, decode
from tests.factories import make_image, tiny_config

BUSY = DEVICE_ID_BASE + 1
IDLE = DEVICE_ID_BASE + 2
BLOCK = 256
IMAGE = make_image(8_000)
BANDWIDTH_BPS = 2_000.0
LATENCY_SECONDS = 1.0


def config(**link: Any) -> FleetConfig:
    raw = tiny_config(block_size_bytes=BLOCK)
    raw["models"][0]["link"] = {
        "bandwidth_bps": BANDWIDTH_BPS,
        "latency_seconds": LATENCY_SECONDS,
        **link,
    }
    raw["devices"][0]["count"] = 2
    return FleetConfig.model_validate(raw)


def read(device_id: int, tid: int, data_bytes: int = 79) -> bytes:
    return ReadRequest(device_id, tid, ReadKind.READ_REGISTERS, data_bytes, bytes(45)).serialize()


def reads_answered(
    cfg: FleetConfig, transfer_to_busy: bool, before_reads: Any = None
) -> tuple[dict[int, float], FleetHost]:
    """Send BUSY the whole image (or not), then a read to each device at once; the
    simulated seconds each read took to be answered, by device."""
    clock = VirtualClock(cfg.epoch_seconds)
    answered: dict[int, float] = {}

    async def main() -> FleetHost:
        bus = InProcessBus()
        host = FleetHost(clock, bus, cfg.name, build_devices(cfg))
        host.start()
        sent = clock.now()

        def on_up(topic: str, payload: bytes) -> None:
            frame = decode(payload)
            if isinstance(frame, Reading):
                assert len(frame.data) == 79
                answered[frame.device_id] = clock.now() - sent

        bus.subscribe(up_topic(cfg.name, "+"), on_up)
        down = down_topic(cfg.name, 0)
        if transfer_to_busy:
            fw = parse_image(IMAGE).firmware_hash
            bus.publish(down, Initiate(BUSY, 1, len(IMAGE), BLOCK, fw).serialize())
            for first in range(0, -(-len(IMAGE) // BLOCK), 8):
                chunk = IMAGE[first * BLOCK : (first + 8) * BLOCK]
                bus.publish(down, Blocks.build(BUSY, 1, first, chunk, BLOCK).serialize())
        if before_reads is not None:
            before_reads(host)
        bus.publish(down, read(BUSY, 100))
        bus.publish(down, read(IDLE, 101))
        await clock.sleep(3_600)
        await bus.close()
        return host

    host = clock.run(main())
    return answered, host


def test_an_idle_device_answers_in_the_links_time_for_both_frames() -> None:
    answered, _ = reads_answered(config(), transfer_to_busy=False)
    expected = (
        LATENCY_SECONDS
        + (64 + LINK_OVERHEAD_BYTES) * 8 / BANDWIDTH_BPS  # the request, down
        + (96 + LINK_OVERHEAD_BYTES) * 8 / BANDWIDTH_BPS  # the answer, up
    )
    assert answered[IDLE] == answered[BUSY]
    assert abs(answered[IDLE] - expected) < 1e-6


def test_a_device_receiving_a_transfer_answers_later_than_an_idle_one() -> None:
    answered, host = reads_answered(config(), transfer_to_busy=True)
    quiet, _ = reads_answered(config(), transfer_to_busy=False)
    # Behind about 8 KB of blocks on a 2 kbit/s link: more than half a minute later.
    image_seconds = len(IMAGE) * 8 / BANDWIDTH_BPS
    assert answered[BUSY] > answered[IDLE] + image_seconds
    assert answered[IDLE] == quiet[IDLE]
    assert host.devices[BUSY].state.name == "VERIFIED"  # the read did not disturb it


def test_a_device_off_or_offline_does_not_answer() -> None:
    def cut_busy(host: FleetHost) -> None:
        host.power_cut(BUSY, 600)

    answered, _ = reads_answered(config(), transfer_to_busy=False, before_reads=cut_busy)
    assert BUSY not in answered and IDLE in answered

    raw = tiny_config(block_size_bytes=BLOCK)
    raw["devices"] = [
        {"model": "acme-e1", "count": 1, "firmware_version": 0x01000000,
         "faults": {"offline_windows": [{"start_seconds": 0, "duration_seconds": 7_200}]}},
        {"model": "acme-e1", "count": 1, "firmware_version": 0x01000000},
    ]  # fmt: skip
    answered, host = reads_answered(FleetConfig.model_validate(raw), transfer_to_busy=False)
    assert BUSY not in answered and IDLE in answered
    assert host.counters.frames_dropped["offline"] == 1


def test_reads_leave_an_idle_device_as_small_as_it_was() -> None:
    # A jittery link draws a die for each frame: a read's comes from the host's stream,
    # never a new stream of the device's own.
    answered, host = reads_answered(config(jitter_seconds=0.5), transfer_to_busy=False)
    assert set(answered) == {BUSY, IDLE}
    assert answered[BUSY] != answered[IDLE]  # each read drew its own jitter
    for device in host.devices.values():
        assert device.rng is None and device.rng_streams == 0
