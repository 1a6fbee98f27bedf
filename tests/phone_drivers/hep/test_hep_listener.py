"""The HEP listener on a real UDP socket: what it hands on, what it counts and drops."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.hep.decode import HepProto
from bridge.hep.encode import encode_hep
from phone_drivers.hep import HepListener

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sip"
INVITE = (FIXTURES / "invite_pjsua_sdp.txt").read_bytes().replace(b"\n", b"\r\n")


def packet(
    payload: bytes = INVITE,
    *,
    key: str | None = "secret",
    proto: int = HepProto.SIP,
    ts: float = 1_764_000_000.25,
) -> bytes:
    return encode_hep(
        payload,
        src_ip="127.0.0.1",
        src_port=5081,
        dst_ip="127.0.0.1",
        dst_port=5070,
        timestamp=ts,
        proto_type=proto,
        capture_id=4242,
        auth_key=key,
    )


async def started(password: str | None = "secret") -> tuple[HepListener, list[tuple[bytes, float]]]:
    got: list[tuple[bytes, float]] = []
    listener = HepListener(
        "pbx", "127.0.0.1", 0, password, lambda p, at, *_: got.append((p, at)), clock=lambda: 0.0
    )
    listener.start()
    return listener, got


async def settle(listener: HepListener, count: int) -> None:
    for _ in range(200):
        if listener.stats.received >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"only {listener.stats.received} of {count} datagrams arrived")


async def test_sip_payloads_are_handed_on_with_their_capture_time() -> None:
    listener, got = await started()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(packet(), listener.address)
        await settle(listener, 1)
    listener.close()
    assert got == [(INVITE, 1_764_000_000.25)]
    assert listener.stats.sip == 1


async def test_the_packets_addresses_are_handed_on_so_the_phone_is_told_from_its_pbx() -> None:
    got: list[tuple[object, object]] = []
    listener = HepListener(
        "pbx", "127.0.0.1", 0, None, lambda p, at, src, dst: got.append((src, dst)), clock=time.time
    )
    listener.start()
    no_addresses = encode_hep(  # a capture agent that leaves the addresses unset
        INVITE, src_ip="0.0.0.0", src_port=0, dst_ip="0.0.0.0", dst_port=0, timestamp=1.0
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(packet(), listener.address)
        tx.sendto(no_addresses, listener.address)
        await settle(listener, 2)
    listener.close()
    assert got == [(("127.0.0.1", 5081), ("127.0.0.1", 5070)), (None, None)]


async def test_bad_packets_are_counted_and_dropped_and_the_listener_goes_on() -> None:
    listener, got = await started()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for data in (
            b"",  # empty
            b"HEP3\x00\x05",  # truncated
            os.urandom(300),  # noise
            packet(key="wrong"),  # another capture point's password
            packet(key=None),  # no password at all
            packet(b'{"type": "rtcp"}', proto=HepProto.RTCP),  # Asterisk's RTCP reports
            packet(),  # and then a good one still gets through
        ):
            tx.sendto(data, listener.address)
        await settle(listener, 7)
    listener.close()
    assert listener.stats.dropped == {"malformed": 3, "unauthorized": 2, "not_sip": 1, "failed": 0}
    assert [p for p, _ in got] == [INVITE]


async def test_without_a_password_any_auth_key_is_accepted() -> None:
    listener, got = await started(password=None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(packet(key=None), listener.address)
        tx.sendto(packet(key="whatever"), listener.address)
        await settle(listener, 2)
    listener.close()
    assert len(got) == 2


async def test_a_failing_consumer_is_counted_not_fatal() -> None:
    calls = []

    def sink(payload: bytes, at: float, src: object, dst: object) -> None:
        calls.append(at)
        raise RuntimeError("downstream bug")

    listener = HepListener("pbx", "127.0.0.1", 0, None, sink, clock=lambda: 0.0)
    listener.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(packet(), listener.address)
        tx.sendto(packet(), listener.address)
        await settle(listener, 2)
    listener.close()
    assert len(calls) == 2
    assert listener.stats.dropped["failed"] == 2


async def test_a_burst_is_drained_without_loss() -> None:
    listener, got = await started()
    burst = 2000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        data = packet()
        for _ in range(burst):
            tx.sendto(data, listener.address)
        await settle(listener, burst)
    listener.close()
    assert len(got) == burst


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_datagram_is_counted_once_as_sip_or_dropped(data: bytes) -> None:
    got: list[tuple[bytes, float]] = []
    listener = HepListener(
        "pbx", "127.0.0.1", 0, "secret", lambda p, at, *_: got.append((p, at)), clock=lambda: 0.0
    )
    listener.handle(data)  # the same path a datagram takes, without the socket
    listener.handle(b"HEP3" + data)
    assert listener.stats.received == 2
    assert sum(listener.stats.dropped.values()) + listener.stats.sip == 2
