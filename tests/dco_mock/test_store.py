"""The DCO's image store (SRV 11.1): blocks in SQLite, complete images by FirmwareHash."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from dco_mock.errors import ImageRejected, UnknownImage
from dco_mock.store import ImageStore
from smets1.image import parse_image
from tests.factories import make_image

IMAGE = make_image(5_000)


def test_stores_every_block_and_answers_with_the_firmware_hash(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, block_size=256)
    info = store.store(IMAGE, now=10.0)
    assert info.firmware_hash == parse_image(IMAGE).firmware_hash
    assert (info.size_bytes, info.blocks) == (len(IMAGE), -(-len(IMAGE) // 256))
    held = store.get(info.firmware_hash)
    assert held.data == IMAGE
    crcs, view, _ = held.run(1, 3)
    assert bytes(view) == IMAGE[256 : 4 * 256] and len(crcs) == 3
    rows = (
        sqlite3.connect(tmp_path / "dco.sqlite")
        .execute("SELECT COUNT(*) FROM image_blocks")
        .fetchone()
    )
    assert rows[0] == info.blocks
    store.close()


def test_storing_the_same_file_twice_keeps_one_copy(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, block_size=256)
    first = store.store(IMAGE, now=1.0)
    again = store.store(IMAGE, now=2.0)
    assert again == first and store.count() == 1
    store.close()


def test_a_restarted_store_finds_its_images_and_loads_them_when_asked(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, block_size=256)
    info = store.store(IMAGE, now=1.0)
    store.close()
    reopened = ImageStore(tmp_path, block_size=256)
    assert (reopened.count(), reopened.loaded) == (1, 0)
    assert reopened.get(info.firmware_hash).data == IMAGE
    assert reopened.loaded == 1
    assert reopened.images() == [info]
    reopened.close()


def test_a_file_that_is_not_an_image_is_rejected_and_nothing_is_stored(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(ImageRejected, match="magic at offset 0"):
        store.store(b"\x00" * 100, now=1.0)
    assert store.count() == 0
    store.close()


def test_an_unknown_firmware_hash_names_the_hash() -> None:
    store = ImageStore(None)
    wanted = hashlib.sha256(b"nothing").digest()
    with pytest.raises(UnknownImage, match=wanted.hex()):
        store.get(wanted)
    store.close()


def test_blocks_changed_on_disk_are_refused_when_loaded(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, block_size=256)
    info = store.store(IMAGE, now=1.0)
    store.close()
    db = sqlite3.connect(tmp_path / "dco.sqlite")
    db.execute("UPDATE image_blocks SET data = ? WHERE block = 3", (b"\xff" * 256,))
    db.commit()
    db.close()
    reopened = ImageStore(tmp_path, block_size=256)
    with pytest.raises(ImageRejected, match="do not add up"):
        reopened.get(info.firmware_hash)
    reopened.close()
