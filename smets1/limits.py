"""Limits a config, a flag or a file is held to before anything is built.

Why limits at all: a process that is asked for more than it can hold fails late and
badly (a 1,000,000,000-device group ran for 18 s and ended in MemoryError; a
10**12-byte image asks for a terabyte). Each limit is checked up front, and the message
says what to do instead. Figures behind them (BENCHMARKS.md): an idle device takes about
300 B in a fleet process, the 670,000-device estate campaign peaks at 810 MiB in one
process, and every process of a run numbers every device of the config.
"""

from __future__ import annotations

#: Devices one process may hold: `smets1 run` holds the whole fleet, a fleet shard its
#: share. The estate (670,000) fits one process; past this, shard (`--shards`).
DEVICES_PER_PROCESS = 1_000_000

#: Devices in one fleet config. Every process of a run (the scheduler, each shard) numbers
#: every device of the config, so this bounds each process whatever the sharding:
#: about fifteen times the SMETS1 estate.
MAX_FLEET_DEVICES = 10_000_000

#: Largest firmware image a config may build or read, or `smets1 image build` may make.
#: Each process that builds a config's images holds each in memory, and each device that
#: receives one assembles its own copy; SMETS1 images are a few MB. (The OTA header's
#: total_image_size is a u32, so no OTA file passes 4 GiB anyway.)
MAX_IMAGE_BYTES = 256 * 1024 * 1024

#: Largest file `smets1 image inspect` or `verify` reads: all an OTA header can describe.
MAX_OTA_FILE_BYTES = 0xFFFF_FFFF

#: Largest fleet config file read (the 670,000-device estate config is under 2 KiB).
MAX_CONFIG_BYTES = 16 * 1024 * 1024

#: Values a config may expand to through YAML aliases (`*name`): a few aliases can
#: otherwise stand for billions of values ("billion laughs").
MAX_CONFIG_VALUES = 1_000_000

#: Brackets a config may nest (`[[[...`); PyYAML's scanner slows down with the square of
#: the depth, and a fleet config needs five or so.
MAX_CONFIG_NESTING = 64

#: Fleet shards and DCO workers one run may have.
MAX_SHARDS = 1024
