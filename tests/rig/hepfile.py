"""Captured HEP packets on disk: ``tests/fixtures/hep/<case>.hep`` files.

Format: the packets in arrival order, each as a 4-byte big-endian length followed by the raw
packet bytes (exactly as the collector received them). Nothing else: no header, no padding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

# The format itself lives in the package, so the benchmarks share it.
from bridge.evidence import PhoneEvent
from bridge.hep.capture import join_capture, split_capture
from bridge.hep.decode import decode_hep
from bridge.hep.directory import PhoneDirectory
from bridge.hep.sides import hop
from bridge.hep.tracker import SipTracker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hep"


def write_hep_file(path: Path, packets: Iterable[bytes]) -> int:
    """Write a capture file; returns the number of packets written."""
    items = [bytes(p) for p in packets]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(join_capture(items))
    tmp.replace(path)
    return len(items)


def read_hep_file(path: Path) -> list[bytes]:
    """All packets of a capture file, in arrival order."""
    return list(split_capture(path.read_bytes()))


def fixture_path(case: str) -> Path:
    """``tests/fixtures/hep/<case>.hep``."""
    return FIXTURES / f"{case}.hep"


def replay_sip(
    path: Path, phones: Iterable[str], edit: Callable[[bytes], bytes | None] | None = None
) -> list[PhoneEvent]:
    """The HEP source's evidence for a capture file, its SIP payloads fed in order at their
    capture times; `edit` may change a payload or drop it (None)."""
    tracker = SipTracker(PhoneDirectory(phones), source="hep")
    out: list[PhoneEvent] = []
    for packet in read_hep_file(path):
        hep = decode_hep(packet)
        if hep.proto_type != 1:
            continue
        payload = edit(hep.payload) if edit is not None else hep.payload
        if payload is not None:
            src, dst = hop(hep.src_ip, hep.src_port), hop(hep.dst_ip, hep.dst_port)
            out.extend(tracker.feed_bytes(payload, hep.timestamp or 0.0, None, src, dst))
    return out
