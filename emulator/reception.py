"""Block reception into the inactive slot, after DLMS Image Transfer (class 18).

Blocks arrive in runs, in any order, twice or not at all. Each block is checked against
its CRC-32 before it is copied; a bad one is rejected and counted. A bitmap of held blocks
gives the first missing block, so an interrupted transfer resumes where it stopped.

The buffer and the bitmap stand for the inactive slot's flash: they survive a power cut
(see emulator.device). Only the counters of corrupt and duplicate blocks are RAM. The
buffer is allocated when the first block is written, so a device that answered INITIATE
and then heard nothing more (its 11.3 failed) holds no image-sized buffer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from smets1.crc import crc32
from smets1.wire import NO_BLOCK

#: Told of every run of blocks written into a reception: (reception, first block, block
#: count, the bytes written). The flash journal (emulator.flash_journal) is one.
BlockSink = Callable[["Reception", int, int, memoryview], None]

_ONE = b"\x01"


class Reception:
    """An image being assembled: the buffer, the bitmap, the counters."""

    __slots__ = (
        "block_count",
        "block_size",
        "buffer",
        "corrupt_blocks",
        "duplicate_blocks",
        "firmware_hash",
        "have",
        "image_size",
        "lend",
        "received",
        "sink",
        "transfer_id",
    )

    def __init__(
        self,
        transfer_id: int,
        image_size: int,
        block_size: int,
        firmware_hash: bytes,
        sink: BlockSink | None = None,
        lend: Callable[[int], bytearray] = bytearray,
    ):
        self.transfer_id = transfer_id
        self.image_size = image_size
        self.block_size = block_size
        self.firmware_hash = firmware_hash
        self.block_count = -(-image_size // block_size)
        #: Empty until the first block is written; then `image_size` bytes.
        self.buffer = bytearray()
        # One byte per block (0 or 1): slices make runs cheap; packed to bits on the wire.
        self.have = bytearray(self.block_count)
        self.received = 0
        self.corrupt_blocks = 0
        self.duplicate_blocks = 0
        #: Told of each run written, so that a flash journal can keep it (None: RAM only).
        self.sink = sink
        #: Gives the buffer on the first write: a new zeroed one, or a flash store's spare
        #: (`FlashStore.lend_buffer`), whose unwritten blocks hold older bytes.
        self.lend = lend

    @property
    def complete(self) -> bool:
        return self.received == self.block_count

    @property
    def first_missing(self) -> int:
        i = self.have.find(0)
        return NO_BLOCK if i < 0 else i

    def bitmap(self) -> bytes:
        """Held blocks, bit i of byte i//8 (LSB first) for block i."""
        count = self.block_count
        if self.received == count:
            bits = bytearray(b"\xff" * (count // 8))
            if count % 8:
                bits.append((1 << (count % 8)) - 1)
            return bytes(bits)
        bits = bytearray((count + 7) // 8)
        for i in itertools.compress(range(count), self.have):
            bits[i >> 3] |= 1 << (i & 7)
        return bytes(bits)

    def _writable(self) -> bytearray:
        """The buffer, allocated on the first block written into it."""
        buffer = self.buffer
        if not buffer:
            buffer = self.buffer = self.lend(self.image_size)
        return buffer

    def accept(
        self,
        first_block: int,
        crcs: Sequence[int],
        data: bytes | memoryview,
        run_crc: int | None = None,
    ) -> int | None:
        """Take a run of blocks; return how many were new, or None if the run is malformed
        (it does not fit the image, or its length disagrees with its block count)."""
        n = len(crcs)
        bs = self.block_size
        if n == 0 or first_block < 0 or first_block + n > self.block_count:
            return None
        start = first_block * bs
        end = min(start + n * bs, self.image_size)
        view = memoryview(data)
        if len(view) != end - start:
            return None
        have = self.have
        if run_crc is not None and crc32(view) == run_crc:
            # The run arrived as sent: one check covers every block in it.
            before = have[first_block : first_block + n].count(1)
            self._writable()[start:end] = view
            have[first_block : first_block + n] = _ONE * n
            self.duplicate_blocks += before
            self.received += n - before
            if self.sink is not None:
                self.sink(self, first_block, n, view)
            return n - before
        good = [
            crc32(view[o : o + bs]) == crc
            for o, crc in zip(range(0, len(view), bs), crcs, strict=True)
        ]
        before = have[first_block : first_block + n].count(1)
        if all(good):
            self._writable()[start:end] = view
            have[first_block : first_block + n] = _ONE * n
            self.duplicate_blocks += before
            self.received += n - before
            if self.sink is not None:
                self.sink(self, first_block, n, view)
            return n - before
        # Some blocks failed their CRC: take the good ones one by one.
        new = 0
        for i, ok in enumerate(good):
            if not ok:
                self.corrupt_blocks += 1
                continue
            b = first_block + i
            if not have[b]:
                lo = i * bs
                hi = min(lo + bs, len(view))
                self._writable()[start + lo : start + hi] = view[lo:hi]
                have[b] = 1
                new += 1
                if self.sink is not None:
                    self.sink(self, b, 1, view[lo:hi])
        self.duplicate_blocks += sum(good) - new
        self.received += new
        return new
