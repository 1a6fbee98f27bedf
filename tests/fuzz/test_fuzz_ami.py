"""AMI: any stream frames the same whole or split at any points, raises only AmiProtocolError,
and in linear work; any event (fields and values of any text) leaves the call tracker standing."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bridge.ami import NEED_DATA, AmiConnectionClosed, AmiEvent, AmiParser, AmiProtocolError
from bridge.ami.calls import AmiCallTracker
from bridge.ami.phones import AmiPhones
from tests.fuzz.oracle import FUZZ, within

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
RECORDED = [p.read_bytes() for p in sorted(FIXTURES.glob("*.ami"))]
PIECES = st.sampled_from(
    [
        b"Event: Newchannel\r\n",
        b"Response: Success\r\n",
        b"Response: Follows\r\n",
        b"Response: Follows\n",
        b"Privilege: Command\r\n",
        b"ActionID: a1\r\n",
        b"Uniqueid: \xc2\xb2.1\r\n",
        b"--END COMMAND--\r\n",
        b"--END COMMAND--",
        b"Output: x\r\n",
        b"\r\n",
        b"\n",
        b"\n" * 200,
        b"\r\n" * 50,
        b"\r",
        b"no colon here\r\n",
        b"Key:\r\n",
        b":\r\n",
        b"\xff\xfe\r\n",
    ]
)
STREAM = st.lists(st.one_of(PIECES, st.binary(max_size=12)), max_size=60).map(b"".join)


def frame(chunks: list[bytes], limit: int) -> list[object]:
    parser = AmiParser(expect_banner=False, max_message_size=limit)
    out: list[object] = []

    def drain() -> bool:
        while True:
            try:
                item = parser.next_event()
            except AmiProtocolError as exc:  # the oracle: only the typed error
                out.append((type(exc).__name__, exc.recoverable))
                if not exc.recoverable:
                    return False
                continue
            if item is NEED_DATA:
                return True
            out.append(item)
            if isinstance(item, AmiConnectionClosed):
                return False

    for chunk in chunks:
        if chunk:
            parser.receive_data(chunk)
            if not drain():
                return out
    parser.receive_data(b"")
    drain()
    return out


@FUZZ
@given(STREAM, st.lists(st.integers(0, 1 << 16), max_size=8), st.sampled_from([256, 4096, 65536]))
def test_any_stream_split_anywhere_frames_as_whole(
    data: bytes, cuts: list[int], limit: int
) -> None:
    with within(2.0):
        whole = frame([data], limit)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    with within(2.0):
        assert frame(chunks, limit) == whole


@FUZZ
@given(st.sampled_from(RECORDED), st.integers(1, 64))
def test_recorded_streams_in_any_chunk_size_frame_as_whole(data: bytes, size: int) -> None:
    parser_whole = frame([data], 65536)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    assert frame(chunks, 65536) == parser_whole


@FUZZ
@given(st.integers(1_000, 60_000), st.sampled_from([b"\n", b"\r\n", b"\n\r\n"]))
def test_blank_line_runs_in_command_output_stay_linear(count: int, blank: bytes) -> None:
    data = b"Response: Follows\r\nPrivilege: Command\r\nx\n" + blank * count
    data += b"--END COMMAND--\r\n\r\n"
    with within(2.0):
        items = frame([data], 1 << 20)
    assert items[0].response == "Follows"  # type: ignore[attr-defined]


KEYS = st.sampled_from(
    [
        "Event",
        "Channel",
        "Uniqueid",
        "Linkedid",
        "ChannelState",
        "ChannelStateDesc",
        "ConnectedLineNum",
        "CallerIDNum",
        "DestUniqueid",
        "DestChannel",
        "DialStatus",
        "Cause",
        "Timestamp",
        "Result",
        "OrigTransfererUniqueid",
        "SecondTransfererUniqueid",
        "TransfereeUniqueid",
        "TransferTargetUniqueid",
        "TransferTargetCallerIDNum",
        "ChanVariable",
        "DestChanVariable",
        "Application",
        "BridgeUniqueid",
        "Exten",
        "TransfererUniqueid",
        "IsExternal",
        "Extension",
    ]
)
NAMES = st.sampled_from(
    [
        "Newchannel",
        "Newstate",
        "DialBegin",
        "DialEnd",
        "Hangup",
        "BridgeEnter",
        "BridgeLeave",
        "BlindTransfer",
        "AttendedTransfer",
        "Hold",
        "Unhold",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
        "VarSet",
        "Cdr",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "PJSIP/1001-0000000a",
            "PJSIP/1002-0000000b",
            "1795613972.9",
            "1795613972.10",
            "².1",
            "1.²",
            "٣",
            "",
            "Up",
            "Ring",
            "ANSWER",
            "BUSY",
            "Success",
            "Fail",
            "SIPCALLID=c-1",
            "SIPCALLID=",
            "nan",
            "1e400",
            "16",
            "17",
            "9" * 40,
        ]
    ),
    st.text(max_size=20),
)
EVENT = st.builds(
    lambda name, fields: AmiEvent(name, (("Event", name), *fields)),
    NAMES,
    st.lists(st.tuples(KEYS, VALUES), max_size=12),
)


@FUZZ
@given(st.lists(EVENT, max_size=40), st.booleans())
def test_any_events_leave_the_call_tracker_standing(events: list[AmiEvent], resync: bool) -> None:
    tracker = AmiCallTracker("fuzz", AmiPhones([("sip:1001@pbx", None), ("sip:1002@pbx", None)]))
    tracker.reset(resync=resync)
    for n, event in enumerate(events):
        tracker.feed(event, 1000.0 + n)  # the oracle: nothing escapes
