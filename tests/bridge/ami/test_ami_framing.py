"""AMI framing: recorded-shape streams replayed whole and split, limits, fuzzing, actions.

The fixtures in tests/fixtures/ami follow the Asterisk 22 fields of docs/evidence.md; replaying
them at every split point is panoramisk's recorded-stream idea without a transport.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ami import (
    NEED_DATA,
    AmiActionError,
    AmiBanner,
    AmiConnectionClosed,
    AmiEvent,
    AmiMessageTooLarge,
    AmiParser,
    AmiProtocolError,
    AmiResponse,
    decode_fields,
    encode_action,
)
from bridge.errors import BridgeError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ami"
Outcome = list[object]


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.ami").read_bytes()


def replay(
    chunks: list[bytes], *, expect_banner: bool = True, max_message_size: int = 64 * 1024
) -> Outcome:
    """Everything a parser yields for ``chunks`` then end of stream; errors recorded in line."""
    parser = AmiParser(expect_banner=expect_banner, max_message_size=max_message_size)
    out: Outcome = []

    def drain() -> bool:
        while True:
            try:
                item = parser.next_event()
            except AmiProtocolError as exc:
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
        if not chunk:
            continue  # b"" would mean end of stream
        parser.receive_data(chunk)
        if not drain():
            return out
    parser.receive_data(b"")
    drain()
    return out


def names(items: Outcome) -> list[str]:
    return [i.name for i in items if isinstance(i, AmiEvent)]


# --- recorded streams -----------------------------------------------------------------------


def test_blind_transfer_stream() -> None:
    items = replay([fixture("blind_transfer")])
    assert items[0] == AmiBanner(product="Asterisk Call Manager", version="11.0.0")
    login = items[1]
    assert isinstance(login, AmiResponse)
    assert login.ok and login.action_id == "bridge-login-1"
    assert login.get("Message") == "Authentication accepted"
    assert isinstance(items[-1], AmiConnectionClosed)
    assert names(items) == [
        "SuccessfulAuth", "FullyBooted", "Newchannel", "Newchannel", "DialBegin", "Newstate",
        "Newstate", "DialEnd", "Newstate", "BridgeEnter", "BridgeEnter", "BlindTransfer",
        "BridgeLeave", "Newchannel", "DialBegin", "Newstate", "DialEnd", "Hangup",
    ]  # fmt: skip
    events = {i.name: i for i in items if isinstance(i, AmiEvent)}
    blind = events["BlindTransfer"]
    assert blind.get("Result") == "Success"
    assert blind.get("TransfererChannel") == "PJSIP/1001-00000001"
    assert blind.get("TransfereeChannel") == "PJSIP/1003-00000000"
    assert (blind.get("Extension"), blind.get("Context"), blind.get("IsExternal")) == (
        "1002",
        "phones",
        "No",
    )
    dial_end = events["DialEnd"]
    assert dial_end.get("Channel") == "PJSIP/1003-00000000"
    assert dial_end.get("DestChannel") == "PJSIP/1002-00000002"
    assert dial_end.get("DialStatus") == "ANSWER"
    hangup = events["Hangup"]
    assert (hangup.get("Cause"), hangup.get("Cause-txt")) == ("16", "Normal Clearing")
    # Values keep their colons; the key ends at the first one.
    assert events["SuccessfulAuth"].get("EventTV") == "2026-11-25T13:01:02.114+0000"
    assert hangup.get("AccountCode") == ""


def test_attended_transfer_stream() -> None:
    items = replay([fixture("attended_transfer")])
    events = [i for i in items if isinstance(i, AmiEvent)]
    assert [e.get("Channel") for e in events if e.name in ("Hold", "Unhold")] == [
        "PJSIP/1001-00000005",
        "PJSIP/1001-00000005",
        "PJSIP/1001-00000006",
    ]
    (attended,) = [e for e in events if e.name == "AttendedTransfer"]
    assert attended.get("Result") == "Success"
    assert attended.get("OrigTransfererChannel") == "PJSIP/1001-00000005"
    assert attended.get("SecondTransfererChannel") == "PJSIP/1001-00000006"
    assert attended.get("TransfereeChannel") == "PJSIP/1003-00000004"
    assert attended.get("TransferTargetChannel") == "PJSIP/1002-00000007"
    assert attended.get("DestType") == "Bridge"
    assert attended.get("DestBridgeUniqueid") == attended.get("OrigBridgeUniqueid")
    assert [e.get("Cause-txt") for e in events if e.name == "Hangup"] == ["Normal Clearing"] * 2


def test_repeated_keys_keep_every_value_in_order() -> None:
    items = replay([fixture("blind_transfer")])
    newchannel = next(i for i in items if isinstance(i, AmiEvent) and i.name == "Newchannel")
    assert newchannel.get_all("ChanVariable") == (
        "CHANNEL(pjsip,remote_addr)=127.0.0.1:5083",
        "CHANNEL(pjsip,call-id)=62.0a7c1e9d2f@127.0.0.1",
    )
    assert newchannel.get("ChanVariable") == "CHANNEL(pjsip,remote_addr)=127.0.0.1:5083"
    assert newchannel.get("uniqueid") == newchannel.get("Uniqueid") == "1764075662.0"
    assert newchannel.get("Missing") is None and newchannel.get_all("Missing") == ()
    assert "Linkedid" in newchannel and "Missing" not in newchannel
    assert newchannel.fields[0] == ("Event", "Newchannel")


def test_command_output() -> None:
    items = replay([fixture("command_output")])
    legacy, modern, error = (i for i in items if isinstance(i, AmiResponse))
    assert legacy.response == "Follows" and legacy.ok and legacy.action_id == "cmd-1"
    assert legacy.get("Privilege") == "Command"
    assert legacy.output == (
        "Channel              Location             State   Application(Data)",
        "PJSIP/1001-00000001  1001@phones:1        Up      AppDial((Outgoing Line))",
        "",
        "Note: 1 active channel",
    )
    assert modern.action_id == "cmd-2" and len(modern.output) == 2
    assert modern.output[0].startswith("Endpoint:  1001")
    assert not error.ok and error.get("Message") == "Authentication failed"
    assert isinstance(items[-1], AmiConnectionClosed)


FOLLOWS_HEAD = b"Response: Follows\r\nPrivilege: Command\r\nActionID: c1\r\n"
FOLLOWS_CASES = {
    # CLI output that starts with a blank line (many Asterisk CLI commands print one first)
    "leading_blank": (
        FOLLOWS_HEAD + b"\nName: value\nline 2\n--END COMMAND--\r\n\r\n",
        ("", "Name: value", "line 2"),
    ),
    # output whose first lines look like headers, then a blank line, then more output
    "colon_lines_then_blank": (
        FOLLOWS_HEAD + b"Uptime: 5 s\n\n\nReloaded: 1 s\n--END COMMAND--\r\n\r\n",
        ("Uptime: 5 s", "", "", "Reloaded: 1 s"),
    ),
}


@pytest.mark.parametrize("case", sorted(FOLLOWS_CASES))
def test_follows_output_after_a_blank_line_is_kept_whole(case: str) -> None:
    raw, output = FOLLOWS_CASES[case]
    after = b"Event: After\r\n\r\n"
    data = raw + after
    expected = replay([data], expect_banner=False)
    response, event, closed = expected
    assert isinstance(response, AmiResponse) and response.action_id == "c1"
    assert response.output == output and response.get("Privilege") == "Command"
    assert event == AmiEvent(name="After", fields=(("Event", "After"),))
    assert isinstance(closed, AmiConnectionClosed)
    for cut in range(len(data) + 1):
        assert replay([data[:cut], data[cut:]], expect_banner=False) == expected, cut
    assert replay([data.replace(b"\r\n", b"\n")], expect_banner=False) == expected


def test_follows_without_output_is_an_ordinary_message() -> None:
    head = b"Response: Follows\r\nActionID: c2\r\n\r\n"
    for tail in (b"Event: Next\r\n\r\n", b"Response: Success\r\n\r\n", b""):
        items = replay([head + tail], expect_banner=False)
        assert isinstance(items[0], AmiResponse) and items[0].action_id == "c2"
        assert items[0].output == () and isinstance(items[-1], AmiConnectionClosed)
        assert len(items) == (3 if tail else 2)


def test_follows_waits_to_see_what_comes_after_the_blank_line() -> None:
    parser = AmiParser(expect_banner=False)
    parser.receive_data(FOLLOWS_HEAD + b"\r\n")
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"Even")
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"t: X\r\n\r\n")
    assert isinstance(parser.next_event(), AmiResponse)
    assert isinstance(parser.next_event(), AmiEvent)


def test_blank_lines_after_a_follows_header_count_toward_the_limit() -> None:
    parser = AmiParser(expect_banner=False, max_message_size=200)
    with pytest.raises(AmiMessageTooLarge):
        for _ in range(100):
            parser.receive_data(FOLLOWS_HEAD if parser.buffered == 0 else b"\r\n" * 10)
            assert parser.next_event() is NEED_DATA


# Issue 14 item 1: a peer's `Response: Follows` with tens of thousands of blank lines was
# re-scanned from its start at every blank line (~30 s of event-loop CPU for 65 KB).
BLANK_FLOOD = b"Asterisk Call Manager/9.0.0\r\nResponse: Follows\r\nx\n" + b"\n" * 65000
BLANK_HEADERS = b"Asterisk Call Manager/9.0.0\r\n" + FOLLOWS_HEAD + b"\n" * 30000


def _counting_lines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes handed to the framer's line splitter, the parser's unit of work."""
    from bridge.ami import framing

    seen: list[int] = []
    real = framing._lines

    def counting(block: bytes | bytearray) -> list[str]:
        seen.append(len(block))
        return real(block)

    monkeypatch.setattr(framing, "_lines", counting)
    return seen


@pytest.mark.parametrize("head", [BLANK_FLOOD, BLANK_HEADERS], ids=["output", "headers"])
@pytest.mark.parametrize("chunk", [0, 1, 4096], ids=["whole", "bytewise", "4k"])
def test_blank_line_flood_in_follows_output_is_parsed_in_linear_work(
    monkeypatch: pytest.MonkeyPatch, head: bytes, chunk: int
) -> None:
    seen = _counting_lines(monkeypatch)
    data = head + b"--END COMMAND--\r\n\r\nEvent: After\r\n\r\n"
    chunks = [data] if not chunk else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    started = time.process_time()
    items = replay(chunks, max_message_size=128 * 1024)
    cpu = time.process_time() - started
    banner, response, event, closed = items
    assert isinstance(banner, AmiBanner)
    assert isinstance(response, AmiResponse) and response.response == "Follows"
    assert response.output.count("") >= 29999
    assert event == AmiEvent(name="After", fields=(("Event", "After"),))
    assert isinstance(closed, AmiConnectionClosed)
    # Linear: every byte goes through the line splitter a bounded number of times (it was
    # once per blank line, i.e. 65,000 times), and the CPU bound is generous (was ~30 s).
    assert sum(seen) <= 4 * len(data), sum(seen)
    assert cpu < (5.0 if chunk == 1 else 1.0), cpu


def test_blank_line_flood_is_refused_at_the_limit_after_linear_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _counting_lines(monkeypatch)
    items = replay([BLANK_FLOOD + b"\n" * 70000])  # past the default 64 KiB, no END COMMAND
    assert items[-1] == ("AmiMessageTooLarge", False)
    assert sum(seen) <= 4 * len(BLANK_FLOOD), sum(seen)


ALL_FIXTURES = ["blind_transfer", "attended_transfer", "command_output"]


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_recorded_stream_split_at_any_byte_equals_whole(name: str) -> None:
    data = fixture(name)
    whole = replay([data])
    for cut in range(len(data) + 1):
        assert replay([data[:cut], data[cut:]]) == whole, cut


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_recorded_stream_fed_byte_by_byte_equals_whole(name: str) -> None:
    data = fixture(name)
    assert replay([data[i : i + 1] for i in range(len(data))]) == replay([data])


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_bare_lf_and_extra_blank_lines_are_tolerated(name: str) -> None:
    data = fixture(name)
    assert replay([data.replace(b"\r\n", b"\n")]) == replay([data])
    padded = data.replace(b"\r\n\r\n", b"\r\n\r\n\r\n\n")
    assert replay([padded]) == replay([data])


def test_events_iterator() -> None:
    parser = AmiParser()
    data = fixture("blind_transfer")
    parser.receive_data(data[:500])
    first = list(parser.events())
    assert isinstance(first[0], AmiBanner) and parser.buffered > 0
    parser.receive_data(data[500:])
    parser.receive_data(b"")
    rest = list(parser.events())
    assert isinstance(rest[-1], AmiConnectionClosed)
    assert len(first) + len(rest) == len(replay([data]))


# --- odd and hostile input ------------------------------------------------------------------


def test_without_banner_and_empty_values() -> None:
    items = replay([b"Event: Foo\r\nA:\r\nB: \r\nC:  two spaces\r\n\r\n"], expect_banner=False)
    (event, closed) = items
    assert isinstance(event, AmiEvent) and isinstance(closed, AmiConnectionClosed)
    assert event.fields == (("Event", "Foo"), ("A", ""), ("B", ""), ("C", " two spaces"))


def test_non_utf8_bytes_are_replaced() -> None:
    raw = b"Event: Newchannel\r\nCallerIDName: Jos\xe9 \xff\xfe\r\n\r\n"
    (event, _) = replay([raw], expect_banner=False)
    assert isinstance(event, AmiEvent)
    assert event.get("CallerIDName") == "Jos\ufffd \ufffd\ufffd"


def test_malformed_message_is_dropped_and_parsing_goes_on() -> None:
    raw = (
        b"Event: Ok1\r\n\r\n"
        b"Event: Bad\r\nno colon here\r\n\r\n"
        b"Action: NotFromAsterisk\r\n\r\n"
        b"Event: Ok2\r\n\r\n"
    )
    items = replay([raw], expect_banner=False)
    assert items == [
        AmiEvent(name="Ok1", fields=(("Event", "Ok1"),)),
        ("AmiProtocolError", True),
        ("AmiProtocolError", True),
        AmiEvent(name="Ok2", fields=(("Event", "Ok2"),)),
        AmiConnectionClosed(),
    ]


def test_bad_banner_is_fatal() -> None:
    parser = AmiParser()
    parser.receive_data(b"Response: Success\r\n\r\n")
    with pytest.raises(AmiProtocolError) as info:
        parser.next_event()
    assert not info.value.recoverable
    with pytest.raises(AmiProtocolError):
        parser.next_event()


def test_end_of_stream() -> None:
    assert replay([b"Asterisk Call Manager/11.0.0\r\nEvent: Half\r\n"]) == [
        AmiBanner("Asterisk Call Manager", "11.0.0"),
        ("AmiProtocolError", False),
    ]
    assert replay([b""]) == [AmiConnectionClosed()]
    parser = AmiParser()
    parser.receive_data(b"")
    with pytest.raises(AmiProtocolError):
        parser.receive_data(b"late")


@pytest.mark.parametrize("tail", [b"", b"\r\n"])
def test_endless_line_is_refused_with_bounded_buffer(tail: bytes) -> None:
    parser = AmiParser(expect_banner=False)
    with pytest.raises(AmiMessageTooLarge):
        for _ in range(100):
            parser.receive_data(b"X-Junk: " + b"a" * 4096 + tail)
            assert parser.next_event() is NEED_DATA
            assert parser.buffered <= 64 * 1024 + 4200
    with pytest.raises(AmiMessageTooLarge):  # the stream stays failed
        parser.next_event()


def test_endless_banner_is_refused() -> None:
    parser = AmiParser(max_message_size=100)
    parser.receive_data(b"A" * 101)
    with pytest.raises(AmiMessageTooLarge):
        parser.next_event()


def test_size_limit_is_exact_and_independent_of_splitting() -> None:
    message = b"Event: X\r\nK: " + b"v" * 50 + b"\r\n\r\n"
    size = len(message)
    fits = replay([message], expect_banner=False, max_message_size=size)
    assert isinstance(fits[0], AmiEvent)
    for cut in range(size + 1):
        chunks = [message[:cut], message[cut:]]
        assert replay(chunks, expect_banner=False, max_message_size=size) == fits
        too_big = replay(chunks, expect_banner=False, max_message_size=size - 1)
        assert too_big == [("AmiMessageTooLarge", False)]


def test_errors_are_typed() -> None:
    assert issubclass(AmiProtocolError, BridgeError)
    assert issubclass(AmiActionError, BridgeError)
    assert AmiMessageTooLarge("x").code == "ami_message_too_large"


def _kinds(items: Outcome) -> Outcome:
    return [type(i).__name__ if isinstance(i, AmiConnectionClosed) else i for i in items]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=400)
    | st.lists(
        st.sampled_from(
            [
                *(b"Event: E\r\n", b"Response: Follows\r\n", b"K: v\r\n", b"--END COMMAND--"),
                *(b"\r\n", b"\n", b"\r", b":", b"x", b"\xff", b"Asterisk Call Manager/1\r\n"),
            ]
        ),
        max_size=40,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    banner=st.booleans(),
    limit=st.sampled_from([16, 64, 65536]),
)
def test_any_split_stream_equals_whole_and_raises_only_protocol_errors(
    data: bytes, cuts: list[int], banner: bool, limit: int
) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = replay([data], expect_banner=banner, max_message_size=limit)
    split = replay(chunks, expect_banner=banner, max_message_size=limit)
    assert _kinds(split) == _kinds(whole)


_key = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters=":"),
    min_size=1,
    max_size=12,
)
_value = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"), max_size=30
)


@settings(max_examples=200, deadline=None)
@given(
    name=_key,
    pairs=st.lists(st.tuples(_key, _value), max_size=8),
    cut=st.integers(min_value=0),
)
def test_any_event_split_in_two_parses_back_unchanged(
    name: str, pairs: list[tuple[str, str]], cut: int
) -> None:
    fields = (("Event", name), *pairs)
    raw = "".join(f"{k}: {v}\r\n" for k, v in fields).encode() + b"\r\n"
    cut %= len(raw) + 1
    items = replay([raw[:cut], raw[cut:]], expect_banner=False)
    assert items == [AmiEvent(name=name, fields=fields), AmiConnectionClosed()]


# --- actions --------------------------------------------------------------------------------


def test_encode_login() -> None:
    wire = encode_action("Login", {"Username": "bridge", "Secret": "s3cr:et"}, "login-1")
    assert wire == (
        b"Action: Login\r\nActionID: login-1\r\nUsername: bridge\r\nSecret: s3cr:et\r\n\r\n"
    )
    assert encode_action("Ping") == b"Action: Ping\r\n\r\n"


_action_key = _key.filter(lambda k: k == k.strip() and k.casefold() not in ("action", "actionid"))


@settings(max_examples=200, deadline=None)
@given(
    name=_action_key,
    pairs=st.lists(st.tuples(_action_key, _value), max_size=8),
    action_id=st.none() | _value,
)
def test_any_encoded_action_decodes_to_its_fields(
    name: str, pairs: list[tuple[str, str]], action_id: str | None
) -> None:
    wire = encode_action(name, pairs, action_id)
    expected = [("Action", name)]
    if action_id is not None:
        expected.append(("ActionID", action_id))
    assert decode_fields(wire) == (*expected, *pairs)


@pytest.mark.parametrize("bad", ["a\r\nAction: Originate", "a\nb", "a\rb", "a\x00b"])
def test_injection_is_refused(bad: str) -> None:
    with pytest.raises(AmiActionError):
        encode_action("Redirect", {"Channel": bad}, "x")
    with pytest.raises(AmiActionError):
        encode_action("Redirect", {bad: "v"}, "x")
    with pytest.raises(AmiActionError):
        encode_action(bad, {}, "x")
    with pytest.raises(AmiActionError):
        encode_action("Ping", {}, bad)


@pytest.mark.parametrize("key", ["Action", "actionid", "", "Bad:Key", " Lead"])
def test_reserved_or_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(AmiActionError):
        encode_action("Ping", [(key, "v")], "x")


def test_unencodable_text_is_refused() -> None:
    with pytest.raises(AmiActionError):
        encode_action("Ping", {"K": "\ud800"})
