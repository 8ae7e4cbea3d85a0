"""The DCO's image store (SRV 11.1): blocks kept in SQLite (WAL) until all have arrived.

An image is stored block by block; when the last block is in, the image is assembled,
parsed, hashed and recorded as complete, which is what triggers the 11.1 response. A
restarted DCO finds its complete images (and any half-stored one) where it left them.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from dco_mock.errors import ImageRejected, UnknownImage
from smets1.crc import crc32
from smets1.image import ImageError, parse_image
from smets1.services import StoredImage
from smets1.wire import blocks_body, blocks_frame

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    sha256 BLOB PRIMARY KEY,          -- of the whole file, the upload's identity
    firmware_hash BLOB,               -- what an 11.3 names; NULL until complete
    size_bytes INTEGER NOT NULL,
    block_size INTEGER NOT NULL,
    blocks INTEGER NOT NULL,
    file_version INTEGER,
    manufacturer_code INTEGER,
    image_type INTEGER,
    stored_at REAL
);
CREATE INDEX IF NOT EXISTS images_by_hash ON images (firmware_hash);
CREATE TABLE IF NOT EXISTS image_blocks (
    sha256 BLOB NOT NULL,
    block INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (sha256, block)
);
"""


@dataclass(frozen=True, slots=True)
class HeldImage:
    """A complete image in memory, ready to be sent."""

    info: StoredImage
    data: bytes
    block_size: int
    #: CRC-32 of every block, computed once per image rather than once per send.
    crcs: tuple[int, ...]

    #: The frame body (`smets1.wire.blocks_body`), run CRC and byte count of each run
    #: sent so far, by (first block, count): every device of a campaign is sent the same
    #: runs, so each is built once per image and only the head changes per device.
    run_bodies: dict[tuple[int, int], tuple[bytes, int, int]] = field(default_factory=dict)

    def run(self, first_block: int, count: int) -> tuple[tuple[int, ...], memoryview, int]:
        """The block CRCs, bytes (no copy) and run CRC of `count` blocks from `first_block`
        (computed each call: `run_frame` keeps what it builds from them)."""
        bs = self.block_size
        view = memoryview(self.data)[first_block * bs : (first_block + count) * bs]
        return self.crcs[first_block : first_block + count], view, crc32(view)

    def run_frame(
        self, device_id: int, transfer_id: int, first_block: int, count: int
    ) -> tuple[bytes, int]:
        """The BLOCKS frame of `count` blocks from `first_block` for one device, and how
        many image bytes it carries."""
        key = (first_block, count)
        built = self.run_bodies.get(key)
        if built is None:
            crcs, view, run_crc = self.run(first_block, count)
            built = self.run_bodies[key] = (blocks_body(crcs, view), run_crc, len(view))
        body, run_crc, nbytes = built
        return blocks_frame(device_id, transfer_id, first_block, run_crc, count, body), nbytes


class ImageStore:
    """Images by FirmwareHash, persisted in `<state_dir>/dco.sqlite`."""

    def __init__(self, state_dir: Path | None, block_size: int = 1024) -> None:
        self.block_size = block_size
        path = ":memory:" if state_dir is None else str(Path(state_dir) / "dco.sqlite")
        if state_dir is not None:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._held: dict[bytes, HeldImage] = {}

    def close(self) -> None:
        self._db.close()

    def known(self, data: bytes) -> StoredImage | None:
        """The stored image `data` is, if it is stored complete; rejected (ImageRejected)
        at once if it does not parse, before any processing time is spent on it."""
        try:
            parse_image(data)
        except ImageError as exc:
            raise ImageRejected(f"11.1 image rejected: {exc}") from exc
        row = self._db.execute(
            "SELECT firmware_hash FROM images WHERE sha256 = ? AND firmware_hash IS NOT NULL",
            (hashlib.sha256(data).digest(),),
        ).fetchone()
        return None if row is None else self.get(row[0]).info

    def store(self, data: bytes, now: float) -> StoredImage:
        """Store every block of `data`; when all are in, record the image as complete."""
        try:
            image = parse_image(data)
        except ImageError as exc:
            raise ImageRejected(f"11.1 image rejected: {exc}") from exc
        file_sha = hashlib.sha256(data).digest()
        known = self._db.execute(
            "SELECT firmware_hash FROM images WHERE sha256 = ? AND firmware_hash IS NOT NULL",
            (file_sha,),
        ).fetchone()
        if known is not None:
            return self.get(known[0]).info
        bs = self.block_size
        blocks = -(-len(data) // bs)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR IGNORE INTO images (sha256, size_bytes, block_size, blocks)"
                " VALUES (?, ?, ?, ?)",
                (file_sha, len(data), bs, blocks),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO image_blocks (sha256, block, data) VALUES (?, ?, ?)",
                ((file_sha, i, data[i * bs : (i + 1) * bs]) for i in range(blocks)),
            )
        return self._complete(file_sha, image.header.file_version, now)

    def _complete(self, file_sha: bytes, file_version: int, now: float) -> StoredImage:
        rows = self._db.execute(
            "SELECT data FROM image_blocks WHERE sha256 = ? ORDER BY block", (file_sha,)
        ).fetchall()
        data = b"".join(r[0] for r in rows)
        if hashlib.sha256(data).digest() != file_sha:
            raise ImageRejected("stored blocks do not add up to the uploaded image")
        image = parse_image(data)
        h = image.header
        self._db.execute(
            "UPDATE images SET firmware_hash = ?, file_version = ?, manufacturer_code = ?,"
            " image_type = ?, stored_at = ? WHERE sha256 = ?",
            (image.firmware_hash, h.file_version, h.manufacturer_code, h.image_type, now, file_sha),
        )
        info = StoredImage(
            firmware_hash=image.firmware_hash,
            size_bytes=len(data),
            file_version=h.file_version,
            manufacturer_code=h.manufacturer_code,
            image_type=h.image_type,
            blocks=len(rows),
            stored_at=now,
        )
        crcs = tuple(crc32(r[0]) for r in rows)
        self._held[info.firmware_hash] = HeldImage(info, data, self.block_size, crcs)
        return info

    def get(self, firmware_hash: bytes) -> HeldImage:
        held = self._held.get(firmware_hash)
        if held is not None:
            return held
        row = self._db.execute(
            "SELECT sha256, file_version, stored_at FROM images WHERE firmware_hash = ?",
            (firmware_hash,),
        ).fetchone()
        if row is None:
            raise UnknownImage(firmware_hash)
        self._complete(row[0], row[1], row[2])
        return self._held[firmware_hash]

    @property
    def loaded(self) -> int:
        """Complete images assembled in memory (an image is loaded when first sent)."""
        return len(self._held)

    def count(self) -> int:
        """How many complete images are stored, without loading any of them."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM images WHERE firmware_hash IS NOT NULL"
        ).fetchone()
        return int(row[0])

    def images(self) -> list[StoredImage]:
        rows = self._db.execute(
            "SELECT firmware_hash FROM images WHERE firmware_hash IS NOT NULL"
        ).fetchall()
        return [self.get(r[0]).info for r in rows]
