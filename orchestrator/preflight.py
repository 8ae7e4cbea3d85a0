"""Checks before a process starts: what one process can hold (smets1.limits).

A config can be valid and still more than one process can hold: a million devices in
`smets1 run`, or images that together outgrow the machine's memory. These checks run
before anything is built, and the message says what to do instead.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

from smets1.config import FleetConfig
from smets1.errors import ConfigError
from smets1.limits import DEVICES_PER_PROCESS, MAX_IMAGE_BYTES, MAX_SHARDS

#: Copies of each image a process may hold at once: the built file, its body while it is
#: built, the DCO's store reading it back, a device's assembled buffer.
IMAGE_COPIES = 4


def shards_needed(devices: int) -> int:
    return max(1, math.ceil(devices / DEVICES_PER_PROCESS))


def check_devices_per_process(
    config: FleetConfig, config_path: str | os.PathLike[str], shards: int, flag: str | None
) -> None:
    """ConfigError unless each of `shards` processes holds at most DEVICES_PER_PROCESS
    devices. `flag` is the option that sets the shards (None: `smets1 run`, one process)."""
    total = config.device_count
    per = math.ceil(total / shards)
    if per <= DEVICES_PER_PROCESS:
        return
    need = shards_needed(total)
    limit = f"a process holds at most {DEVICES_PER_PROCESS:,} (smets1.limits.DEVICES_PER_PROCESS)"
    if flag is None:
        raise ConfigError(
            f"{config_path}: devices: {total:,} devices in one process, {limit}; run it"
            f" sharded instead: smets1 distributed {config_path} --shards {need}"
        )
    more = f"use {flag} {need} or more" if need <= MAX_SHARDS else "use fewer devices"
    raise ConfigError(
        f"{flag} {shards}: {total:,} devices of {config_path} make about {per:,} a shard,"
        f" {limit}; {more}"
    )


def physical_memory_bytes() -> int | None:
    """The machine's memory, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def image_bytes(config: FleetConfig) -> list[tuple[str, int]]:
    """(field, size) of each image of the config, without reading a file; ConfigError for
    a file image over MAX_IMAGE_BYTES."""
    sizes = []
    for n, image in enumerate(config.images):
        if image.size_bytes is not None:
            sizes.append((f"images.{n}.size_bytes", image.size_bytes))
            continue
        assert image.file is not None
        size = _file_size(image.file)
        if size is None:
            continue  # read later, where an unreadable file is reported
        if size > MAX_IMAGE_BYTES:
            raise ConfigError(
                f"images.{n}.file: {image.file} is {size:,} bytes; at most"
                f" {MAX_IMAGE_BYTES:,} (smets1.limits.MAX_IMAGE_BYTES)"
            )
        sizes.append((f"images.{n}.file", size))
    return sizes


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def read_image_file(path: Path, field: str) -> bytes:
    """The bytes of an image file a config names: a regular file of at most
    MAX_IMAGE_BYTES, read no further than that; ConfigError naming `field` otherwise."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{field}: {path} is not a regular file")
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_IMAGE_BYTES:
        raise ConfigError(
            f"{field}: {path} is more than {MAX_IMAGE_BYTES:,} bytes"
            " (smets1.limits.MAX_IMAGE_BYTES)"
        )
    return data


def check_images_fit_memory(
    config: FleetConfig, config_path: str | os.PathLike[str], memory: int | None = None
) -> None:
    """ConfigError if the images, IMAGE_COPIES of each, would not fit in the machine's
    memory (`memory` bytes; default: this machine's)."""
    sizes = image_bytes(config)
    memory = physical_memory_bytes() if memory is None else memory
    need = IMAGE_COPIES * sum(size for _, size in sizes)
    if memory is None or need <= memory:
        return
    largest = max(sizes, key=lambda fs: fs[1])[0]
    raise ConfigError(
        f"{config_path}: images: {len(sizes)} image(s) of {need // IMAGE_COPIES:,} bytes"
        f" together need about {need:,} bytes in each process ({IMAGE_COPIES} copies),"
        f" more than this machine's {memory:,}; use smaller or fewer images (the largest is"
        f" {largest})"
    )


def preflight(
    config: FleetConfig,
    config_path: str | os.PathLike[str],
    shards: int = 1,
    flag: str | None = None,
) -> None:
    """Every check of this module, for a process that holds `1/shards` of the devices."""
    check_devices_per_process(config, config_path, shards, flag)
    check_images_fit_memory(config, config_path)
