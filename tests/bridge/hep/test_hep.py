"""HEPv3 decoding and encoding: real packet shapes, every malformed case, and fuzzing."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge.hep.decode as hep_module
from bridge.hep.decode import (
    HepDecodeError,
    HepDecoder,
    HepEncodeError,
    HepPacket,
    HepProto,
    decode_hep,
)
from bridge.hep.encode import encode_hep
from bridge.sip import SipFrag, parse_message

NOTIFY = (
    (Path(__file__).resolve().parents[2] / "fixtures" / "sip" / "notify_ok.txt")
    .read_text(encoding="utf-8")
    .replace("\n", "\r\n")
    .encode()
)


def chunk(ctype: int, value: bytes, vendor: int = 0) -> bytes:
    return struct.pack(">HHH", vendor, ctype, 6 + len(value)) + value


def packet(*chunks: bytes) -> bytes:
    body = b"".join(chunks)
    return b"HEP3" + struct.pack(">H", 6 + len(body)) + body


def asterisk_like(payload: bytes = NOTIFY) -> bytes:
    """Chunks in the order Asterisk's res_hep writes them (IPv4, UDP, auth key, SIP)."""
    return packet(
        chunk(1, b"\x02"),
        chunk(2, b"\x11"),
        chunk(7, struct.pack(">H", 5060)),
        chunk(8, struct.pack(">H", 5062)),
        chunk(9, struct.pack(">I", 1_764_064_800)),
        chunk(10, struct.pack(">I", 250_000)),
        chunk(11, b"\x01"),
        chunk(12, struct.pack(">I", 2001)),
        chunk(3, bytes([192, 168, 50, 2])),
        chunk(4, bytes([192, 168, 50, 11])),
        chunk(14, b"s3cret\x00"),
        chunk(15, payload),
        chunk(17, b"hVqS-3jZpPq1Ll2aH5Q7zrbM5lUThb8X"),
    )


def test_decode_asterisk_like_packet() -> None:
    pkt = decode_hep(asterisk_like())
    assert pkt == HepPacket(
        src_ip="192.168.50.2",
        src_port=5060,
        dst_ip="192.168.50.11",
        dst_port=5062,
        timestamp=1_764_064_800.25,
        proto_type=HepProto.SIP,
        capture_id=2001,
        auth_key="s3cret",
        payload=NOTIFY,
        correlation_id="hVqS-3jZpPq1Ll2aH5Q7zrbM5lUThb8X",
        ip_family=2,
        ip_proto=17,
        vlan_id=None,
    )
    # the payload survives intact: the NOTIFY's sipfrag still says the transfer succeeded
    assert parse_message(pkt.payload).sipfrag() == SipFrag(200, "OK")


def test_round_trip_ipv4() -> None:
    data = encode_hep(
        NOTIFY,
        src_ip="10.0.0.1",
        src_port=5060,
        dst_ip="10.0.0.2",
        dst_port=5080,
        timestamp=1_764_064_800.123456,
        capture_id=7,
        auth_key="key",
        correlation_id="corr",
        ip_proto=6,
        vlan_id=42,
    )
    pkt = decode_hep(data)
    assert (pkt.src_ip, pkt.src_port, pkt.dst_ip, pkt.dst_port) == (
        "10.0.0.1",
        5060,
        "10.0.0.2",
        5080,
    )
    assert pkt.timestamp == pytest.approx(1_764_064_800.123456, abs=1e-6)
    assert (pkt.capture_id, pkt.auth_key, pkt.correlation_id) == (7, "key", "corr")
    assert (pkt.ip_family, pkt.ip_proto, pkt.vlan_id, pkt.proto_type) == (2, 6, 42, 1)
    assert pkt.payload == NOTIFY


def test_round_trip_ipv6_and_other_proto() -> None:
    data = encode_hep(
        b'{"type":200}',
        src_ip="2001:db8::1",
        src_port=1,
        dst_ip="2001:0db8:0000::0002",
        dst_port=65535,
        timestamp=0.9999999,
        proto_type=HepProto.RTCP,
    )
    pkt = decode_hep(data)
    assert (pkt.src_ip, pkt.dst_ip, pkt.ip_family) == ("2001:db8::1", "2001:db8::2", 10)
    assert pkt.timestamp == 1.0
    assert pkt.proto_type == 5 and pkt.auth_key is None and pkt.correlation_id is None


def test_unknown_and_vendor_chunks_are_skipped() -> None:
    data = encode_hep(
        b"x",
        src_ip="10.0.0.1",
        src_port=1,
        dst_ip="10.0.0.2",
        dst_port=2,
        timestamp=5,
        extra_chunks=((0, 99, b"future"), (0x0B, 15, b"vendor payload"), (0, 13, b"\x00\x01")),
    )
    assert decode_hep(data).payload == b"x"


def test_minimal_packet_defaults() -> None:
    pkt = decode_hep(packet(chunk(15, b"")))
    assert pkt.payload == b""
    assert (pkt.src_ip, pkt.src_port, pkt.timestamp, pkt.proto_type, pkt.capture_id) == (
        "",
        0,
        None,
        None,
        None,
    )


def test_u16_capture_id_is_accepted() -> None:
    assert decode_hep(packet(chunk(12, b"\x01\x02"), chunk(15, b"p"))).capture_id == 258


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "shorter"),
        (b"HEP3\x00", "shorter"),
        (b"HEP2\x00\x06", "magic"),
        (b"\x02\x10\x02\x11" + b"\x00" * 20, "magic"),
        (packet(chunk(15, b"p")) + b"x", "length"),
        (packet(chunk(15, b"p"))[:-1], "length"),
        (b"HEP3\x00\x06", "no payload"),
        (packet(chunk(1, b"\x02")), "no payload"),
        (packet(chunk(15, b"p"))[:6] + b"\x00\x00\x00\x0f\x00\x07", "length"),
        (b"HEP3\x00\x0a\x00\x00\x00\x0f", "truncated chunk header"),
        (b"HEP3\x00\x0c\x00\x00\x00\x0f\x00\x00", "< 6"),
        (b"HEP3\x00\x0c\x00\x00\x00\x0f\x00\x05", "< 6"),
        (b"HEP3\x00\x0c\x00\x00\x00\x0f\x00\x07", "overruns"),
        (packet(chunk(15, b"p"), chunk(3, b"\x01\x02\x03")), "IPv4"),
        (packet(chunk(15, b"p"), chunk(6, b"\x00" * 4)), "IPv6"),
        (packet(chunk(15, b"p"), chunk(7, b"\x01")), "2 bytes"),
        (packet(chunk(15, b"p"), chunk(9, b"\x01\x02")), "timestamp"),
        (packet(chunk(15, b"p"), chunk(11, b"")), "1 byte"),
        (packet(chunk(15, b"p"), chunk(12, b"\x01\x02\x03")), "capture id"),
        (packet(chunk(16, b"\x78\x9c")), "compressed"),
    ],
)
def test_malformed_packets(data: bytes, words: str) -> None:
    with pytest.raises(HepDecodeError, match=words):
        decode_hep(data)


def test_a_caller_catching_value_error_catches_bad_packets() -> None:
    with pytest.raises(ValueError, match="HEP3"):
        decode_hep(b"nonsense")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"src_ip": "10.0.0.300"},
        {"src_ip": "pbx.example"},
        {"dst_ip": "::1"},
        {"src_port": 70000},
        {"dst_port": -1},
        {"timestamp": -1.0},
        {"proto_type": 256},
        {"capture_id": 2**32},
        {"payload": b"x" * 70000},
    ],
)
def test_encode_rejects_bad_values(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "payload": b"x",
        "src_ip": "10.0.0.1",
        "src_port": 1,
        "dst_ip": "10.0.0.2",
        "dst_port": 2,
        "timestamp": 1.0,
    }
    args.update(kwargs)
    with pytest.raises(HepEncodeError):
        encode_hep(**args)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_packet_or_hep_decode_error(data: bytes) -> None:
    for candidate in (data, b"HEP3" + data, b"HEP3" + struct.pack(">H", 6 + len(data)) + data):
        with contextlib.suppress(HepDecodeError):
            decode_hep(candidate)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_edited_packets_give_a_packet_or_hep_decode_error(data: st.DataObject) -> None:
    raw = bytearray(asterisk_like())
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw))) :]
    with contextlib.suppress(HepDecodeError):
        decode_hep(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=1000),
    v6=st.booleans(),
    ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    micros=st.integers(0, 2**32 * 1_000_000 - 2_000_000),
    capture_id=st.integers(0, 2**32 - 1),
    auth_key=st.none() | st.text(max_size=20).filter(lambda s: not s.endswith("\x00")),
)
def test_any_encoded_packet_decodes_to_the_same_fields(
    payload: bytes,
    v6: bool,
    ports: tuple[int, int],
    micros: int,
    capture_id: int,
    auth_key: str | None,
) -> None:
    src, dst = ("2001:db8::a", "fe80::1") if v6 else ("192.0.2.1", "198.51.100.7")
    pkt = decode_hep(
        encode_hep(
            payload,
            src_ip=src,
            src_port=ports[0],
            dst_ip=dst,
            dst_port=ports[1],
            timestamp=micros / 1_000_000,
            capture_id=capture_id,
            auth_key=auth_key,
        )
    )
    assert (pkt.payload, pkt.src_ip, pkt.dst_ip) == (payload, src, dst)
    assert (pkt.src_port, pkt.dst_port, pkt.capture_id, pkt.auth_key) == (
        *ports,
        capture_id,
        auth_key,
    )
    assert pkt.timestamp is not None and abs(pkt.timestamp - micros / 1_000_000) < 2e-6


def _general(data: bytes) -> object:
    """What the general, chunk-by-chunk decoder says about `data` (a packet or the error)."""
    try:
        if data[:4] != b"HEP3" or len(data) < 6 or (data[4] << 8 | data[5]) != len(data):
            return decode_hep(data)  # framing errors are checked before any layout is tried
        return hep_module._decode_chunks(data, len(data))
    except HepDecodeError as exc:
        return ("error", str(exc))


def _fast(decoder: HepDecoder, data: bytes) -> object:
    try:
        return decoder.decode(data)
    except HepDecodeError as exc:
        return ("error", str(exc))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_learned_layout_fast_path_agrees_with_the_general_decoder(
    data: st.DataObject,
) -> None:
    payload = data.draw(st.binary(min_size=0, max_size=300))
    key = data.draw(st.one_of(st.none(), st.text(alphabet="abcxyz0189-", max_size=20)))
    corr = data.draw(st.one_of(st.none(), st.text(alphabet="abc123@.", max_size=20)))
    good = encode_hep(
        payload,
        src_ip="10.0.0.1",
        src_port=5060,
        dst_ip="10.0.0.2",
        dst_port=5061,
        timestamp=data.draw(st.floats(min_value=0, max_value=2**31, allow_nan=False)),
        capture_id=data.draw(st.integers(min_value=0, max_value=2**32 - 1)),
        auth_key=key,
        correlation_id=corr,
    )
    decoder = HepDecoder()
    decoder.decode(good)  # teach the decoder this layout
    assert _fast(decoder, good) == _general(good)
    # Any byte of a packet of a known layout changed: both paths still say the same.
    mutated = bytearray(good)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        i = data.draw(st.integers(min_value=0, max_value=len(mutated) - 1))
        mutated[i] = data.draw(st.integers(min_value=0, max_value=255))
    assert _fast(decoder, bytes(mutated)) == _general(bytes(mutated))


def test_decoding_changes_no_module_state() -> None:
    """What a decoder learns stays on it: the module holds no mutable container at all."""
    mutable = (list, dict, set, bytearray)
    names = [name for name in vars(hep_module) if not name.startswith("__")]
    assert [name for name in names if isinstance(getattr(hep_module, name), mutable)] == []
    first, second = HepDecoder(), HepDecoder()
    for _ in range(3):
        assert first.decode(asterisk_like()) == decode_hep(asterisk_like())
    assert second.decode(asterisk_like()) == first.decode(asterisk_like())
