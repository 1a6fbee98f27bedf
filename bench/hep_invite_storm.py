"""One phone's INVITE storm through the HEP capture path: seconds per storm size, and memory.

    python bench/hep_invite_storm.py [--sizes 10000,20000,40000] [--future] [--huge-call-ids]

A watched phone has one answered call; then N new outgoing INVITEs from that phone arrive, none
answered (each stays live until its 300 s set-up limit), as HEPv3 datagrams built before
timing. Each storm is fed through what a `[[sources.hep]]` source does per datagram (HEP decode,
SIP parse, de-dup, dialog tracking, detection) on a fresh tracker, and the script prints the
seconds it took, microseconds per INVITE, the tracker's live legs and evictions, and with
`--memory` the traced memory the tracker holds afterwards (a second, untimed run).
`--future` stamps every packet in 2106 (a capture host's clock off); `--huge-call-ids` gives
every INVITE a 29 KB Call-ID.

Before/after: the figures depend only on `bridge/`; run it with `PYTHONPATH=<another
checkout>` to measure that checkout (issue 14 item 7: main was quadratic, 10k/20k/40k INVITEs
took 3.9/15.4/56.4 s there). Bounded: a storm that passes `--limit` seconds (default 120) stops
the run with exit status 3. No network, no files written.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc

from bridge.hep.decode import HepDecoder
from bridge.hep.directory import PhoneDirectory
from bridge.hep.encode import encode_hep
from bridge.hep.tracker import SipTracker

AGENT = "sip:1001@pbx.example"
YEAR_2106 = 4_294_967_295.0


def sip(start: str, cseq: str, call_id: str, to: str, branch: str) -> bytes:
    lines = [
        start,
        f"Via: SIP/2.0/UDP 10.0.0.11:5060;branch=z9hG4bK{branch}",
        "From: <sip:1001@pbx.example>;tag=ph",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq}",
        "Contact: <sip:1001@10.0.0.11:5060>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def hep(payload: bytes, stamp: float) -> bytes:
    return encode_hep(
        payload,
        src_ip="10.0.0.11",
        src_port=5060,
        dst_ip="10.0.0.2",
        dst_port=5060,
        timestamp=stamp,
    )


def storm(size: int, *, future: bool, huge: bool) -> list[bytes]:
    stamp = YEAR_2106 if future else 1_795_604_742.0
    out = [
        hep(sip("INVITE sip:2001@pbx SIP/2.0", "1 INVITE", "cust", "<sip:2001@pbx>", "c"), stamp),
        hep(sip("SIP/2.0 200 OK", "1 INVITE", "cust", "<sip:2001@pbx>;tag=far", "c"), stamp),
    ]
    pad = "x" * 29_000 if huge else ""
    for n in range(size):
        to = f"<sip:{3000 + n % 500}@pbx>"
        call_id = f"storm-{n}-{pad}"
        out.append(
            hep(sip(f"INVITE sip:{3000}@pbx SIP/2.0", "1 INVITE", call_id, to, f"s{n}"), stamp)
        )
    return out


def run(size: int, args: argparse.Namespace, *, memory: bool) -> tuple[float, SipTracker, int]:
    packets = storm(size, future=args.future, huge=args.huge_call_ids)
    gc.collect()
    if memory:
        tracemalloc.start()
    decoder = HepDecoder()
    tracker = SipTracker(PhoneDirectory([AGENT]), source="bench")
    now = 1000.0
    started = time.perf_counter()
    for i, datagram in enumerate(packets):
        packet = decoder.decode(datagram)
        tracker.feed_bytes(packet.payload, packet.timestamp or 0.0, now + i * 1e-4)
        if i % 1024 == 0 and time.perf_counter() - started > args.limit:
            print(f"{size:>7} INVITEs: over the {args.limit:.0f} s limit after {i} datagrams")
            raise SystemExit(3)
    seconds = time.perf_counter() - started
    del packets, decoder
    gc.collect()
    held = 0
    if memory:
        held, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return seconds, tracker, held


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,20000,40000")
    parser.add_argument("--future", action="store_true", help="stamp packets in 2106")
    parser.add_argument("--huge-call-ids", action="store_true", help="29 KB Call-IDs")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds per storm")
    parser.add_argument(
        "--memory", action="store_true", help="also weigh what the tracker holds (a second run)"
    )
    args = parser.parse_args()
    print(f"bridge from: {sys.modules['bridge'].__file__}")
    print(
        f"{'INVITEs':>8} {'seconds':>8} {'us/INVITE':>10} {'legs':>6} {'evicted':>8} {'MB held':>8}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        seconds, tracker, _ = run(size, args, memory=False)
        held = run(size, args, memory=True)[2] if args.memory else 0
        stats = tracker.stats
        print(
            f"{size:>8} {seconds:>8.2f} {seconds / size * 1e6:>10.1f} {stats.dialogs:>6} "
            f"{stats.evicted:>8} {held / 1e6 if held else float('nan'):>8.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
