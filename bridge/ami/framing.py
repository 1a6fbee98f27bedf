"""Sans-I/O framing of the Asterisk Manager Interface byte stream.

Bytes go in through :meth:`AmiParser.receive_data`; :meth:`AmiParser.next_event` returns one
banner, response or event at a time, or :data:`NEED_DATA`. Nothing here touches a socket.
"""

from __future__ import annotations

from collections.abc import Iterator

from bridge.ami.errors import AmiMessageTooLarge, AmiProtocolError
from bridge.ami.messages import (
    NEED_DATA,
    AmiBanner,
    AmiConnectionClosed,
    AmiEvent,
    AmiItem,
    AmiResponse,
    Fields,
    NeedData,
)

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "AmiParser", "decode_fields"]

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024
END_COMMAND = "--END COMMAND--"
# Keys Asterisk puts before raw ``Response: Follows`` output; any other line is output.
_FOLLOWS_HEADERS = frozenset({"Privilege", "ActionID", "Message"})
_CR = 0x0D
_LF = 0x0A
_EVENT_START = b"Event:"
_RESPONSE_START = b"Response:"
_STARTS = (_EVENT_START, _RESPONSE_START, b"\r\n")


def _lines(block: bytes | bytearray) -> list[str]:
    """Lines of ``block`` (which ends in LF), CRLF or bare LF, undecodable bytes replaced."""
    text = block.replace(b"\r\n", b"\n").decode("utf-8", "replace")
    return text[:-1].split("\n")


def _pairs(lines: list[str]) -> list[tuple[str, str]] | None:
    """``Key: Value`` pairs, or None when a line has no colon."""
    pairs = []
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            return None
        pairs.append((key, value[1:] if value[:1] == " " else value))
    return pairs


def decode_fields(block: bytes) -> Fields:
    """The ``(key, value)`` pairs of one complete message (e.g. an encoded action)."""
    block = block.rstrip(b"\r\n") + b"\n"
    pairs = _pairs(_lines(block))
    if pairs is None:
        raise AmiProtocolError("a line of the message has no ':'", recoverable=True)
    return tuple(pairs)


class AmiParser:
    """Parses what Asterisk sends on an AMI connection: one banner line, then messages."""

    __slots__ = (
        "_blank",
        "_buf",
        "_checked",
        "_crlf",
        "_eof",
        "_error",
        "_limit",
        "_need_banner",
        "_pairs_so_far",
        "_pos",
        "_scan",
    )

    def __init__(
        self, *, expect_banner: bool = True, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed bytes
        self._scan = 0  # no terminator starts before this index in the current message
        self._crlf = True  # which terminator to look for first (the stream's last style)
        self._eof = False
        self._error: AmiProtocolError | None = None
        self._need_banner = expect_banner
        self._limit = max_message_size
        # Progress through a ``Response: Follows`` message, as offsets from ``_pos`` so that
        # compaction does not move them: every line before ``_checked`` has been looked at once
        # (``_pairs_so_far``: all of them were ``Key: Value``), and ``_blank`` remembers how far
        # the run of blank lines after a terminator was skipped. Each byte is looked at a
        # bounded number of times, however the output is split into blank lines and chunks.
        self._checked = 0
        self._pairs_so_far = True
        self._blank = (-1, -1)

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the connection; ``b""`` means the peer closed it."""
        if self._eof and data:
            raise AmiProtocolError("data received after the end of the stream")
        if not data:
            self._eof = True
            return
        if self._pos:
            # Compact only here, so next_event consumes many messages without copying.
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        self._buf += data

    def next_event(self) -> AmiItem:
        """The next complete item, or NEED_DATA; malformed input raises AmiProtocolError."""
        if self._error is not None:
            raise self._error
        try:
            if self._need_banner:
                return self._next_banner()
            return self._next_message()
        except AmiProtocolError as exc:
            if not exc.recoverable:
                self._error = exc
            raise

    def events(self) -> Iterator[AmiBanner | AmiEvent | AmiResponse | AmiConnectionClosed]:
        """Every complete item now buffered; ends at NEED_DATA or after the close."""
        while True:
            item = self.next_event()
            if isinstance(item, NeedData):
                return
            yield item
            if isinstance(item, AmiConnectionClosed):
                return

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as an item."""
        return len(self._buf) - self._pos

    def _at_end(self) -> AmiItem:
        if not self._eof:
            return NEED_DATA
        if len(self._buf) > self._pos:
            raise AmiProtocolError("the stream ended inside a message")
        return AmiConnectionClosed()

    def _too_large(self, size: int) -> AmiMessageTooLarge:
        return AmiMessageTooLarge(f"AMI message of {size}+ bytes exceeds limit {self._limit}")

    def _next_banner(self) -> AmiItem:
        buf, pos = self._buf, self._pos
        nl = buf.find(b"\n", pos)
        if nl < 0:
            if len(buf) - pos > self._limit:
                raise self._too_large(len(buf) - pos)
            return self._at_end()
        if nl + 1 - pos > self._limit:
            raise self._too_large(nl + 1 - pos)
        line = bytes(buf[pos:nl]).decode("utf-8", "replace")
        if line.endswith("\r"):
            line = line[:-1]
        self._pos = self._scan = nl + 1
        self._need_banner = False
        product, sep, version = line.rpartition("/")
        if not sep or not product or ":" in product:
            raise AmiProtocolError(f"not an AMI banner: {line[:80]!r}")
        return AmiBanner(product=product, version=version)

    def _skip_blank_lines(self) -> int:
        buf, pos, n = self._buf, self._pos, len(self._buf)
        while pos < n:
            c = buf[pos]
            if c == _LF:
                pos += 1
            elif c == _CR and pos + 1 < n and buf[pos + 1] == _LF:
                pos += 2
            else:
                break
        self._pos = pos
        if self._scan < pos:
            self._scan = pos
        return pos

    def _find_terminator(self, start: int) -> tuple[int, int]:
        """(index of the last line's LF, index past the blank line), or (-1, -1)."""
        buf = self._buf
        if self._crlf:
            i = buf.find(b"\n\r\n", start)
            j = buf.find(b"\n\n", start, i + 2 if i >= 0 else len(buf))
        else:
            j = buf.find(b"\n\n", start)
            i = buf.find(b"\n\r\n", start, j + 3 if j >= 0 else len(buf))
        if j >= 0 and (i < 0 or j < i):
            self._crlf = False
            return j, j + 2
        if i >= 0:
            self._crlf = True
            return i, i + 3
        return -1, -1

    def _next_message(self) -> AmiItem:
        pos = self._skip_blank_lines()
        buf = self._buf
        start = self._scan
        follows = buf.startswith(b"Response: Follows\r\n", pos) or buf.startswith(
            b"Response: Follows\n", pos
        )
        while True:
            last_lf, end = self._find_terminator(start)
            if end < 0:
                size = len(buf) - pos
                if size > self._limit:
                    raise self._too_large(size)
                self._scan = max(pos, len(buf) - 2)
                return self._at_end()
            if end - pos > self._limit:
                raise self._too_large(end - pos)
            if not follows:
                lines = _lines(buf[pos : last_lf + 1])
                break
            # Raw command output may hold any number of blank lines: look only at the lines
            # not seen before, never at the whole message again (that was quadratic).
            checked = pos + self._checked
            if checked <= last_lf:  # a terminator not seen before
                if self._pairs_so_far and _pairs(_lines(buf[checked : last_lf + 1])) is None:
                    self._pairs_so_far = False
                self._checked = last_lf + 1 - pos
                line_start = max(buf.rfind(b"\n", pos, last_lf) + 1, pos)
                if _lines(buf[line_start : last_lf + 1])[-1].endswith(END_COMMAND):
                    lines = _lines(buf[pos : last_lf + 1])
                    self._consumed(end)
                    return _follows_response(lines)
            if self._pairs_so_far:
                # Header-like lines then a blank line: either a Follows answer with no raw
                # output, or output that starts (or goes on) after a blank line. What follows
                # the blank line decides; wait for it rather than cut the output short.
                after = self._after_blank(end, pos)
                if after is None:
                    self._scan = last_lf  # find this terminator again with more data
                    return NEED_DATA
                if after:
                    lines = _lines(buf[pos : last_lf + 1])
                    break
            start = last_lf + 1  # the blank line belongs to the command output
            self._scan = start
        self._consumed(end)
        return _message(lines)

    def _consumed(self, end: int) -> None:
        """The message before ``end`` was returned: the next one starts there."""
        self._pos = self._scan = end
        self._checked = 0
        self._pairs_so_far = True
        self._blank = (-1, -1)

    def _after_blank(self, end: int, pos: int) -> bool | None:
        """Whether a new message starts at ``end`` (past blank lines); None: not known yet.

        Only ``Event:`` or ``Response:`` starts one; the end of the stream counts as a start
        (the message before it is complete). Blank lines skipped here count toward the size
        limit of the message at ``pos``, so a peer cannot grow the buffer without bound.
        """
        buf, n = self._buf, len(self._buf)
        seen_end, seen_p = self._blank
        p = pos + seen_p if seen_end == end - pos else end
        while p < n:
            c = buf[p]
            if c == _LF:
                p += 1
            elif c == _CR and p + 1 < n and buf[p + 1] == _LF:
                p += 2
            else:
                break
        if p - pos > self._limit:
            raise self._too_large(p - pos)
        # Resume here when more data comes (a lone CR at the end is looked at again).
        self._blank = (end - pos, p - pos)
        rest = bytes(buf[p : p + len(_RESPONSE_START)])
        for start in (_EVENT_START, _RESPONSE_START):
            if rest.startswith(start):
                return True
        if p == n and self._eof:
            return True
        if not self._eof and any(start.startswith(rest) for start in _STARTS):
            return None  # too few bytes to tell (a lone CR may still become a blank line)
        return False


def _message(lines: list[str]) -> AmiEvent | AmiResponse:
    pairs = _pairs(lines)
    if pairs is None:
        raise AmiProtocolError(
            f"AMI message line without ':' after {lines[0][:60]!r}", recoverable=True
        )
    key, value = pairs[0]
    if key == "Event":
        return AmiEvent(name=value, fields=tuple(pairs))
    if key == "Response":
        action_id = None
        output = []
        for k, v in pairs:
            if k == "ActionID" and action_id is None:
                action_id = v
            elif k == "Output":
                output.append(v)
        return AmiResponse(
            response=value, action_id=action_id, fields=tuple(pairs), output=tuple(output)
        )
    raise AmiProtocolError(
        f"AMI message starts with {key[:60]!r}, not Event or Response", recoverable=True
    )


def _follows_response(lines: list[str]) -> AmiResponse:
    pairs = [("Response", "Follows")]
    i = 1
    while i < len(lines):
        key, sep, value = lines[i].partition(": ")
        if not sep or key not in _FOLLOWS_HEADERS:
            break
        pairs.append((key, value))
        i += 1
    output = lines[i:]
    last = output[-1][: -len(END_COMMAND)] if output else ""
    if output:
        if last:
            output[-1] = last
        else:
            output.pop()
    action_id = next((v for k, v in pairs if k == "ActionID"), None)
    return AmiResponse(
        response="Follows", action_id=action_id, fields=tuple(pairs), output=tuple(output)
    )
