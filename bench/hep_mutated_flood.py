"""Mutated real captures through the HEP capture path, for memory: does anything grow?

    python bench/hep_mutated_flood.py [--packets 500000] [--every 100000] [--seed 14]

Takes the SIP payload of every packet of the real captures in tests/fixtures/hep/*.hep and,
per datagram, gives its Call-ID, tags and branches a per-datagram suffix (so nothing is a
duplicate and every INVITE is a new call) and half the time mutates it (bytes overwritten or
inserted: separators, Unicode digits, huge numbers, 3 KB runs); each is wrapped in HEPv3 again
with a capture time of 1970, 2106 or the recorded one, and goes through what a
`[[sources.hep]]` source does (HepDecoder, SipTracker.feed_bytes, expiry every second of the
bridge's clock, which advances 1 ms per datagram). Every `--every` datagrams it prints the
process's RSS, the tracked dialogs, the de-dup entries, every table's size and the counters.
Issue 14 item 7: 2.16 M such packets grew main's memory from 27 MB to 396 MB. With
`PYTHONPATH=<another checkout>` it measures that checkout. No network, no files written.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

from bridge.hep.capture import split_capture
from bridge.hep.decode import HepDecodeError, HepDecoder, decode_hep
from bridge.hep.directory import PhoneDirectory
from bridge.hep.encode import encode_hep
from bridge.hep.tracker import SipTracker

ROOT = Path(__file__).resolve().parents[1]
NASTY = [
    b"\x00", b"\r\n", b";", b",", b"<", b">", "²".encode(), b"9" * 30, b"x" * 3000,
    b"tag=", b"branch=", b"\r\n\r\n", b"INVITE ", b"Call-ID: ",
]  # fmt: skip
IDS = re.compile(rb"(Call-ID|i|tag|branch)([:=] ?)([^\r\n;>]+)", re.IGNORECASE)


def rss_mb() -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def variant(payload: bytes, n: int, rng: random.Random) -> bytes:
    suffix = b"-%d" % n
    data = bytearray(IDS.sub(lambda m: m.group(1) + m.group(2) + m.group(3) + suffix, payload))
    if rng.random() < 0.5:
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            data[at : at + rng.randint(0, 6)] = rng.choice(NASTY)
    return encode_hep(
        bytes(data),
        src_ip="10.0.0.1",
        src_port=5060,
        dst_ip="10.0.0.2",
        dst_port=5060,
        timestamp=rng.choice((0.0, 4_294_967_295.0, 1_795_604_742.0)),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=500_000)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    fixtures = sorted((ROOT / "tests" / "fixtures" / "hep").glob("*.hep"))
    payloads = [decode_hep(p).payload for f in fixtures for p in split_capture(f.read_bytes())]
    phones = PhoneDirectory([f"sip:{n}@127.0.0.1" for n in range(1000, 1010)], match_user=True)
    decoder = HepDecoder()
    tracker = SipTracker(phones, source="bench")
    print(f"bridge from: {sys.modules['bridge'].__file__}; {len(payloads)} recorded packets")
    print(f"{'datagrams':>10} {'RSS MB':>7} {'dialogs':>8} {'dedup':>7}  tables; counters")
    started, now, next_expiry, bad = time.perf_counter(), 0.0, 1.0, 0
    for n in range(1, args.packets + 1):
        data = variant(rng.choice(payloads), n, rng)
        now += 0.001
        try:
            packet = decoder.decode(data)
            tracker.feed_bytes(packet.payload, packet.timestamp or 0.0, now)
        except HepDecodeError:
            bad += 1
        if now >= next_expiry:
            tracker.expire(now)
            next_expiry = now + 1.0
        if n % args.every == 0:
            stats = tracker.stats
            tables = getattr(tracker, "tables", None)  # absent before issue 14
            sizes = {k: v[0] for k, v in tables().items()} if tables else {}
            print(
                f"{n:>10} {rss_mb():>7.1f} {stats.dialogs:>8} {stats.dedupe_entries:>7}  {sizes}; "
                f"unmatched {stats.unmatched}, dropped {stats.dropped}, events {stats.events}, "
                f"evicted {stats.evicted}, oversized {getattr(stats, 'oversized', '-')}, "
                f"HEP errors {bad}",
                flush=True,
            )
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
