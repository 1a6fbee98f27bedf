"""Building HEPv3 packets (tests, capture recordings, benchmarks); `bridge.hep.decode` decodes."""

from __future__ import annotations

import ipaddress
import struct

from bridge.hep.decode import (
    _CHUNK_HEADER,
    _MAX_PACKET,
    _U16,
    _U32,
    HEP3_MAGIC,
    HepEncodeError,
    HepProto,
)

__all__ = ["HepEncodeError", "encode_hep"]


def _chunk(ctype: int, value: bytes) -> bytes:
    return _CHUNK_HEADER.pack(0, ctype, 6 + len(value)) + value


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise HepEncodeError(f"bad IP address {text!r}") from exc


def encode_hep(
    payload: bytes,
    *,
    src_ip: str,
    src_port: int,
    dst_ip: str,
    dst_port: int,
    timestamp: float,
    proto_type: int = HepProto.SIP,
    capture_id: int = 0,
    auth_key: str | None = None,
    correlation_id: str | None = None,
    ip_proto: int = 17,
    vlan_id: int | None = None,
    extra_chunks: tuple[tuple[int, int, bytes], ...] = (),
) -> bytes:
    """Build a HEPv3 packet; ``extra_chunks`` are raw (vendor, type, value) chunks appended."""
    src, dst = _address(src_ip), _address(dst_ip)
    if src.version != dst.version:
        raise HepEncodeError("source and destination addresses differ in IP version")
    for what, port in (("src_port", src_port), ("dst_port", dst_port)):
        if not 0 <= port <= 0xFFFF:
            raise HepEncodeError(f"{what} out of range: {port}")
    if not 0 <= timestamp < 2**32:
        raise HepEncodeError(f"timestamp out of range: {timestamp}")
    seconds = int(timestamp)
    micros = round((timestamp - seconds) * 1_000_000)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    v4 = src.version == 4
    try:
        parts = [
            _chunk(1, bytes([2 if v4 else 10])),
            _chunk(2, bytes([ip_proto])),
            _chunk(3 if v4 else 5, src.packed),
            _chunk(4 if v4 else 6, dst.packed),
            _chunk(7, _U16.pack(src_port)),
            _chunk(8, _U16.pack(dst_port)),
            _chunk(9, _U32.pack(seconds)),
            _chunk(10, _U32.pack(micros)),
            _chunk(11, bytes([proto_type])),
            _chunk(12, _U32.pack(capture_id)),
        ]
        if auth_key is not None:
            parts.append(_chunk(14, auth_key.encode()))
        if vlan_id is not None:
            parts.append(_chunk(18, _U16.pack(vlan_id)))
        parts.append(_chunk(15, bytes(payload)))
        if correlation_id is not None:
            parts.append(_chunk(17, correlation_id.encode()))
        for vendor, ctype, value in extra_chunks:
            parts.append(_CHUNK_HEADER.pack(vendor, ctype, 6 + len(value)) + value)
    except (ValueError, struct.error) as exc:
        raise HepEncodeError(f"value out of range: {exc}") from exc
    body = b"".join(parts)
    total = 6 + len(body)
    if total > _MAX_PACKET:
        raise HepEncodeError(f"packet of {total} bytes exceeds the 65535-byte HEP3 limit")
    return HEP3_MAGIC + _U16.pack(total) + body
