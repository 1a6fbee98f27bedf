"""SIP capture pipeline throughput and memory: HEP decode + parse + dialog tracking + detection.

    python bench/sip_pipeline.py [--calls 3000] [--rounds 5] [--soak [CALLS]]

Builds a realistic recorded mix from the six real Kamailio/SIPp captures in
tests/fixtures/hep/*.hep: every replayed call gets its own Call-ID, tags, Via branches, agent
extension and customer number; 40 calls start per second of capture time and are interleaved;
most are ordinary calls (a capture cut before its first REFER or hold, then hung up), some are
the full transfers; some are about agent phones the directory does not watch. All packets are
built as bytes before timing. On one core (pinned), best of `--rounds`, it measures messages
per second for a bare baseline (SIP payload split into start line + header dict), HEP decode
alone, HEP decode + parse_message, the tracker alone and the whole pipeline (HepDecoder +
SipTracker.feed_bytes + expiry as the app runs it), then memory per tracked dialog
(tracemalloc). `--soak` replays 200,000 calls (or CALLS) through the pipeline with expiry and
samples tracked dialogs, de-duplication entries and RSS every 20,000 calls.

Goal: pipeline >= 0.5 x baseline. The default run bounds itself (< 2 minutes); the soak has its
own bound (10 minutes). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import heapq
import os
import random
import re
import signal
import struct
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge.evidence import PhoneEvent, describe
from bridge.hep.capture import split_capture
from bridge.hep.decode import HepDecoder, HepProto, decode_hep
from bridge.hep.dedup import Deduplicator, message_key
from bridge.hep.directory import PhoneDirectory
from bridge.hep.encode import encode_hep
from bridge.hep.tracker import SipTracker
from bridge.sip import SipParseError, parse_message
from bridge.uris import uri_of_header, user_of_uri

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "hep"
CASES = (
    "blind_success",
    "blind_busy",
    "refer_rejected",
    "attended_success",
    "consult_customer_hangup",
    "consult_abandoned",
)
AGENT, TARGET, CUSTOMER = b"1001", b"1002", b"2000"  # the phones of the captures
GOAL = 0.5
DEADLINE_S = 115
SOAK_DEADLINE_S = 600
SEED = 20260515

# --- the capture files -----------------------------------------------------------------------


def read_hep_file(path: Path) -> list[bytes]:
    """All packets of a capture file, in arrival order."""
    return list(split_capture(path.read_bytes()))


# --- templates: one capture with its per-call identifiers as slots -------------------------------

SUFFIX, AGENT_SLOT, TARGET_SLOT, CUSTOMER_SLOT = range(4)
# Who sent or received a packet, for its IP address: the proxy (Kamailio), the carrier side the
# customers come from, the agent's phone, the transfer target's phone.
PROXY, CARRIER, AGENT_PHONE, TARGET_PHONE = range(4)
ROLE_OF_USER = {"2000": CARRIER, "1001": AGENT_PHONE, "1002": TARGET_PHONE}
PROXY_IP, CARRIER_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
_ADDRESSES = struct.Struct(">HHH4sHHH4s")  # chunks 3 and 4
_CHUNK = struct.Struct(">HHH")
_TIME = struct.Struct(">HHHIHHHI")  # chunk 9 (seconds) and chunk 10 (microseconds)
_PAYLOAD = struct.Struct(">HHH")


@dataclass
class TPacket:
    """One packet of a template: where it sits in the call and how to build its bytes."""

    offset: float  # seconds after the call's start
    after_cut: bool  # after the talk time inserted in the call
    src: int  # roles (PROXY ...) of the sender and the receiver
    dst: int
    family: bytes  # HEP chunks 1-2 (IP family and protocol)
    ports: bytes  # HEP chunks 7-8
    tail: bytes  # HEP chunks between the timestamps and the payload (type, capture id, auth)
    pieces: list[bytes]  # the payload: literal pieces with a slot after each but the last
    slots: list[int]


@dataclass
class Template:
    """A capture, or the ordinary call cut from it."""

    name: str
    transfer: bool
    packets: list[TPacket]
    methods: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # packets a de-duplicator drops (second captures, retransmissions)


@dataclass
class _Parts:
    family: bytes
    ports: bytes
    tail: bytes
    at: float
    payload: bytes
    src_port: int
    dst_port: int


def _hep_parts(raw: bytes) -> _Parts:
    """Split a captured HEP packet into its parts; checks it has Kamailio's layout."""
    pkt = decode_hep(raw)
    assert pkt.timestamp is not None
    off = 6
    chunks: list[tuple[int, bytes]] = []
    while off < len(raw):
        _, ctype, clen = _CHUNK.unpack_from(raw, off)
        chunks.append((ctype, raw[off : off + clen]))
        off += clen
    types = [t for t, _ in chunks]
    assert types[:8] == [1, 2, 3, 4, 7, 8, 9, 10] and types[-1] == 15, types
    return _Parts(
        chunks[0][1] + chunks[1][1],
        chunks[4][1] + chunks[5][1],
        b"".join(c for _, c in chunks[8:-1]),
        pkt.timestamp,
        pkt.payload,
        pkt.src_port,
        pkt.dst_port,
    )


def _roles(parts: list[_Parts]) -> dict[int, int]:
    """Which capture port is the proxy, the customer, the agent, the target (by Contact user)."""
    ports = [{p.src_port, p.dst_port} for p in parts]
    proxy = set.intersection(*ports)
    assert len(proxy) == 1, proxy
    roles = {proxy.pop(): PROXY}
    for p in parts:
        if p.src_port in roles:
            continue
        msg = parse_message(p.payload)
        # The sender's own user: its Contact, else From of a request or To of a response.
        who = msg.header("contact") or msg.header("from" if msg.is_request else "to") or ""
        user = user_of_uri(uri_of_header(who))
        if user in ROLE_OF_USER:
            roles[p.src_port] = ROLE_OF_USER[user]
    assert set.union(*ports) <= roles.keys(), (roles, ports)
    return roles


def _identifiers(payloads: list[bytes]) -> list[bytes]:
    """The Call-IDs, tags and Via branches of a capture (rewritten per replayed call)."""
    found: set[str] = set()
    for payload in payloads:
        msg = parse_message(payload)
        found.add(msg.call_id.split("///")[-1])  # consult///<id>, xfer///<id>
        for tag in (msg.from_tag, msg.to_tag, *msg.via_branches()):
            if tag:
                found.add(tag)
    return sorted((t.encode() for t in found), key=len, reverse=True)


def _slotted(payload: bytes, pattern: re.Pattern[bytes]) -> tuple[list[bytes], list[int]]:
    """Cut the header section at every identifier (a suffix follows) and phone user part."""
    end = payload.find(b"\r\n\r\n")
    head, body = payload[:end], payload[end:]  # the body is kept as is: Content-Length holds
    pieces: list[bytes] = []
    slots: list[int] = []
    last = 0
    for m in pattern.finditer(head):
        if m.group("tok"):
            pieces.append(head[last : m.end()])
            slots.append(SUFFIX)
            last = m.end()
        else:
            user = m.group("user")
            pieces.append(head[last : m.start()])
            slots.append({AGENT: AGENT_SLOT, TARGET: TARGET_SLOT}.get(user, CUSTOMER_SLOT))
            last = m.end()
    pieces.append(head[last:] + body)
    return pieces, slots


def _cut_index(payloads: list[bytes]) -> int:
    """The first packet that leaves an ordinary call: REFER, re-INVITE (hold), another dialog."""
    base = parse_message(payloads[0]).call_id
    for i, payload in enumerate(payloads):
        msg = parse_message(payload)
        if msg.call_id != base or msg.method == "REFER":
            return i
        if msg.method == "INVITE" and msg.to_tag is not None:
            return i
    return len(payloads)


def load_templates() -> list[Template]:
    """Each capture as a transfer template and as an ordinary-call template."""
    templates: list[Template] = []
    for name in CASES:
        raws = read_hep_file(FIXTURES / f"{name}.hep")
        parts = [_hep_parts(raw) for raw in raws]
        payloads = [p.payload for p in parts]
        tokens = _identifiers(payloads)
        pattern = re.compile(
            b"(?P<tok>"
            + b"|".join(re.escape(t) for t in tokens)
            + rb")(?![A-Za-z0-9._-])|(?<=sip:)(?P<user>1001|1002|2000)(?=@)"
        )
        t0 = parts[0].at
        cut = _cut_index(payloads)
        roles = _roles(parts)
        full: list[TPacket] = []
        for i, p in enumerate(parts):
            pieces, slots = _slotted(p.payload, pattern)
            src, dst = roles[p.src_port], roles[p.dst_port]
            full.append(
                TPacket(p.at - t0, i >= cut, src, dst, p.family, p.ports, p.tail, pieces, slots)
            )
        templates.append(Template(name, True, full))
        # The ordinary call: the set-up, talk, then the first BYE of the customer's dialog.
        base = parse_message(payloads[0]).call_id
        plain = full[:cut]
        byes = [
            (i, parse_message(payloads[i]))
            for i in range(cut, len(payloads))
            if parse_message(payloads[i]).call_id == base
        ]
        first_bye = next(m.cseq.number for _, m in byes if m.method == "BYE")
        bye = [i for i, m in byes if m.cseq.method == "BYE" and m.cseq.number == first_bye]
        first = parts[bye[0]].at
        end = full[cut - 1].offset
        for i in bye:
            offset = end + 0.2 + parts[i].at - first
            plain.append(replace(full[i], offset=offset, after_cut=True))
        templates.append(Template(name + " (plain)", False, plain))
    for t in templates:
        _describe_template(t)
    return templates


def _describe_template(t: Template) -> None:
    """Count methods and responses, and how many packets a de-duplicator drops."""
    dedup = Deduplicator()
    call = CallPlan(0, t, b"1001", b"1002", b"2000", 0.0, 0.0)
    for at, data in call.packets():
        msg = parse_message(decode_hep(data).payload)
        if msg.is_request:
            t.methods[msg.method or "?"] += 1
        else:
            t.methods[f"{msg.status_code} ({msg.cseq.method})"] += 1
        if dedup.seen(message_key(msg), at):
            t.duplicates += 1


@dataclass
class CallPlan:
    """One replayed call: a template with its own identifiers, phones and start time."""

    n: int
    template: Template
    agent: bytes
    target: bytes
    customer: bytes
    start: float
    talk: float

    def packets(self) -> Iterator[tuple[float, bytes]]:
        """(capture time, HEP packet bytes) in the capture's arrival order."""
        values = (b"-k%d" % self.n, self.agent, self.target, self.customer)
        ips = (PROXY_IP, CARRIER_IP, phone_ip(self.agent), phone_ip(self.target))
        start, talk = self.start, self.talk
        pack_time, pack_payload, pack_addresses = _TIME.pack, _PAYLOAD.pack, _ADDRESSES.pack
        for p in self.template.packets:
            at = start + p.offset + (talk if p.after_cut else 0.0)
            pieces = p.pieces
            out = [pieces[0]]
            for value, piece in zip(p.slots, pieces[1:], strict=True):
                out.append(values[value])
                out.append(piece)
            payload = b"".join(out)
            sec = int(at)
            usec = round((at - sec) * 1e6)
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            body = b"".join(
                (
                    p.family,
                    pack_addresses(0, 3, 10, ips[p.src], 0, 4, 10, ips[p.dst]),
                    p.ports,
                    pack_time(0, 9, 10, sec, 0, 10, 10, usec),
                    p.tail,
                    pack_payload(0, 15, 6 + len(payload)),
                    payload,
                )
            )
            yield at, b"HEP3" + (6 + len(body)).to_bytes(2, "big") + body


def phone_ip(extension: bytes) -> bytes:
    """Each agent's desk phone has its own address: 10.1.x.y."""
    n = int(extension)
    return bytes([10, 1 + (n >> 16), (n >> 8) & 0xFF, n & 0xFF])


# --- the mix -------------------------------------------------------------------------------------


@dataclass
class MixConfig:
    rate: float = 40.0  # calls starting per second of capture time
    agents: int = 1000  # agent extensions 1000..1999, used in turn (one call each at a time)
    watched: int = 600  # of which the directory watches 1001 and watched-1 others
    transfer_share: float = 0.2  # calls that are one of the six transfer captures in full
    talk: tuple[float, float] = (4.0, 16.0)  # seconds inserted before the first REFER/hold/BYE
    start: float = 1_795_600_000.0  # capture time of the first call (late 2026, as recorded)


def agent_extensions(cfg: MixConfig) -> list[str]:
    return [str(1000 + i) for i in range(cfg.agents)]


def watched_phones(cfg: MixConfig) -> list[str]:
    """1001 and watched-1 other extensions, the same in every run."""
    rng = random.Random(SEED + 1)
    others = [e for e in agent_extensions(cfg) if e != "1001"]
    chosen = ["1001", *rng.sample(others, cfg.watched - 1)]
    return [f"sip:{e}@pbx.example" for e in chosen]


def directory_for(phones: list[str]) -> PhoneDirectory:
    # As configured for a HEP source whose captures show the PBX by IP: match by user part.
    return PhoneDirectory(phones, match_user=True)


def plan_calls(templates: list[Template], cfg: MixConfig, count: int) -> Iterator[CallPlan]:
    """The calls of the mix in start order (deterministic)."""
    rng = random.Random(SEED)
    transfers = [t for t in templates if t.transfer]
    plains = [t for t in templates if not t.transfer]
    exts = [e.encode() for e in agent_extensions(cfg)]
    for n in range(count):
        pool = transfers if rng.random() < cfg.transfer_share else plains
        template = pool[rng.randrange(len(pool))]
        agent = exts[n % len(exts)]
        target = exts[(n + len(exts) // 2) % len(exts)]
        customer = b"6%08d" % rng.randrange(10**8)
        talk = rng.uniform(*cfg.talk)
        yield CallPlan(n, template, agent, target, customer, cfg.start + n / cfg.rate, talk)


def interleave(calls: Iterator[CallPlan]) -> Iterator[tuple[float, bytes, int]]:
    """The packets of all calls merged by capture time, each call's own order kept.

    Yields (capture time, packet, number of calls started so far).
    """
    heap: list[tuple[float, int, Iterator[tuple[float, bytes]], bytes]] = []
    started = 0
    for call in calls:
        started += 1
        # Everything before this call's start can go out: later calls start later still.
        while heap and heap[0][0] < call.start:
            yield _pop(heap, started - 1)
        it = call.packets()
        first = next(it, None)
        if first is not None:
            heapq.heappush(heap, (first[0], call.n, it, first[1]))
    while heap:
        yield _pop(heap, started)


def _pop(
    heap: list[tuple[float, int, Iterator[tuple[float, bytes]], bytes]], started: int
) -> tuple[float, bytes, int]:
    at, n, it, data = heap[0]
    nxt = next(it, None)
    if nxt is None:
        heapq.heappop(heap)
    else:
        # A later packet of the same call never goes out before this one.
        heapq.heapreplace(heap, (max(nxt[0], at), n, it, nxt[1]))
    return at, data, started


# --- the rows --------------------------------------------------------------------------------


def row_baseline(payloads: list[bytes]) -> float:
    """The CPython floor: start line and a header dict (lower-cased name -> raw value)."""
    t0 = time.perf_counter()
    for data in payloads:
        end = data.find(b"\r\n\r\n")
        lines = data[:end].decode("utf-8", "replace").split("\r\n")
        start_line = lines[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.lower()] = value
    elapsed = time.perf_counter() - t0
    del start_line, headers
    return elapsed


def row_decode(packets: list[bytes]) -> float:
    decode = HepDecoder().decode
    t0 = time.perf_counter()
    for data in packets:
        decode(data)
    return time.perf_counter() - t0


def row_decode_parse(packets: list[bytes]) -> float:
    decode, parse = HepDecoder().decode, parse_message
    suppress = contextlib.suppress(SipParseError)
    t0 = time.perf_counter()
    for data in packets:
        with suppress:
            parse(decode(data).payload)
    return time.perf_counter() - t0


@dataclass
class PipelineRun:
    seconds: float
    tracker: SipTracker
    events: list[PhoneEvent]


def row_tracker(payloads: list[bytes], times: list[float], phones: list[str]) -> PipelineRun:
    """SipTracker.feed_bytes alone on pre-extracted payloads (expiry as in the pipeline)."""
    tracker = SipTracker(directory_for(phones), "hep")
    feed = tracker.feed_bytes
    events: list[PhoneEvent] = []
    add = events.extend
    next_check = times[0] + 1.0 if times else 0.0
    gc.collect()
    t0 = time.perf_counter()
    for data, at in zip(payloads, times, strict=True):
        if at >= next_check:
            deadline = tracker.next_deadline()
            if deadline is not None and deadline <= at:
                tracker.expire(at)
            next_check = at + 1.0
        found = feed(data, at)
        if found:
            add(found)
    return PipelineRun(time.perf_counter() - t0, tracker, events)


def row_pipeline(packets: list[bytes], phones: list[str]) -> PipelineRun:
    """What the HEP source does per datagram: decode, SIP only, feed; expiry once a second."""
    tracker = SipTracker(directory_for(phones), "hep")
    decode, feed, sip = HepDecoder().decode, tracker.feed_bytes, HepProto.SIP
    events: list[PhoneEvent] = []
    add = events.extend
    next_check = 0.0
    gc.collect()
    t0 = time.perf_counter()
    for data in packets:
        pkt = decode(data)
        if pkt.proto_type != sip:
            continue
        at = pkt.timestamp
        assert at is not None
        if at >= next_check:
            deadline = tracker.next_deadline()
            if deadline is not None and deadline <= at:
                tracker.expire(at)
            next_check = at + 1.0
        found = feed(pkt.payload, at)
        if found:
            add(found)
    return PipelineRun(time.perf_counter() - t0, tracker, events)


def events_digest(events: list[PhoneEvent]) -> str:
    """A fingerprint of every event produced (equal before and after a change in behaviour)."""
    h = hashlib.sha256()
    for e in events:
        obs = describe(e.evidence.observation)
        h.update(repr((e.phone, e.call_id, e.remote, e.evidence.at, sorted(obs.items()))).encode())
    return h.hexdigest()[:16]


# --- checks --------------------------------------------------------------------------------------


def check_rewrite(templates: list[Template]) -> None:
    """A rewritten transfer call gives the same evidence as its original capture."""
    phones = ["sip:1001@pbx.example", "sip:1002@pbx.example"]
    for t in templates:
        if not t.transfer:
            continue
        original = SipTracker(directory_for(phones), "hep")
        want: list[tuple[str, str]] = []
        for raw in read_hep_file(FIXTURES / f"{t.name}.hep"):
            pkt = decode_hep(raw)
            want += brief(original.feed_bytes(pkt.payload, pkt.timestamp or 0.0))
        rewritten = SipTracker(directory_for(phones), "hep")
        got: list[tuple[str, str]] = []
        for plan in (
            CallPlan(7, t, AGENT, TARGET, b"612345678", 1e9, 30.0),
            CallPlan(8, t, AGENT, TARGET, b"612345679", 1e9 + 100, 30.0),
        ):
            for at, data in plan.packets():
                got += brief(rewritten.feed_bytes(decode_hep(data).payload, at))
        if got != want * 2:
            raise AssertionError(f"{t.name}: rewritten replay gives {got}, capture gives {want}")


def brief(events: list[PhoneEvent]) -> list[tuple[str, str]]:
    out = []
    for e in events:
        d = describe(e.evidence.observation)
        out.append((e.phone, str(d.get("state") or d.get("kind") or d.get("reason") or "")))
    return out


# --- memory --------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class MemoryResult:
    calls: int
    dialogs: int
    dedupe_entries: int
    per_dialog: float
    per_dedupe_entry: float


def measure_memory(templates: list[Template], cfg: MixConfig, calls: int) -> MemoryResult:
    """Set up `calls` concurrent answered calls, each with its own watched agent, and weigh them.

    tracemalloc counts what the tracker holds: after the de-duplication window has passed
    (dedupe entries expired) only the tracked dialogs remain.
    """
    plains = [t for t in templates if not t.transfer]
    phones = [f"sip:{100000 + i}@pbx.example" for i in range(calls)]
    tracker = SipTracker(directory_for(phones), "hep")
    plans = [
        CallPlan(
            i,
            Template(
                "setup", False, [p for p in plains[i % len(plains)].packets if not p.after_cut]
            ),
            str(100000 + i).encode(),
            b"1002",
            b"6%08d" % i,
            cfg.start + i / cfg.rate,
            0.0,
        )
        for i in range(calls)
    ]
    packets = [(at, decode_hep(data).payload) for at, data, _ in interleave(iter(plans))]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for at, payload in packets:
        tracker.feed_bytes(payload, at)
    gc.collect()
    with_dedupe = tracemalloc.get_traced_memory()[0] - base
    entries = len(tracker.dedup)
    last = packets[-1][0]
    tracker.expire(last + tracker.dedup.window + 1.0)
    gc.collect()
    dialogs_only = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    dialogs = len(tracker.dialogs)
    assert len(tracker.dedup) == 0
    return MemoryResult(
        calls,
        dialogs,
        entries,
        dialogs_only / max(1, dialogs),
        (with_dedupe - dialogs_only) / max(1, entries),
    )


@dataclass
class SoakSample:
    calls: int
    capture_s: float
    messages: int
    dialogs: int
    dedupe: int
    heap: int
    blocks: int  # memory blocks Python has allocated (sys.getallocatedblocks)
    rss: int
    wall: float


def soak(templates: list[Template], cfg: MixConfig, calls: int, every: int) -> list[SoakSample]:
    """Replay `calls` calls through the pipeline with expiry; sample every `every` calls."""
    phones = watched_phones(cfg)
    tracker = SipTracker(directory_for(phones), "hep")
    decode, feed, sip = HepDecoder().decode, tracker.feed_bytes, HepProto.SIP
    samples: list[SoakSample] = []
    next_check = 0.0
    next_sample = every
    t0 = time.monotonic()
    first_at: float | None = None

    def sample(n: int, at: float, label: str = "") -> None:
        gc.collect()
        st = tracker.stats
        samples.append(
            SoakSample(
                n,
                at - (first_at or at),
                st.messages,
                st.dialogs,
                st.dedupe_entries,
                len(tracker.dialogs._heap),  # expiry heap, stale entries included
                sys.getallocatedblocks(),
                rss_bytes(),
                time.monotonic() - t0,
            )
        )
        s = samples[-1]
        head = label or f"{s.calls:>8,} calls started"
        print(
            f"  {head:>22} {s.messages:>10,} msgs {s.dialogs:>7,} dialogs "
            f"{s.dedupe:>7,} dedupe {s.heap:>7,} heap {s.blocks:>10,} blocks "
            f"{s.rss / 2**20:>6.1f} MB RSS "
            f"{s.wall:>6.0f} s",
            flush=True,
        )

    at = 0.0
    for at, data, started in interleave(plan_calls(templates, cfg, calls)):
        if first_at is None:
            first_at = at
        if started >= next_sample:  # the call number next_sample has just started
            sample(next_sample, at)
            next_sample += every
        pkt = decode(data)
        if pkt.proto_type != sip:
            continue
        if at >= next_check:
            deadline = tracker.next_deadline()
            if deadline is not None and deadline <= at:
                tracker.expire(at)
            next_check = at + 1.0
        feed(pkt.payload, at)
    sample(calls, at, "all over, not expired")  # what remains lingers until its expiry
    return samples


# --- the run -------------------------------------------------------------------------------------


class BenchTimeout(Exception):
    """The run went past its time bound."""


def pin_one_core() -> int:
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[-1]
    os.sched_setaffinity(0, {cpu})
    return cpu


def describe_mix(
    templates: list[Template], plans: list[CallPlan], cfg: MixConfig, packets: int
) -> list[str]:
    used = Counter(p.template.name for p in plans)
    methods: Counter[str] = Counter()
    dups = 0
    for t in templates:
        k = used[t.name]
        for name, n in t.methods.items():
            methods[name] += n * k
        dups += t.duplicates * k
    total = sum(methods.values())
    transfers = sum(k for name, k in used.items() if "(plain)" not in name)
    watched = {p.split(":")[1].split("@")[0].encode() for p in watched_phones(cfg)}
    about_watched = sum(1 for p in plans if p.agent in watched)
    span = plans[-1].start - plans[0].start if plans else 0.0
    requests = [(m, n) for m, n in methods.most_common() if not m[0].isdigit()]
    responses = [(m, n) for m, n in methods.most_common() if m[0].isdigit()]
    lines = [
        f"mix: {len(plans):,} calls, {packets:,} HEP packets ({total:,} SIP), {cfg.rate:g} calls/s "
        f"over {span:.0f} s of capture time, talk {cfg.talk[0]:g}-{cfg.talk[1]:g} s",
        f"  calls: {len(plans) - transfers:,} ordinary (a capture cut before its first "
        f"REFER/hold, then BYE), {transfers:,} full transfers ("
        + ", ".join(f"{c} {used[c]}" for c in CASES)
        + ")",
        f"  agents: {cfg.agents:,} extensions, each with its own phone IP; the directory watches "
        f"{cfg.watched:,} (1001 + {cfg.watched - 1:,}); calls answered by a watched agent: "
        f"{about_watched / len(plans):.0%}",
        f"  duplicated (second capture by the proxy): {dups:,} packets = {dups / total:.1%}",
        "  requests: " + ", ".join(f"{m} {n / total:.1%}" for m, n in requests),
        "  responses: " + ", ".join(f"{m} {n / total:.1%}" for m, n in responses),
    ]
    return lines


LABELS = {
    "B": "B  baseline: payload -> start line + header dict",
    "H": "H  HEP decode only (HepDecoder)",
    "HP": "HP HEP decode + parse_message",
    "T": "T  tracker only: feed_bytes on payloads",
    "P": "P  pipeline: HepDecoder + feed_bytes + expire",
}


def timed_rows(
    templates: list[Template],
    cfg: MixConfig,
    calls: int,
    rounds: int,
    cpu: int | None,
    started: float,
) -> None:
    """Build the mix, time every row, print the table (the mix is freed on return)."""
    plans = list(plan_calls(templates, cfg, calls))
    stream = list(interleave(iter(plans)))
    packets = [data for _, data, _ in stream]
    decoded = [decode_hep(p) for p in packets]
    payloads = [d.payload for d in decoded]
    times = [d.timestamp or 0.0 for d in decoded]
    phones = watched_phones(cfg)
    del stream, decoded
    print(
        f"Python {sys.version.split()[0]}, pinned to cpu {cpu}, load average at start "
        f"{os.getloadavg()[0]:.2f}; mix built in {time.monotonic() - started:.1f} s"
    )
    for line in describe_mix(templates, plans, cfg, len(packets)):
        print(line)
    print()

    best: dict[str, float] = {}
    runs: dict[str, PipelineRun] = {}
    rows: dict[str, Callable[[], float]] = {
        "B": lambda: row_baseline(payloads),
        "H": lambda: row_decode(packets),
        "HP": lambda: row_decode_parse(packets),
    }

    def tracker_row() -> float:
        run = row_tracker(payloads, times, phones)
        runs["T"] = run
        return run.seconds

    def pipeline_row() -> float:
        run = row_pipeline(packets, phones)
        runs["P"] = run
        return run.seconds

    rows["T"] = tracker_row
    rows["P"] = pipeline_row
    budget = 75.0  # seconds for the timed rounds
    t_rounds = time.monotonic()
    digests: set[str] = set()
    done = 0
    for _ in range(rounds):
        for key, fn in rows.items():
            seconds = fn()
            best[key] = min(best.get(key, seconds), seconds)
        digests.add(events_digest(runs["P"].events))
        digests.add(events_digest(runs["T"].events))
        done += 1
        per_round = (time.monotonic() - t_rounds) / done
        if time.monotonic() - t_rounds + per_round > budget:
            break
    n = len(packets)
    print(f"{'row':<50}{'msgs/s':>10}{'us/msg':>9}{'x baseline':>12}")
    for key, seconds in best.items():
        rate = n / seconds
        print(
            f"{LABELS[key]:<50}{rate:>10,.0f}{seconds / n * 1e6:>9.2f}"
            f"{rate / (n / best['B']):>12.2f}"
        )
    ratio = best["B"] / best["P"]
    verdict = "ok" if ratio >= GOAL else "BELOW GOAL"
    print(f"best of {done} rounds; pipeline / baseline = {ratio:.2f} (goal >= {GOAL}: {verdict})")
    us = {key: seconds / n * 1e6 for key, seconds in best.items()}
    print(
        f"where the pipeline's time goes (us/msg, from the rows): HEP decode {us['H']:.2f}, "
        f"parse_message {us['HP'] - us['H']:.2f}, dedup + tracking + detection "
        f"{us['T'] - (us['HP'] - us['H']):.2f}, the rest (payload copies, loop, expiry) "
        f"{us['P'] - us['H'] - us['T']:.2f}"
    )
    st = runs["P"].tracker.stats
    print(
        f"pipeline counters: messages {st.messages:,}, duplicates {st.duplicates:,}, "
        f"unmatched {st.unmatched:,}, dropped {st.dropped:,}, events {st.events:,}; "
        f"dialogs left {st.dialogs:,}, dedupe entries left {st.dedupe_entries:,}; "
        f"events digest {'/'.join(sorted(digests))}"
    )
    if len(digests) != 1:
        print("WARNING: the tracker and the pipeline rows produced different events")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls in the timed mix")
    parser.add_argument("--rounds", type=int, default=5, help="runs per row; the best is kept")
    parser.add_argument("--memory-calls", type=int, default=5000, help="concurrent calls weighed")
    parser.add_argument(
        "--soak",
        type=int,
        nargs="?",
        const=200_000,
        default=0,
        help="also replay this many calls (default 200,000) and sample memory",
    )
    parser.add_argument("--soak-every", type=int, default=20_000)
    parser.add_argument("--transfer-share", type=float, default=0.2)
    parser.add_argument("--watched", type=int, default=600)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    args = parser.parse_args()

    cfg = MixConfig(watched=args.watched, transfer_share=args.transfer_share)
    deadline = DEADLINE_S + (SOAK_DEADLINE_S if args.soak else 0)

    def on_alarm(signum: int, frame: Any) -> None:
        raise BenchTimeout(f"stopped after {deadline} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(deadline)
    started = time.monotonic()
    try:
        cpu = None if args.no_pin else pin_one_core()
        templates = load_templates()
        check_rewrite(templates)
        _check_packet_builder(templates)
        timed_rows(templates, cfg, args.calls, args.rounds, cpu, started)
        gc.collect()

        mem = measure_memory(templates, cfg, args.memory_calls)
        print()
        print(
            f"memory (tracemalloc): {mem.calls:,} concurrent answered calls of {mem.calls:,} "
            f"watched agents -> {mem.dialogs:,} dialogs tracked, {mem.per_dialog:,.0f} B per "
            f"dialog; {mem.dedupe_entries:,} dedupe entries, {mem.per_dedupe_entry:,.0f} B each "
            f"(gone after the {DEDUP_WINDOW:g} s window)"
        )

        if args.soak:
            print()
            print(
                f"soak: {args.soak:,} calls through the pipeline with expiry, sampled every "
                f"{args.soak_every:,} calls"
            )
            samples = soak(templates, cfg, args.soak, args.soak_every)
            report_soak(samples, args.soak_every)
        print(f"total {time.monotonic() - started:.0f} s")
        return 0
    except BenchTimeout as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 3
    finally:
        signal.alarm(0)


DEDUP_WINDOW = Deduplicator().window


def report_soak(samples: list[SoakSample], every: int) -> None:
    ref = next((s for s in samples if s.calls >= 2 * every), samples[0])
    last = samples[-2] if len(samples) > 1 else samples[-1]  # the last one while calls start
    rows = (
        ("RSS", ref.rss, last.rss),
        ("Python blocks", ref.blocks, last.blocks),
        ("dialogs", ref.dialogs, last.dialogs),
        ("dedupe entries", ref.dedupe, last.dedupe),
        ("expiry heap", ref.heap, last.heap),
    )
    flat = True
    parts = []
    for name, a, b in rows:
        ok = b <= a * 1.10 + (50 if name in ("dialogs", "dedupe entries", "expiry heap") else 0)
        flat &= ok
        parts.append(f"{name} {a:,} -> {b:,} ({'ok' if ok else 'GREW'})")
    rate = samples[-1].messages / max(1e-9, samples[-1].wall)
    print(
        f"flat (the sample at {last.calls:,} calls within 10% of the one at {ref.calls:,}): "
        f"{'yes' if flat else 'NO'}; " + "; ".join(parts) + f"; {rate:,.0f} msgs/s incl. building"
    )


def _check_packet_builder(templates: list[Template]) -> None:
    """The bench's packet builder writes what bridge.hep.encode.encode_hep would."""
    plan = CallPlan(3, templates[0], AGENT, TARGET, b"612345678", 1_795_600_000.25, 1.0)
    for at, data in plan.packets():
        pkt = decode_hep(data)
        again = encode_hep(
            pkt.payload,
            src_ip=pkt.src_ip,
            src_port=pkt.src_port,
            dst_ip=pkt.dst_ip,
            dst_port=pkt.dst_port,
            timestamp=at,
            capture_id=pkt.capture_id or 0,
            auth_key=pkt.auth_key,
        )
        assert again == data, "packet builder differs from encode_hep"


if __name__ == "__main__":
    sys.exit(main())
