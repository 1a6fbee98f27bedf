"""A UDP HEPv3 listener that drains many datagrams per loop turn and never awaits per packet.

docs/benchmarks.md: the default asyncio datagram transport reads one datagram per loop turn; a
reader callback on a non-blocking socket that drains the socket reaches ~66k packets/s with
decode and keys. Every packet is decoded, checked and handed on synchronously; anything
malformed, unauthorised or not SIP is counted and dropped, never raised.

Datagrams the kernel drops because the socket's receive queue is full (a flood, or a loop held
up) never reach this code; Linux counts them per socket, and the listener reports that count
(the `drops` column of the socket's line in /proc/net/udp, read when asked: no cost per
datagram, where `recvmsg` with `SO_RXQ_OVFL` would double the cost of each read) as
`kernel_drops`.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from bridge.hep.decode import HepDecodeError, HepDecoder, HepProto
from bridge.hep.sides import Hop, hop

log = structlog.get_logger("transfer_bridge.hep.decode")

MAX_DATAGRAM = 65535
DRAIN_BATCH = 512  # datagrams read per loop turn before yielding to other callbacks
RECEIVE_BUFFER = 4 * 1024 * 1024

# (SIP payload, capture time, the packet's source and destination addresses when it has them)
SipSink = Callable[[bytes, float, Hop | None, Hop | None], None]


@dataclass
class HepStats:
    """What the listener received and why it dropped what it dropped."""

    received: int = 0
    sip: int = 0
    dropped: dict[str, int] = field(
        default_factory=lambda: {"malformed": 0, "unauthorized": 0, "not_sip": 0, "failed": 0}
    )


class HepListener:
    """Listens on one UDP address; hands each SIP payload and its capture time to `sink`."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        password: str | None,
        sink: SipSink,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._password = password.encode() if password else None
        self._sink = sink
        self._clock = clock
        self.stats = HepStats()
        self._decoder = HepDecoder()  # one per socket: it learns the capture agents' layouts
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kernel_drops = 0

    @property
    def address(self) -> tuple[str, int]:
        """Where it actually listens (the port is known after start when 0 was asked)."""
        if self._sock is None:
            return (self.host, self.port)
        host, port = self._sock.getsockname()[:2]
        return (host, port)

    def start(self) -> None:
        """Bind and start reading; raises OSError if the address cannot be had."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.setblocking(False)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain)
        log.info("hep_listening", source=self.name, listen=f"{self.address[0]}:{self.address[1]}")

    def close(self) -> None:
        """Stop reading and release the socket."""
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped for this socket (full receive queue) since it opened:
        the `drops` column of its line in /proc/net/udp (or udp6); 0 where there is none.
        The last count seen is kept, so a closed socket still reports it."""
        sock = self._sock
        drops = self._kernel_drops
        if sock is None:
            return drops
        inode = str(os.fstat(sock.fileno()).st_ino)
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(table, encoding="ascii") as lines:
                    for line in lines:
                        fields = line.split()
                        if len(fields) >= 13 and fields[9] == inode and fields[12].isdigit():
                            self._kernel_drops = max(drops, int(fields[12]))
                            return self._kernel_drops
            except OSError:
                continue
        return drops

    def _drain(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(DRAIN_BATCH):
            try:
                data = sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                log.warning("hep_receive_error", source=self.name, error=str(exc))
                return
            self.handle(data)

    def handle(self, data: bytes) -> None:
        """One datagram: decode, check, hand on. Never raises."""
        stats = self.stats
        stats.received += 1
        try:
            packet = self._decoder.decode(data)
        except HepDecodeError:
            stats.dropped["malformed"] += 1
            return
        if self._password is not None and not hmac.compare_digest(
            (packet.auth_key or "").encode(), self._password
        ):
            stats.dropped["unauthorized"] += 1
            return
        if packet.proto_type != HepProto.SIP:
            stats.dropped["not_sip"] += 1  # Asterisk also sends RTCP reports (type 5)
            return
        stats.sip += 1
        at = packet.timestamp if packet.timestamp is not None else self._clock()
        try:
            src = hop(packet.src_ip, packet.src_port)
            dst = hop(packet.dst_ip, packet.dst_port)
            self._sink(packet.payload, at, src, dst)
        except Exception:
            # A bug downstream must not stop the capture; it is counted and logged once each.
            stats.dropped["failed"] += 1
            log.exception("hep_packet_failed", source=self.name)
