"""Firmware slots: what a device's flash holds, and the flash store behind them.

A slot that holds a complete, verified image points at bytes interned in a `FlashStore`
keyed by the image's SHA-256. Each device still receives and assembles every byte in a
buffer of its own and hashes what it assembled; once the hash proves the contents equal
to an image already interned, the device's buffer is dropped and the slot shares the
interned copy (content-addressed flash). That is what keeps 12,000 devices holding
1 MiB images from needing 24 GiB, without any shortcut in what each device checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator.reception import BlockSink


@dataclass(frozen=True, slots=True)
class SlotImage:
    """A complete image in a slot. Factory firmware is known by its version only."""

    file_version: int
    firmware_hash: bytes | None = None
    data: bytes | None = None

    @property
    def size_bytes(self) -> int:
        return 0 if self.data is None else len(self.data)


#: Assembly buffers a `FlashStore` keeps for the next receptions, per image size.
SPARE_BUFFERS = 8


class FlashStore:
    """Interned image contents, shared by every slot that holds the same bytes.

    It also lends assembly buffers: a reception done with its buffer (verified and
    interned, or failed) gives it back, and the next reception of that size writes over
    it instead of allocating and zeroing a new one. A lent buffer holds an earlier image's
    bytes where no block has been written yet, as real flash does; a reception reads
    only blocks its bitmap says it wrote. With a flash journal (`sink`) nothing is lent:
    the journal may still read a buffer it was told of.
    """

    __slots__ = ("_images", "_spares", "sink")

    def __init__(self) -> None:
        self._images: dict[bytes, bytes] = {}
        self._spares: dict[int, list[bytearray]] = {}
        #: Given to every reception of the devices on this store (None: flash is RAM only).
        self.sink: BlockSink | None = None

    def lend_buffer(self, size: int) -> bytearray:
        """An assembly buffer of `size` bytes: a spare one, else a new one."""
        spares = self._spares.get(size)
        return spares.pop() if spares else bytearray(size)

    def give_back(self, buffer: bytearray) -> None:
        """Keep a buffer its reception is done with, for the next (not with a journal)."""
        if self.sink is not None or not buffer:
            return
        spares = self._spares.setdefault(len(buffer), [])
        if len(spares) < SPARE_BUFFERS:
            spares.append(buffer)

    def intern(self, sha256: bytes, contents: bytes | bytearray | memoryview) -> bytes:
        """The shared copy of `contents`, whose SHA-256 the caller has just computed."""
        held = self._images.get(sha256)
        if held is None:
            held = self._images[sha256] = bytes(contents)
        return held

    def __len__(self) -> int:
        return len(self._images)
