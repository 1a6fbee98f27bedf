"""Reading a rig capture: decode each HEP packet, parse its SIP, and pair the proxy's copies.

Kamailio (siptrace, trace_mode 1) mirrors every message twice: as received (phone -> proxy) and
as forwarded (proxy -> phone). Both copies share the start line, Call-ID, CSeq and the bottom
Via (the originating phone's branch); the forwarded request has one more Via on top, the
forwarded response one fewer. :func:`message_key` is that shared identity.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.hep.decode import HepPacket, decode_hep
from bridge.sip import SipMessage, parse_message


@dataclass(frozen=True)
class WireMessage:
    index: int  # arrival order at the collector
    hep: HepPacket
    sip: SipMessage

    def label(self) -> str:
        sip = self.sip
        if sip.is_request:
            return str(sip.method)
        return f"{sip.status_code} ({sip.cseq.method})"


MessageKey = tuple[str, str, int, str, str]


def decode_capture(packets: Iterable[bytes]) -> list[WireMessage]:
    """Decode and parse every packet; raise on the first that is not HEP-carried SIP."""
    out = []
    for index, raw in enumerate(packets):
        hep = decode_hep(raw)
        out.append(WireMessage(index, hep, parse_message(hep.payload)))
    return out


def message_key(msg: SipMessage) -> MessageKey:
    """(start line, Call-ID, CSeq number, CSeq method, originating Via branch)."""
    branches = msg.via_branches()
    origin = branches[-1] if branches else None
    cseq = msg.cseq
    return (msg.start_line.strip(), msg.call_id, cseq.number, cseq.method, origin or "")


def pair_copies(messages: Iterable[WireMessage]) -> dict[MessageKey, list[WireMessage]]:
    """Group the copies of each message, in arrival order."""
    groups: dict[MessageKey, list[WireMessage]] = defaultdict(list)
    for m in messages:
        groups[message_key(m.sip)].append(m)
    return dict(groups)


def is_from_proxy(m: WireMessage, proxy_port: int) -> bool:
    return m.hep.src_port == proxy_port


def summary(messages: Iterable[WireMessage], proxy_port: int | None = None) -> str:
    """One line per packet: index, relative time, ports, direction, label, Call-ID."""
    lines = []
    items = list(messages)
    t0 = next((m.hep.timestamp for m in items if m.hep.timestamp is not None), 0.0) or 0.0
    for m in items:
        arrow = ""
        if proxy_port is not None:
            arrow = "fwd" if is_from_proxy(m, proxy_port) else "rcv"
        ts = (m.hep.timestamp or 0.0) - t0
        lines.append(
            f"{m.index:3d} {ts:7.3f} {m.hep.src_port:5d}->{m.hep.dst_port:<5d} {arrow:3s} "
            f"{m.label():18s} {m.sip.call_id}"
        )
    return "\n".join(lines)
