"""HEPv3 (sipcapture) packets: a decoder for the capture path and an encoder for tests.

Pure: bytes in, a :class:`HepPacket` out; no sockets. Packet layout: ``HEP3``, u16 total
length, then chunks of u16 vendor id, u16 type, u16 length (including the 6-byte chunk header)
and the value, all in network byte order.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from typing import NamedTuple

from bridge.errors import BridgeError

__all__ = [
    "HEP3_MAGIC",
    "HepChunk",
    "HepDecodeError",
    "HepEncodeError",
    "HepError",
    "HepPacket",
    "HepProto",
    "decode_hep",
    "encode_hep",
]

HEP3_MAGIC = b"HEP3"
_MAX_PACKET = 0xFFFF
_CHUNK_HEADER = struct.Struct(">HHH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class HepError(BridgeError, ValueError):
    """Base class of the HEP errors."""

    code = "hep_error"


class HepDecodeError(HepError):
    """The bytes are not a well-formed HEPv3 packet."""

    code = "hep_decode_error"


class HepEncodeError(HepError):
    """The values given cannot be encoded as a HEPv3 packet."""

    code = "hep_encode_error"


class HepChunk(enum.IntEnum):
    """Generic (vendor 0) chunk types."""

    IP_FAMILY = 1
    IP_PROTO = 2
    IPV4_SRC = 3
    IPV4_DST = 4
    IPV6_SRC = 5
    IPV6_DST = 6
    SRC_PORT = 7
    DST_PORT = 8
    TIME_SEC = 9
    TIME_USEC = 10
    PROTO_TYPE = 11
    CAPTURE_ID = 12
    KEEP_ALIVE = 13
    AUTH_KEY = 14
    PAYLOAD = 15
    COMPRESSED_PAYLOAD = 16
    CORRELATION_ID = 17
    VLAN_ID = 18


class HepProto(enum.IntEnum):
    """Common payload protocol types (chunk 11); other values occur and are kept as ints."""

    SIP = 1
    RTCP = 5
    LOG = 100


class HepPacket(NamedTuple):
    """One decoded HEPv3 packet; fields whose chunk was absent are None ("" for addresses)."""

    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    timestamp: float | None
    proto_type: int | None
    capture_id: int | None
    auth_key: str | None
    payload: bytes
    correlation_id: str | None = None
    ip_family: int | None = None
    ip_proto: int | None = None
    vlan_id: int | None = None


def _fail(message: str) -> HepDecodeError:
    return HepDecodeError(message)


def _ipv4(data: bytes, at: int) -> str:
    return f"{data[at]}.{data[at + 1]}.{data[at + 2]}.{data[at + 3]}"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace").rstrip("\x00")


def decode_hep(data: bytes) -> HepPacket:
    """Decode one HEPv3 packet; raise :class:`HepDecodeError` for anything malformed."""
    size = len(data)
    if size < 6:
        raise _fail(f"packet of {size} bytes is shorter than the HEP3 header")
    if data[:4] != HEP3_MAGIC:
        raise _fail(f"bad magic {bytes(data[:4])!r}, expected b'HEP3'")
    total = (data[4] << 8) | data[5]
    if total != size:
        raise _fail(f"length field says {total} bytes, packet has {size}")
    src_ip = dst_ip = ""
    src_port = dst_port = 0
    seconds: int | None = None
    micros = 0
    proto_type: int | None = None
    capture_id: int | None = None
    auth_key: str | None = None
    payload: bytes | None = None
    correlation_id: str | None = None
    ip_family: int | None = None
    ip_proto: int | None = None
    vlan_id: int | None = None
    unpack_header = _CHUNK_HEADER.unpack_from
    off = 6
    while off < size:
        if size - off < 6:
            raise _fail(f"truncated chunk header at offset {off}")
        vendor, ctype, clen = unpack_header(data, off)
        if clen < 6:
            raise _fail(f"chunk {vendor}/{ctype} at offset {off} has length {clen} < 6")
        end = off + clen
        if end > size:
            raise _fail(f"chunk {vendor}/{ctype} at offset {off} overruns the packet")
        at = off + 6
        vlen = clen - 6
        off = end
        if vendor != 0:
            continue
        if ctype == 15:
            payload = data[at:end]
        elif ctype in (3, 4, 5, 6):
            if ctype <= 4:
                if vlen != 4:
                    raise _fail(f"IPv4 address chunk {ctype} has {vlen} bytes")
                address = _ipv4(data, at)
            else:
                if vlen != 16:
                    raise _fail(f"IPv6 address chunk {ctype} has {vlen} bytes")
                address = ipaddress.IPv6Address(bytes(data[at:end])).compressed
            if ctype % 2:
                src_ip = address
            else:
                dst_ip = address
        elif ctype in (7, 8, 13, 18):
            if vlen != 2:
                raise _fail(f"chunk {ctype} should hold 2 bytes, has {vlen}")
            value = _U16.unpack_from(data, at)[0]
            if ctype == 7:
                src_port = value
            elif ctype == 8:
                dst_port = value
            elif ctype == 18:
                vlan_id = value
        elif ctype in (9, 10):
            if vlen != 4:
                raise _fail(f"timestamp chunk {ctype} should hold 4 bytes, has {vlen}")
            if ctype == 9:
                seconds = _U32.unpack_from(data, at)[0]
            else:
                micros = _U32.unpack_from(data, at)[0]
        elif ctype in (1, 2, 11):
            if vlen != 1:
                raise _fail(f"chunk {ctype} should hold 1 byte, has {vlen}")
            if ctype == 1:
                ip_family = data[at]
            elif ctype == 2:
                ip_proto = data[at]
            else:
                proto_type = data[at]
        elif ctype == 12:
            if vlen == 4:
                capture_id = _U32.unpack_from(data, at)[0]
            elif vlen == 2:  # some older agents send a u16 capture id
                capture_id = _U16.unpack_from(data, at)[0]
            else:
                raise _fail(f"capture id chunk has {vlen} bytes")
        elif ctype == 14:
            auth_key = _text(data[at:end])
        elif ctype == 17:
            correlation_id = _text(data[at:end])
        elif ctype == 16:
            raise _fail("compressed payload (chunk 16) is not supported")
    if payload is None:
        raise _fail("packet has no payload chunk")
    timestamp = None if seconds is None else seconds + micros / 1_000_000
    return HepPacket(
        src_ip,
        src_port,
        dst_ip,
        dst_port,
        timestamp,
        proto_type,
        capture_id,
        auth_key,
        payload,
        correlation_id,
        ip_family,
        ip_proto,
        vlan_id,
    )


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
