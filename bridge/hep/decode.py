"""HEPv3 (sipcapture) packets: a decoder for the capture path and an encoder for tests.

Pure: bytes in, a :class:`HepPacket` out; no sockets. Packet layout: ``HEP3``, u16 total
length, then chunks of u16 vendor id, u16 type, u16 length (including the 6-byte chunk header)
and the value, all in network byte order. :func:`decode_hep` keeps no state; a receiver that
decodes a stream from the same agents uses one :class:`HepDecoder`, which learns their layouts.
"""

from __future__ import annotations

import enum
import ipaddress
import operator
import struct
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, NamedTuple

from bridge.errors import BridgeError

__all__ = [
    "HEP3_MAGIC",
    "HepDecodeError",
    "HepDecoder",
    "HepEncodeError",
    "HepError",
    "HepPacket",
    "HepProto",
    "decode_hep",
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
    return _decode_chunks(data, _checked_size(data))


def _checked_size(data: bytes) -> int:
    """The packet's size, once its magic and length field are right."""
    size = len(data)
    if size < 6:
        raise _fail(f"packet of {size} bytes is shorter than the HEP3 header")
    if data[:4] != HEP3_MAGIC:
        raise _fail(f"bad magic {bytes(data[:4])!r}, expected b'HEP3'")
    total = (data[4] << 8) | data[5]
    if total != size:
        raise _fail(f"length field says {total} bytes, packet has {size}")
    return size


def _decode_chunks(data: bytes, size: int) -> HepPacket:
    """The general decoder: walks the chunks one by one and checks each."""
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


# -- the fast path: packets laid out like earlier ones ------------------------------------------
#
# A capture agent writes every packet with the same chunks in the same order; only the values
# and the payload's length vary. Once a packet has decoded the general way its layout is kept,
# and a later packet whose chunk headers are exactly the same (one struct unpack, one tuple
# comparison) has all its values read by one more unpack. Any other packet takes the general
# path, so the result, errors included, is the same either way. What is learnt lives on a
# HepDecoder, one per receiver, so that nothing at module level changes while packets come in.

_MAX_LAYOUTS = 4
_MAX_CACHED = 4096  # texts of IP addresses and auth keys kept (then the cache starts over)
# The chunks whose values a layout reads, in the order _Layout.pick returns them (an IPv6
# address chunk, 5 or 6, stands in for 3 or 4), and their formats.
_READ = (1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 14, 17, 18)
_FORMAT = MappingProxyType({1: "B", 2: "B", 7: "H", 8: "H", 9: "I", 10: "I", 11: "B", 18: "H"})
_IPV6_AS = MappingProxyType({5: 3, 6: 4})
# Appended to the values read, so that an absent chunk reads as its default.
_DEFAULTS: tuple[None, int, bytes] = (None, 0, b"")
_DEFAULT_AT = MappingProxyType({3: 2, 4: 2, 7: 1, 8: 1, 10: 1})  # in _DEFAULTS; else None


class _Layout(NamedTuple):
    """Packets of one shape: their chunk headers, and where values and payload sit."""

    heads: struct.Struct  # the chunk headers from offset 6 to the payload's vendor and type
    heads_expected: tuple[int, ...]
    values: struct.Struct  # the values of the chunks before the payload, from offset 6
    payload_at: int
    tail_size: int  # bytes of the chunks after the payload (0 when it is the last)
    tail_heads: struct.Struct
    tail_expected: tuple[int, ...]
    tail_values: struct.Struct
    pick: Callable[[tuple[Any, ...]], tuple[Any, ...]]  # the values of _READ's chunks, in order


_new_packet = tuple.__new__  # HepPacket(...) without its Python-level __new__


class HepDecoder:
    """Decodes a stream of HEPv3 packets as :func:`decode_hep` does, faster for known layouts.

    Keeps the last few packet layouts seen and the texts of recent addresses and auth keys.
    """

    __slots__ = ("_address_texts", "_key_texts", "_layouts")

    def __init__(self) -> None:
        self._layouts: list[_Layout] = []
        self._address_texts: dict[bytes, str] = {}
        self._key_texts: dict[bytes, str] = {}

    def decode(self, data: bytes) -> HepPacket:
        """Decode one HEPv3 packet; raise :class:`HepDecodeError` for anything malformed."""
        size = len(data)
        if size < 6 or data[:4] != HEP3_MAGIC or (data[4] << 8) | data[5] != size:
            _checked_size(data)  # raises, saying which check failed (no call on the hot path)
        for layout in self._layouts:
            packet = self._decode_known(data, size, layout)
            if packet is not None:
                return packet
        packet = _decode_chunks(data, size)
        learnt = _learn_layout(data, size)
        if learnt is not None and all(
            (known.heads_expected, known.tail_expected)
            != (learnt.heads_expected, learnt.tail_expected)
            for known in self._layouts
        ):
            self._layouts.insert(0, learnt)  # newest first; the oldest falls off
            del self._layouts[_MAX_LAYOUTS:]
        return packet

    def _decode_known(self, data: bytes, size: int, layout: _Layout) -> HepPacket | None:
        """Decode a packet of ``layout``'s shape; None if its shape is another."""
        at = layout.payload_at
        end = size - layout.tail_size
        if end - at < 6 or layout.heads.unpack_from(data, 6) != layout.heads_expected:
            return None
        if (data[at + 4] << 8) | data[at + 5] != end - at:
            return None
        values = layout.values.unpack_from(data, 6)
        if layout.tail_size:
            if layout.tail_heads.unpack_from(data, end) != layout.tail_expected:
                return None
            values += layout.tail_values.unpack_from(data, end)
        values += _DEFAULTS
        picked = layout.pick(values)
        family, proto, src, dst, sport, dport, sec, usec, ptype, capture, key, corr, vlan = picked
        texts = self._address_texts
        src_ip = texts.get(src)
        if src_ip is None:
            src_ip = _remember(texts, src, _address_text(src))
        dst_ip = texts.get(dst)
        if dst_ip is None:
            dst_ip = _remember(texts, dst, _address_text(dst))
        auth_key = None
        if key is not None:
            auth_key = self._key_texts.get(key)
            if auth_key is None:
                auth_key = _remember(self._key_texts, key, _text(key))
        return _new_packet(
            HepPacket,
            (
                src_ip,
                sport,
                dst_ip,
                dport,
                None if sec is None else sec + usec / 1_000_000,
                ptype,
                capture,
                auth_key,
                data[at + 6 : end],
                None if corr is None else _text(corr),
                family,
                proto,
                vlan,
            ),
        )


def _address_text(raw: bytes) -> str:
    if len(raw) == 4:
        return _ipv4(raw, 0)
    return ipaddress.IPv6Address(raw).compressed if raw else ""


def _remember(cache: dict[bytes, str], raw: bytes, text: str) -> str:
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[raw] = text
    return text


def _learn_layout(data: bytes, size: int) -> _Layout | None:
    """The layout of a packet that just decoded, if the fast path can read its kind."""
    chunks: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    off = 6
    while off < size:
        vendor, ctype, clen = _CHUNK_HEADER.unpack_from(data, off)
        off += clen
        if vendor == 0:
            field = _IPV6_AS.get(ctype, ctype)
            if field in seen or ctype == 16:
                return None  # a repeated chunk (or both address kinds): the general path only
            seen.add(field)
        chunks.append((vendor, ctype, clen))
    payload = next(i for i, (vendor, ctype, _) in enumerate(chunks) if (vendor, ctype) == (0, 15))
    before, after = chunks[:payload], chunks[payload + 1 :]
    read: list[int] = []

    def formats(group: list[tuple[int, int, int]]) -> tuple[str, tuple[int, ...], str]:
        heads, values = [], []
        for vendor, ctype, clen in group:
            vlen = clen - 6
            heads.append(f"HHH{vlen}x" if vlen else "HHH")
            field = _IPV6_AS.get(ctype, ctype)
            if vendor != 0 or field not in _READ:
                values.append(f"{clen}x")
                continue
            if field in (3, 4, 14, 17):
                fmt = f"{vlen}s"
            elif ctype == 12:
                fmt = "I" if vlen == 4 else "H"
            else:
                fmt = _FORMAT[ctype]
            values.append("6x" + fmt)
            read.append(field)
        return "".join(heads), tuple(x for chunk in group for x in chunk), "".join(values)

    heads, expected, values = formats(before)
    tail_heads, tail_expected, tail_values = formats(after)
    n = len(read)
    expected = (*expected, 0, 15)
    where = tuple(read.index(t) if t in read else n + _DEFAULT_AT.get(t, 0) for t in _READ)
    return _Layout(
        struct.Struct(f">{heads}HH"),
        expected,
        struct.Struct(">" + values),
        6 + sum(clen for _, _, clen in before),
        sum(clen for _, _, clen in after),
        struct.Struct(">" + tail_heads),
        tail_expected,
        struct.Struct(">" + tail_values),
        operator.itemgetter(*where),
    )
