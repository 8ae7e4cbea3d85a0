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


class FlashStore:
    """Interned image contents, shared by every slot that holds the same bytes."""

    __slots__ = ("_images", "sink")

    def __init__(self) -> None:
        self._images: dict[bytes, bytes] = {}
        #: Given to every reception of the devices on this store (None: flash is RAM only).
        self.sink: BlockSink | None = None

    def intern(self, sha256: bytes, contents: bytes | bytearray | memoryview) -> bytes:
        """The shared copy of `contents`, whose SHA-256 the caller has just computed."""
        held = self._images.get(sha256)
        if held is None:
            held = self._images[sha256] = bytes(contents)
        return held

    def __len__(self) -> int:
        return len(self._images)
