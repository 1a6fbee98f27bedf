"""SIP and HEP: random and mutated real packets give a value or the typed error, and the whole
capture pipeline (decode, parse, de-dup, dialogs, detection, expiry) never raises."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bridge.hep.capture import split_capture
from bridge.hep.decode import HepDecodeError, HepDecoder, decode_hep
from bridge.hep.directory import PhoneDirectory
from bridge.hep.tracker import SipTracker
from bridge.sip import SipMessage, SipParseError, parse_message
from tests.fuzz.oracle import FUZZ, typed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PACKETS = [
    packet
    for path in sorted((FIXTURES / "hep").glob("*.hep"))
    for packet in split_capture(path.read_bytes())
]
SIP_SAMPLES = [
    p.read_text(encoding="utf-8").replace("\n", "\r\n").encode()
    for p in sorted((FIXTURES / "sip").glob("*.txt"))
]
PHONES = PhoneDirectory(
    [f"sip:{n}@127.0.0.1" for n in range(1000, 1010)]
    + [f"sip:{n}@pbx.example" for n in range(1000, 1010)],
    match_user=True,
)
# What a SIP reader trips on: separators, digits of every kind, huge numbers.
NASTY = st.sampled_from(
    [
        b"\x00",
        b"\r\n",
        b"\r\n\r\n",
        b";",
        b",",
        b"<",
        b">",
        b'"',
        b"\xff",
        "²".encode(),
        "٣".encode(),
        b"9" * 30,
        b"-1",
        b" ",
        b"\t",
        b"%00",
        b"sip:",
        b"tag=",
        b"branch=",
    ]
)


def mutate(data: bytes, draws: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for position, length, insert in draws:
        at = position % (len(out) + 1)
        out[at : at + length % 8] = insert
    return bytes(out)


EDITS = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 16), st.one_of(NASTY, st.binary(max_size=8))),
    min_size=1,
    max_size=6,
)


def read_everything(msg: SipMessage) -> None:
    """Every lazily parsed header a tracker may read: only SipParseError may come out."""
    for name in ("call_id", "from_tag", "to_tag", "cseq", "via_branch", "content_type"):
        typed(lambda name=name: getattr(msg, name))
    for method in ("event", "subscription_state", "refer_to", "replaces", "sipfrag", "refer_sub"):
        typed(lambda method=method: getattr(msg, method)())


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_are_a_sip_message_or_sip_parse_error(data: bytes) -> None:
    result = typed(lambda: parse_message(data))
    assert isinstance(result, SipMessage | SipParseError)
    if isinstance(result, SipMessage):
        read_everything(result)


@FUZZ
@given(st.sampled_from(SIP_SAMPLES), EDITS)
def test_mutated_real_sip_is_a_message_or_sip_parse_error(sample: bytes, edits: list) -> None:  # type: ignore[type-arg]
    result = typed(lambda: parse_message(mutate(sample, edits)))
    assert isinstance(result, SipMessage | SipParseError)
    if isinstance(result, SipMessage):
        read_everything(result)


@FUZZ
@given(st.binary(max_size=512))
def test_any_bytes_are_a_hep_packet_or_hep_decode_error(data: bytes) -> None:
    result = typed(lambda: decode_hep(data))
    assert not isinstance(result, Exception) or isinstance(result, HepDecodeError)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(range(len(PACKETS))), EDITS), min_size=1, max_size=40))
def test_mutated_real_captures_never_break_the_pipeline(picks: list) -> None:  # type: ignore[type-arg]
    """Decoder and tracker as a `[[sources.hep]]` runs them: only HepDecodeError, never more."""
    decoder = HepDecoder()
    tracker = SipTracker(PHONES, source="fuzz")
    now = 0.0
    for index, edits in picks:
        data = PACKETS[index] if not edits[0][1] % 3 else mutate(PACKETS[index], edits)
        packet = typed(lambda data=data: decoder.decode(data))
        if isinstance(packet, HepDecodeError):
            continue
        now += 0.5
        # Capture times may be anything (a host's clock off by a century): never our clock.
        tracker.feed_bytes(packet.payload, packet.timestamp or 0.0, now)
        deadline = tracker.next_deadline()
        if deadline is not None and deadline <= now:
            tracker.expire(now)
    tracker.expire(now + 5 * 3600)
    assert len(tracker.dialogs) == 0 and len(tracker.dedup) == 0
