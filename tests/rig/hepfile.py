"""Captured HEP packets on disk: ``tests/fixtures/hep/<case>.hep`` files.

Format: the packets in arrival order, each as a 4-byte big-endian length followed by the raw
packet bytes (exactly as the collector received them). Nothing else: no header, no padding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

_LEN = struct.Struct(">I")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hep"


def dump_packets(packets: Iterable[bytes]) -> bytes:
    """Length-prefix and concatenate ``packets``."""
    return b"".join(_LEN.pack(len(p)) + bytes(p) for p in packets)


def iter_packets(data: bytes) -> Iterator[bytes]:
    """Split a length-prefixed capture back into packets; raise ValueError if truncated."""
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


def write_hep_file(path: Path, packets: Iterable[bytes]) -> int:
    """Write a capture file; returns the number of packets written."""
    items = [bytes(p) for p in packets]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(dump_packets(items))
    tmp.replace(path)
    return len(items)


def read_hep_file(path: Path) -> list[bytes]:
    """All packets of a capture file, in arrival order."""
    return list(iter_packets(path.read_bytes()))


def fixture_path(case: str) -> Path:
    """``tests/fixtures/hep/<case>.hep``."""
    return FIXTURES / f"{case}.hep"
