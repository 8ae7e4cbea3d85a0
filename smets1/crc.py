"""CRC-32 as zlib computes it (the ISO-HDLC polynomial): each block's and each run's check
on the wire, the flash journal's records and the shards' hash of device ids.

From zlib-ng (python-zlib-ng), a drop-in for zlib that computes the same values with the
processor's carry-less multiply: on this project's 2-core machine, 73 GB/s for a 64 KiB
run against the system zlib's 3 GB/s (BENCHMARKS.md). Every device checks every run it
receives, so over the demo day this is 12,000 MiB of CRC.
"""

from __future__ import annotations

from zlib_ng.zlib_ng import crc32

__all__ = ["crc32"]
