"""A fleet shard's flash on disk: an append-only journal of checksummed frames.

What a real meter keeps in flash (emulator.device) is kept here for every device of one
shard, so that a shard killed at any instant and started again resumes each device
exactly where its flash left it: the state, the reason of the last failure, the transfer
id, the time a scheduled activation is due, the count of activations, both slots
(version and FirmwareHash; the image bytes once per hash, as `FlashStore` holds them) and
the reception in progress (transfer id, size, block size, FirmwareHash, bitmap, and the
bytes received).

Why a journal and not SQLite: the hot path is cheap only if a group commit is one
`write(2)` of bytes already laid out. Data written is in the kernel's page cache as soon
as `write` returns, and a killed process cannot take it back, so no fsync is needed for
what this guards against (a kill -9 of the shard, a container restart); a power cut of
the host is out of scope. SQLite (WAL, synchronous=NORMAL) would give the same guarantee,
but each of the ~48,000 group commits of the demo day would be a transaction (statements,
B-tree pages, WAL frames) instead of one write of prepared bytes, and a torn WAL frame is
handled for us no better than a checksummed frame is here. That variant was not built;
the journal measured +7 % CPU on the demo day (BENCHMARKS.md), with little room to spare
under the 10 % budget.

Layout: `DIR/flash.journal`, a sequence of frames `<u32 length><u32 CRC-32><payload>`.
The first frame holds the meta record (format, fleet, shard, a digest of the shard's
devices as the config builds them); a journal written for another config or shard is
refused. Each later frame is one group commit: the records of the devices that answer in
one pass of the event loop, and the blocks new to the pool. A device that has only
received blocks since its record stays pending until it answers: losing those blocks to
a kill costs a resend, and it has told nothing about them. A frame is all or nothing: a
torn or corrupt last frame (a kill in the middle of `write`) is dropped and cut off at
load, and since the replies that depend on a frame are sent only after its write returned
(`FleetHost` holds them), nothing it held was ever told to the DCO. Records, one type byte each:

    M  meta (JSON)                       first frame only
    I  image: hash, bytes                a complete image, once per FirmwareHash
    P  pool: hash, size, block size, first block, bytes
    X  private: device, generation, first block, bytes
    D  device: state, reason, transfer, activate_at, activations, slots, reception

Block bytes are deduplicated by (FirmwareHash, size, block size, block): every device that
receives an image receives the same bytes, so the first device's blocks go to the pool
(`P`) and each later device's run is compared with the pool (a `memcmp`) instead of being
written. A device whose bytes differ from the pool's under the same hash (a wrong image)
gets them written as its own (`X`), tagged with the generation of its reception so that a
later reception of the same image does not inherit them. A device record carries its
bitmap; at load its buffer is assembled from the pool and its own blocks.

The journal is compacted (a snapshot of the live state written beside it, then renamed
over it) when it has grown to several times its size after the last compaction.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.device import Esme
from emulator.errors import FlashStateError
from emulator.reception import Reception
from emulator.slots import FlashStore, SlotImage
from smets1.codes import DeviceState, Reason
from smets1.crc import crc32

log = logging.getLogger("emulator.flash_journal")

JOURNAL_NAME = "flash.journal"
LOCK_NAME = "flash.lock"
FORMAT = 1
#: A journal smaller than this is never compacted.
COMPACT_MIN_BYTES = 64 * 2**20
#: Compact when the journal is this many times its size after the last compaction.
COMPACT_GROWTH = 4

_FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload
_LEN = struct.Struct("<I")
_IMAGE = struct.Struct("<32sI")  # hash, length
_POOL = struct.Struct("<32sIIII")  # hash, image size, block size, first block, length
_PRIVATE = struct.Struct("<QIII")  # device, generation, first block, length
# device, state, reason, transfer id, activate_at, activations, flags,
# active version, active hash, inactive version, inactive hash
_DEVICE = struct.Struct("<QBBIdIBI32sI32s")
# transfer id, image size, block size, generation, FirmwareHash, bitmap length (zlib)
_RX = struct.Struct("<IIII32sI")

_ACTIVE_HASH = 1
_INACTIVE = 2
_INACTIVE_HASH = 4
_RX_PRESENT = 8
_NO_HASH = bytes(32)


def devices_digest(devices: dict[int, Esme]) -> str:
    """What identifies a shard's devices as the config builds them: ids, models and
    factory versions, in id order."""
    h = hashlib.sha256()
    for device_id in sorted(devices):
        d = devices[device_id]
        h.update(f"{device_id:016x}:{d.model.name}:{d.active.file_version:x};".encode())
    return h.hexdigest()


@dataclass(slots=True)
class _Pool:
    """The bytes every device receiving one image has received, block by block."""

    buf: bytearray
    have: bytearray


@dataclass(slots=True)
class _Loaded:
    """What a journal holds, as replayed."""

    meta: dict[str, object] | None = None
    images: dict[bytes, bytes] = field(default_factory=dict)
    pools: dict[tuple[bytes, int, int], _Pool] = field(default_factory=dict)
    private: dict[tuple[int, int], list[tuple[int, bytes]]] = field(default_factory=dict)
    devices: dict[int, tuple[tuple[Any, ...], tuple[Any, ...] | None, bytes]] = field(
        default_factory=dict
    )
    good_bytes: int = 0
    torn_bytes: int = 0


def _held_runs(have: bytearray | bytes) -> Iterator[tuple[int, int]]:
    """[start, end) of each run of held blocks (bytes of 1)."""
    n = len(have)
    i = have.find(1)
    while 0 <= i < n:
        j = have.find(0, i)
        if j < 0:
            j = n
        yield i, j
        i = have.find(1, j)


class FlashJournal:
    """The flash of every device of one shard, kept in `DIR/flash.journal`.

    `open` replays the journal into the devices the config built (or starts one); the
    host calls `touch` for a device whose flash may have changed and `commit` before it
    sends any reply; `close` releases the directory.
    """

    def __init__(self, directory: Path, devices: dict[int, Esme], flash: FlashStore) -> None:
        self.directory = directory
        self.path = directory / JOURNAL_NAME
        self.devices = devices
        self.flash = flash
        self._fd = -1
        self._lock_fd = -1
        self._dirty: dict[int, Esme] = {}
        self._parts: list[bytes] = []  # pool records waiting for the next commit
        self._pools: dict[tuple[bytes, int, int], _Pool] = {}
        self._saved_images: set[bytes] = set()
        self._new_images: list[bytes] = []  # saved by the commit under way
        self._diverged: dict[Reception, list[tuple[int, int]]] = {}
        self._gens: dict[int, tuple[Reception, int]] = {}
        self._next_gen = 1
        self._size = 0
        self._size_after_compaction = 0
        self.commits = 0
        self.bytes_written = 0
        self.loaded_devices = 0
        self.meta: dict[str, object] = {}

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        devices: dict[int, Esme],
        flash: FlashStore,
        *,
        fleet: str,
        shard: int = 0,
        shards: int = 1,
    ) -> FlashJournal:
        """Lock `directory`, load what its journal holds into `devices` (refusing one
        written for other devices), and return the journal, ready for commits."""
        meta: dict[str, object] = {
            "format": FORMAT,
            "fleet": fleet,
            "shard": shard,
            "shards": shards,
            "devices": len(devices),
            "devices_digest": devices_digest(devices),
        }
        j = cls(directory, devices, flash)
        j.meta = meta
        try:
            directory.mkdir(parents=True, exist_ok=True)
            j._lock()
            loaded = j._replay()
            if loaded.meta is None:
                j._start(meta)
            else:
                _check_meta(directory, loaded.meta, meta)
                j._apply(loaded)
                j._fd = os.open(j.path, os.O_WRONLY | os.O_APPEND)
                if loaded.torn_bytes:
                    log.warning(
                        "%s: dropped a torn last frame (%d bytes) at offset %d",
                        j.path,
                        loaded.torn_bytes,
                        loaded.good_bytes,
                    )
                    os.ftruncate(j._fd, loaded.good_bytes)
                j._size = j._size_after_compaction = loaded.good_bytes
        except OSError as exc:
            j.close()
            raise FlashStateError(f"fleet state dir {directory}: {exc.strerror or exc}") from exc
        except FlashStateError:
            j.close()
            raise
        flash.sink = j._on_blocks
        return j

    def _lock(self) -> None:
        self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FlashStateError(
                f"fleet state dir {self.directory} is in use by another process"
            ) from None

    def _start(self, meta: dict[str, object]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, _frame([_meta_record(meta)]))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = self._size_after_compaction = os.fstat(self._fd).st_size

    def close(self) -> None:
        self.flash.sink = None
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    # -- replay -------------------------------------------------------------------------

    def _replay(self) -> _Loaded:
        loaded = _Loaded()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return loaded
        return read_journal(data, str(self.path), loaded)

    def _apply(self, loaded: _Loaded) -> None:
        """Put what the journal holds into the devices the config built."""
        self._pools = loaded.pools
        for h, data in loaded.images.items():
            self.flash.intern(h, data)
            self._saved_images.add(h)
        images = loaded.images
        for device_id, (head, rx_head, bitmap) in loaded.devices.items():
            device = self.devices.get(device_id)
            if device is None:  # the digest matched, so this cannot be: say so
                raise FlashStateError(f"{self.path}: device {device_id:016X} is not in the shard")
            self._load_device(device, head, rx_head, bitmap, images, loaded)
        self.loaded_devices = len(loaded.devices)

    def _load_device(
        self,
        device: Esme,
        head: tuple[Any, ...],
        rx_head: tuple[Any, ...] | None,
        bitmap: bytes,
        images: dict[bytes, bytes],
        loaded: _Loaded,
    ) -> None:
        (_, state, reason, transfer_id, activate_at, activations, flags) = head[:7]
        a_version, a_hash, i_version, i_hash = head[7:]

        def slot(version: int, h: bytes, hashed: bool) -> SlotImage:
            if not hashed:
                return SlotImage(version)
            data = images.get(h)
            if data is None:
                raise FlashStateError(
                    f"{self.path}: device {device.device_id:016X} holds image {h.hex()} "
                    "that the journal does not"
                )
            return SlotImage(version, h, self.flash.intern(h, data))

        device.state = DeviceState(state)
        device.reason = Reason(reason)
        device.transfer_id = transfer_id
        device.activate_at = activate_at
        device.activations = activations
        device.active = slot(a_version, a_hash, bool(flags & _ACTIVE_HASH))
        device.inactive = (
            slot(i_version, i_hash, bool(flags & _INACTIVE_HASH)) if flags & _INACTIVE else None
        )
        device.rx = None
        if rx_head is not None:
            device.rx = self._load_reception(device.device_id, rx_head, bitmap, loaded)

    def _load_reception(
        self, device_id: int, rx_head: tuple[Any, ...], bitmap: bytes, loaded: _Loaded
    ) -> Reception:
        tid, size, bs, gen, fw_hash, _ = rx_head
        rx = Reception(tid, size, bs, fw_hash, self._on_blocks)
        try:
            have = bytearray(zlib.decompress(bitmap))
        except zlib.error as exc:
            raise FlashStateError(f"{self.path}: device {device_id:016X}: bad bitmap") from exc
        if len(have) != rx.block_count or have.strip(b"\x00\x01"):
            raise FlashStateError(
                f"{self.path}: device {device_id:016X}: bitmap of {len(have)} entries, "
                f"expected {rx.block_count} of 0 or 1"
            )
        pool = loaded.pools.get((fw_hash, size, bs))
        own = loaded.private.get((device_id, gen), [])
        if have.find(1) >= 0:
            buf = bytearray(size)
            covered = bytearray(rx.block_count)
            if pool is not None:
                for lo, hi in _held_runs(pool.have):
                    buf[lo * bs : min(hi * bs, size)] = pool.buf[lo * bs : min(hi * bs, size)]
                covered[:] = pool.have
            for first, data in own:
                buf[first * bs : first * bs + len(data)] = data
                n = -(-len(data) // bs)
                covered[first : first + n] = b"\x01" * n
            # A block the bitmap claims but no record holds cannot be: drop it, the DCO
            # sends it again (never the other way round: what was told is held).
            for i, (h, c) in enumerate(zip(have, covered, strict=True)):
                if h and not c:
                    have[i] = 0
            rx.buffer = buf
        rx.have = have
        rx.received = have.count(1)
        self._gens[device_id] = (rx, gen)
        self._next_gen = max(self._next_gen, gen + 1)
        return rx

    # -- the hot path -------------------------------------------------------------------

    def touch(self, device: Esme) -> None:
        """`device`'s flash may have changed: write it at its next commit (or `flush`)."""
        self._dirty[device.device_id] = device

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._parts)

    def changed(self, device: Esme) -> bool:
        """Whether `device` was touched since its last record: an answer from a device
        that was not (an 11.2 read, a second query) needs no commit before it."""
        return device.device_id in self._dirty

    def _on_blocks(self, rx: Reception, first: int, n: int, view: memoryview) -> None:
        """A run was written into `rx`: compare it with the pool, or add it there."""
        size, bs = rx.image_size, rx.block_size
        key = (rx.firmware_hash, size, bs)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(bytearray(size), bytearray(rx.block_count))
        have = pool.have
        start = first * bs
        end = start + len(view)
        if have.find(0, first, first + n) < 0:
            # The common case: a memcmp in place (startswith copies nothing).
            if not pool.buf.startswith(view, start):
                self._diverged.setdefault(rx, []).append((first, n))
            return
        if have.find(1, first, first + n) < 0:
            pool.buf[start:end] = view
            have[first : first + n] = b"\x01" * n
            self._parts.append(_pool_record(key, first, view))
            return
        for i in range(n):
            b = first + i
            lo = i * bs
            piece = view[lo : lo + bs]
            if have[b]:
                if not pool.buf.startswith(piece, start + lo):
                    self._diverged.setdefault(rx, []).append((b, 1))
            else:
                pool.buf[start + lo : start + lo + len(piece)] = piece
                have[b] = 1
                self._parts.append(_pool_record(key, b, piece))

    def commit(self, devices: Iterable[Esme] | None = None) -> int:
        """Write `devices` (None: every device touched) and the pool's new blocks as one
        frame; return its bytes. A device touched but not named stays pending: a device
        that has told nothing since its last record loses nothing the DCO relies on if
        its newest blocks are lost, so the host names only the devices that answer.

        Raises OSError if the write fails; the changes then stay pending.
        """
        dirty = self._dirty
        if devices is None:
            devices = list(dirty.values())
        parts = self._parts
        pool_parts = len(parts)
        self._new_images.clear()
        diverged = dict(self._diverged) if self._diverged else None
        written: list[int] = []
        for device in devices:
            if device.device_id not in dirty:
                continue  # its record already says all it has
            written.append(device.device_id)
            if not _factory(device):  # as built: the config says it all
                self._device_records(device, parts)
        if parts:
            frame = _frame(parts)
            try:
                _write_all(self._fd, frame)
            except OSError:
                # Nothing of it counts: what the device records took goes back.
                del parts[pool_parts:]
                self._saved_images.difference_update(self._new_images)
                if diverged is not None:
                    self._diverged = diverged
                raise
            self._parts = []
        for device_id in written:
            dirty.pop(device_id, None)
        if not parts:
            return 0
        self._size += len(frame)
        self.commits += 1
        self.bytes_written += len(frame)
        if (
            self._size > COMPACT_MIN_BYTES
            and self._size > COMPACT_GROWTH * self._size_after_compaction
        ):
            self.compact()
        return len(frame)

    def _device_records(self, device: Esme, parts: list[bytes]) -> None:
        for s in (device.active, device.inactive):
            if s is not None and s.firmware_hash is not None and s.data is not None:
                if s.firmware_hash not in self._saved_images:
                    parts.append(_image_record(s.firmware_hash, s.data))
                    self._saved_images.add(s.firmware_hash)
                    self._new_images.append(s.firmware_hash)
        rx = device.rx
        gen = 0
        if rx is None:
            held = self._gens.pop(device.device_id, None)
            if held is not None:
                self._diverged.pop(held[0], None)
        else:
            held = self._gens.get(device.device_id)
            if held is None or held[0] is not rx:
                if held is not None:
                    self._diverged.pop(held[0], None)  # replaced: its bytes are of no use
                gen = self._next_gen
                self._next_gen += 1
                self._gens[device.device_id] = (rx, gen)
            else:
                gen = held[1]
            for first, n in self._diverged.pop(rx, ()):
                bs = rx.block_size
                data = rx.buffer[first * bs : min((first + n) * bs, rx.image_size)]
                parts.append(_private_record(device.device_id, gen, first, data))
        parts.append(_device_record(device, gen))

    # -- compaction ---------------------------------------------------------------------

    def compact(self) -> None:
        """Write the live state as a new journal beside the old, then rename it over."""
        parts: list[bytes] = []
        saved = self._saved_images
        self._saved_images = set()
        live_pools: set[tuple[bytes, int, int]] = set()
        for device in self.devices.values():
            rx = device.rx
            if rx is not None:
                live_pools.add((rx.firmware_hash, rx.image_size, rx.block_size))
        for key in live_pools:
            pool = self._pools.get(key)
            if pool is not None:
                bs = key[2]
                for lo, hi in _held_runs(pool.have):
                    parts.append(_pool_record(key, lo, memoryview(pool.buf)[lo * bs : hi * bs]))
        self._pools = {k: v for k, v in self._pools.items() if k in live_pools}
        for device in self.devices.values():
            if _factory(device):
                continue
            rx = device.rx
            if rx is not None:
                self._diverged[rx] = list(self._divergence(rx))
            self._device_records(device, parts)
        self._diverged.clear()
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, _frame([_meta_record(self.meta)]))
            _write_all(fd, _frame(parts))
            os.fsync(fd)
        except BaseException:
            self._saved_images = saved
            os.close(fd)
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = self._size_after_compaction = os.fstat(self._fd).st_size
        log.info("%s: compacted to %d bytes", self.path, self._size)

    def _divergence(self, rx: Reception) -> Iterable[tuple[int, int]]:
        """Runs of `rx`'s held blocks whose bytes the pool does not hold."""
        pool = self._pools.get((rx.firmware_hash, rx.image_size, rx.block_size))
        bs, size = rx.block_size, rx.image_size
        for lo, hi in _held_runs(rx.have):
            for b in range(lo, hi):
                s, e = b * bs, min((b + 1) * bs, size)
                if pool is None or not pool.have[b] or pool.buf[s:e] != rx.buffer[s:e]:
                    yield b, 1


def _factory(device: Esme) -> bool:
    """Whether `device`'s flash is as the config built it (no record needed)."""
    return (
        device.state is DeviceState.IDLE
        and device.rx is None
        and device.inactive is None
        and device.active.firmware_hash is None
        and device.activations == 0
    )


def _check_meta(directory: Path, found: dict[str, object], wanted: dict[str, object]) -> None:
    if found.get("format") != FORMAT:
        raise FlashStateError(
            f"fleet state dir {directory}: journal format {found.get('format')}, "
            f"this version reads {FORMAT}"
        )
    for key in ("fleet", "shard", "shards", "devices", "devices_digest"):
        if found.get(key) != wanted.get(key):
            raise FlashStateError(
                f"fleet state dir {directory} was written for fleet {found.get('fleet')!r} "
                f"shard {found.get('shard')}/{found.get('shards')} "
                f"({found.get('devices')} devices), not fleet {wanted['fleet']!r} shard "
                f"{wanted['shard']}/{wanted['shards']} ({wanted['devices']} devices; "
                f"{key} differs): give this shard its own --state-dir"
            )


# -- records --------------------------------------------------------------------------------


def _frame(parts: list[bytes]) -> bytes:
    payload = b"".join(parts)
    return _FRAME.pack(len(payload), crc32(payload)) + payload


def _write_all(fd: int, data: bytes) -> None:
    n = os.write(fd, data)
    if n < len(data):  # a short write (a signal, a full disk): the rest, or an OSError
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view) :]


def _meta_record(meta: dict[str, object]) -> bytes:
    text = json.dumps(meta, sort_keys=True).encode()
    return b"M" + _LEN.pack(len(text)) + text


def _image_record(h: bytes, data: bytes) -> bytes:
    return b"I" + _IMAGE.pack(h, len(data)) + data


def _pool_record(key: tuple[bytes, int, int], first: int, data: memoryview | bytes) -> bytes:
    h, size, bs = key
    return b"P" + _POOL.pack(h, size, bs, first, len(data)) + bytes(data)


def _private_record(device_id: int, gen: int, first: int, data: bytes | bytearray) -> bytes:
    return b"X" + _PRIVATE.pack(device_id, gen, first, len(data)) + bytes(data)


def _device_record(device: Esme, gen: int) -> bytes:
    a = device.active
    i = device.inactive
    rx = device.rx
    flags = 0
    if a.firmware_hash is not None:
        flags |= _ACTIVE_HASH
    if i is not None:
        flags |= _INACTIVE
        if i.firmware_hash is not None:
            flags |= _INACTIVE_HASH
    if rx is not None:
        flags |= _RX_PRESENT
    head = _DEVICE.pack(
        device.device_id,
        int(device.state),
        int(device.reason),
        device.transfer_id,
        device.activate_at,
        device.activations,
        flags,
        a.file_version,
        a.firmware_hash or _NO_HASH,
        i.file_version if i is not None else 0,
        (i.firmware_hash if i is not None else None) or _NO_HASH,
    )
    if rx is None:
        return b"D" + head
    bitmap = zlib.compress(rx.have, 1)
    return (
        b"D"
        + head
        + _RX.pack(rx.transfer_id, rx.image_size, rx.block_size, gen, rx.firmware_hash, len(bitmap))
        + bitmap
    )


def read_journal(data: bytes, name: str, loaded: _Loaded | None = None) -> _Loaded:
    """Replay a journal's bytes: every whole frame, in order; a torn or corrupt last
    frame is left out (`torn_bytes`): it was being written when the process died, and
    nothing that depends on it was told."""
    loaded = loaded if loaded is not None else _Loaded()
    view = memoryview(data)
    off = 0
    total = len(data)
    while off < total:
        if total - off < _FRAME.size:
            break
        length, crc = _FRAME.unpack_from(view, off)
        end = off + _FRAME.size + length
        if end > total or crc32(view[off + _FRAME.size : end]) != crc:
            break
        try:
            _read_frame(view[off + _FRAME.size : end], loaded, first=off == 0)
        except (struct.error, ValueError, KeyError) as exc:
            raise FlashStateError(f"{name}: frame at offset {off} is malformed: {exc}") from exc
        off = end
    loaded.good_bytes = off
    loaded.torn_bytes = total - off
    if loaded.torn_bytes and off == 0:  # a journal is never created torn (see `_start`)
        raise FlashStateError(f"{name}: not a flash journal (first frame unreadable)")
    return loaded


def _read_frame(p: memoryview, loaded: _Loaded, first: bool) -> None:
    off = 0
    n = len(p)
    while off < n:
        kind = p[off : off + 1].tobytes()
        off += 1
        if kind == b"M":
            (length,) = _LEN.unpack_from(p, off)
            off += _LEN.size
            if not first:
                raise ValueError("meta record after the first frame")
            loaded.meta = json.loads(p[off : off + length].tobytes())
            off += length
        elif first or loaded.meta is None:
            raise ValueError("the first frame holds no meta record")
        elif kind == b"I":
            h, length = _IMAGE.unpack_from(p, off)
            off += _IMAGE.size
            loaded.images[h] = p[off : off + length].tobytes()
            off += length
        elif kind == b"P":
            h, size, bs, first_block, length = _POOL.unpack_from(p, off)
            off += _POOL.size
            key = (h, size, bs)
            pool = loaded.pools.get(key)
            if pool is None:
                pool = loaded.pools[key] = _Pool(bytearray(size), bytearray(-(-size // bs)))
            start = first_block * bs
            if start + length > size:
                raise ValueError(f"pool run at block {first_block} overruns its image")
            pool.buf[start : start + length] = p[off : off + length]
            nb = -(-length // bs)
            pool.have[first_block : first_block + nb] = b"\x01" * nb
            off += length
        elif kind == b"X":
            device_id, gen, first_block, length = _PRIVATE.unpack_from(p, off)
            off += _PRIVATE.size
            loaded.private.setdefault((device_id, gen), []).append(
                (first_block, p[off : off + length].tobytes())
            )
            off += length
        elif kind == b"D":
            head = _DEVICE.unpack_from(p, off)
            off += _DEVICE.size
            rx_head = None
            bitmap = b""
            if head[6] & _RX_PRESENT:
                rx_head = _RX.unpack_from(p, off)
                off += _RX.size
                bitmap = p[off : off + rx_head[5]].tobytes()
                off += rx_head[5]
            loaded.devices[head[0]] = (head, rx_head, bitmap)
        else:
            raise ValueError(f"unknown record type {kind!r} at offset {off - 1}")
        if off > n:
            raise ValueError("a record overruns its frame")
