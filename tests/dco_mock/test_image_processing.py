"""SRV 11.1 at the DCO takes time: a fixed part, the image's bytes at a rate, stretched by
the DCO's load, and a turn at a processing worker. It is answered when stored."""

from __future__ import annotations

import asyncio

import pytest

from dco_mock.errors import ImageRejected
from smets1.config_dcc import DcoConfig
from tests.dco_mock.harness import FIRST, Harness, fleet_config, run
from tests.factories import make_image

SMALL = make_image(8_000)
BIG = make_image(80_000, version=0x03000000)
SLOW = {
    "image_processing_seconds": 100.0,
    "image_processing_bytes_per_second": 1_000.0,
    "image_processing_load_factor": 4.0,
    "max_concurrent_transfers": 2,
}


def test_defaults_are_documented_figures() -> None:
    cfg = DcoConfig()
    assert cfg.image_processing_seconds == 60.0
    assert cfg.image_processing_bytes_per_second == 10_000.0
    assert cfg.image_processing_load_factor == 4.0
    assert cfg.image_processing_workers == 1


def test_stored_after_its_processing_time_which_grows_with_size() -> None:
    async def body(h: Harness) -> tuple[float, float, float]:
        t0 = h.clock.now()
        small = await h.dco.update_firmware(SMALL)
        t1 = h.clock.now()
        big = await h.dco.update_firmware(BIG)
        t2 = h.clock.now()
        assert small.stored_at == t1 and big.stored_at == t2
        # The same image again: already stored, answered at once.
        assert await h.dco.update_firmware(SMALL) == small
        assert h.clock.now() == t2
        return t1 - t0, t2 - t1, h.dco.counters.image_processing_seconds

    small_s, big_s, total = run(fleet_config([{"count": 1}], dco=SLOW), body)
    assert small_s == pytest.approx(100.0 + len(SMALL) / 1_000.0)
    assert big_s == pytest.approx(100.0 + len(BIG) / 1_000.0)
    assert total == pytest.approx(small_s + big_s)


def test_processing_stretches_with_the_dcos_load() -> None:
    async def body(h: Harness) -> tuple[float, float]:
        idle = h.dco.image_processing_seconds(len(BIG))
        stored = await h.dco.update_firmware(SMALL)
        # One 11.3 in flight of two slots: the load is a half, the time x (1 + 4 x 0.5).
        transfer = asyncio.create_task(h.dco.activate_firmware(FIRST, stored.firmware_hash))
        await h.clock.sleep(1.0)
        assert h.dco.counters.in_flight == 1
        t = h.clock.now()
        await h.dco.update_firmware(BIG)
        loaded = h.clock.now() - t
        await transfer
        return idle, loaded

    idle, loaded = run(fleet_config([{"count": 1}], dco=SLOW), body)
    assert idle == pytest.approx(100.0 + len(BIG) / 1_000.0)
    assert loaded == pytest.approx(idle * 3.0)


def test_images_wait_their_turn_at_the_workers() -> None:
    async def body(h: Harness) -> list[float]:
        t0 = h.clock.now()
        done: list[float] = []

        async def one(image: bytes) -> None:
            await h.dco.update_firmware(image)
            done.append(h.clock.now() - t0)

        first = asyncio.create_task(one(BIG))
        second = asyncio.create_task(one(SMALL))
        await asyncio.sleep(0)
        assert (h.dco.counters.images_processing, h.dco.counters.images_waiting) == (1, 1)
        await asyncio.gather(first, second)
        assert (h.dco.counters.images_processing, h.dco.counters.images_waiting) == (0, 0)
        return done

    done = run(fleet_config([{"count": 1}], dco=SLOW), body)
    big_s = 100.0 + len(BIG) / 1_000.0
    assert done == pytest.approx([big_s, big_s + 100.0 + len(SMALL) / 1_000.0])


def test_an_image_that_does_not_parse_is_rejected_at_once() -> None:
    async def body(h: Harness) -> None:
        t = h.clock.now()
        with pytest.raises(ImageRejected, match=r"11\.1 image rejected"):
            await h.dco.update_firmware(b"\x00" * 100)
        assert h.clock.now() == t and h.dco.counters.images_waiting == 0

    run(fleet_config([{"count": 1}], dco=SLOW), body)


def test_bad_processing_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="image_processing_bytes_per_second"):
        DcoConfig.model_validate({"image_processing_bytes_per_second": 0})
    with pytest.raises(ValueError, match="image_processing_workers"):
        DcoConfig.model_validate({"image_processing_workers": 0})
