"""The project's HEP capture format: packets in arrival order, each behind a 4-byte big-endian
length. Recorded by `scripts/rig/record.py`, replayed by tests and benchmarks. Bytes only, no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

_LEN = struct.Struct(">I")


def join_capture(packets: Iterable[bytes]) -> bytes:
    """Length-prefix and concatenate `packets`."""
    return b"".join(_LEN.pack(len(p)) + bytes(p) for p in packets)


def split_capture(data: bytes) -> Iterator[bytes]:
    """The packets of a capture, in order; ValueError if it is truncated."""
    off = 0
    size = len(data)
    while off < size:
        if size - off < 4:
            raise ValueError(f"truncated length prefix at offset {off}")
        (length,) = _LEN.unpack_from(data, off)
        off += 4
        if off + length > size:
            raise ValueError(f"packet at offset {off - 4} claims {length} bytes, file ends first")
        yield data[off : off + length]
        off += length
