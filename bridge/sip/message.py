"""The parsed SIP message: start line, indexed raw header lines, body, lazy accessors."""

from __future__ import annotations

from .address import NameAddr, ReferTo, parse_name_addr, parse_refer_to, split_name_addr
from .errors import SipParseError
from .headers import (
    CSeq,
    EventHeader,
    ReplacesParams,
    SubscriptionState,
    Via,
    parse_cseq,
    parse_event,
    parse_refer_sub,
    parse_replaces,
    parse_subscription_state,
    parse_via,
)
from .names import LIST_HEADERS, canonical_name
from .sdp import SdpDirection, sdp_direction
from .sipfrag import SipFrag, parse_sipfrag, parse_status_line
from .syntax import find_param, is_token, split_top_level
from .uri import SipUri, parse_uri

__all__ = ["SipMessage"]

_REQUIRED = frozenset({"call-id", "cseq", "from", "to", "via"})
# A status line's code: 100-699, followed by a space or nothing.
_FIRST_DIGITS = frozenset("123456")
_AFTER_CODE = frozenset({"", " "})


class SipMessage:
    """One parsed SIP request or response; header values are decoded on first access.

    Accessors that decode a header raise :class:`SipParseError` if that header is malformed.
    """

    __slots__ = (
        "_cseq",
        "_first",
        "_more",
        "body",
        "call_id",
        "is_request",
        "method",
        "reason",
        "request_uri",
        "start_line",
        "status_code",
    )

    def __init__(
        self,
        start_line: str,
        first: dict[str, str],
        more: dict[str, list[str]] | None,
        body: bytes,
    ) -> None:
        # ``first`` maps each header key to its first line's raw (unstripped) value and ``more``
        # holds the values of repeated lines: one dict insert per line, no list per header.
        self.start_line = start_line
        self._first = first
        self._more = more
        self.body = body
        self._cseq: CSeq | None = None
        if start_line[:4].upper() == "SIP/":
            # "SIP/2.0 200 OK", the usual spelling, without a call; else the careful parser.
            code_text = start_line[8:11]
            if (
                start_line[:8] == "SIP/2.0 "
                and len(code_text) == 3
                and start_line[8:9] in _FIRST_DIGITS
                and code_text.isdigit()
                and code_text.isascii()
                and start_line[11:12] in _AFTER_CODE
            ):
                code, reason = int(code_text), start_line[12:].strip()
            else:
                code, reason = parse_status_line(start_line)
            self.is_request = False
            self.method: str | None = None
            self.request_uri: str | None = None
            self.status_code: int | None = code
            self.reason: str | None = reason
        else:
            parts = start_line.split()
            if (
                len(parts) != 3
                or (parts[2] != "SIP/2.0" and parts[2].upper() != "SIP/2.0")
                or not ((parts[0].isascii() and parts[0].isalpha()) or is_token(parts[0]))
            ):
                raise SipParseError(f"bad start line {start_line[:120]!r}")
            self.is_request = True
            self.method = parts[0]
            self.request_uri = parts[1]
            self.status_code = None
            self.reason = None
        if not first.keys() >= _REQUIRED:
            missing = sorted(_REQUIRED - first.keys())
            raise SipParseError(f"missing mandatory header(s): {', '.join(missing)}")
        call_id = first["call-id"].strip()
        if not call_id:
            raise SipParseError("empty Call-ID")
        self.call_id = call_id  # the Call-ID (hot: every message is looked up by it)

    def __repr__(self) -> str:
        return f"<SipMessage {self.start_line!r} call_id={self.call_id!r}>"

    # -- generic header access -------------------------------------------------------------

    def _values(self, key: str) -> list[str]:
        raw = self._first.get(key)
        if raw is None:
            return []
        more = self._more
        if more is None or key not in more:
            return [raw.strip()]
        return [raw.strip(), *(value.strip() for value in more[key])]

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (any case, compact or long form)."""
        key = canonical_name(name)
        raw = self._first.get(key)
        if raw is None:
            return None
        value = raw.strip()
        if key in LIST_HEADERS and "," in value:
            return split_top_level(value, ",", angle=True)[0].strip()
        return value

    def headers(self, name: str) -> list[str]:
        """Return every value of ``name`` in order; list headers are split on top-level commas."""
        key = canonical_name(name)
        values = self._values(key)
        if key not in LIST_HEADERS:
            return values
        out: list[str] = []
        for value in values:
            if "," in value:
                out.extend(p.strip() for p in split_top_level(value, ",", angle=True) if p.strip())
            elif value:
                out.append(value)
        return out

    def raw_headers(self, name: str) -> list[str]:
        """Return the value of each ``name`` header line as written (never split on commas)."""
        return self._values(canonical_name(name))

    def has_header(self, name: str) -> bool:
        """Return True if at least one ``name`` header line is present."""
        return canonical_name(name) in self._first

    def header_names(self) -> list[str]:
        """Return the lower-cased, compact-expanded names of the headers present."""
        return list(self._first)

    # -- dialog keys (hot path) ------------------------------------------------------------

    @property
    def from_tag(self) -> str | None:
        """The From tag, or None if the From header has no tag."""
        return _tag_of(self._first["from"])

    @property
    def to_tag(self) -> str | None:
        """The To tag (None on an out-of-dialog request or a 100 Trying)."""
        return _tag_of(self._first["to"])

    @property
    def cseq(self) -> CSeq:
        """The CSeq (number, method)."""
        cseq = self._cseq
        if cseq is None:
            cseq = self._cseq = parse_cseq(self._first["cseq"])
        return cseq

    @property
    def via_branch(self) -> str | None:
        """The branch parameter of the topmost Via."""
        return _branch_of(self._first["via"])

    @property
    def bottom_via(self) -> str:
        """The last Via line as written (the originating UA's), stripped; may hold a list."""
        more = self._more
        if more is not None:
            vias = more.get("via")
            if vias:
                return vias[-1].strip()
        return self._first["via"].strip()

    def via_branches(self) -> list[str | None]:
        """The branch of every Via, topmost first (the last one is the originating UA's)."""
        return [_branch_of(value) for value in self.headers("via")]

    def vias(self) -> list[Via]:
        """Every Via entry decoded, topmost first."""
        return [parse_via(value) for value in self.headers("via")]

    @property
    def content_type(self) -> str | None:
        """The media type, lower-cased and without parameters (``application/sdp``)."""
        value = self.header("content-type")
        if value is None:
            return None
        return value.partition(";")[0].strip().lower() or None

    # -- addresses ---------------------------------------------------------------------------

    def from_addr(self) -> NameAddr:
        """The From header decoded."""
        return parse_name_addr(self._first["from"])

    def to_addr(self) -> NameAddr:
        """The To header decoded."""
        return parse_name_addr(self._first["to"])

    def from_uri(self) -> SipUri:
        """The From URI."""
        return self.from_addr().uri

    def to_uri(self) -> SipUri:
        """The To URI."""
        return self.to_addr().uri

    def contact_uri(self) -> SipUri | None:
        """The first Contact URI, or None without Contact (``Contact: *`` is an error)."""
        value = self.header("contact")
        return None if value is None else parse_name_addr(value).uri

    def request_sip_uri(self) -> SipUri | None:
        """The Request-URI decoded, or None for a response."""
        return None if self.request_uri is None else parse_uri(self.request_uri)

    # -- transfer headers and bodies ---------------------------------------------------------

    def refer_to(self) -> ReferTo | None:
        """The Refer-To header decoded, including an escaped ``?Replaces=``."""
        value = self.header("refer-to")
        return None if value is None else parse_refer_to(value)

    def referred_by(self) -> NameAddr | None:
        """The Referred-By header decoded (RFC 3892)."""
        value = self.header("referred-by")
        return None if value is None else parse_name_addr(value)

    def replaces(self) -> ReplacesParams | None:
        """The Replaces header of an INVITE (RFC 3891)."""
        value = self.header("replaces")
        return None if value is None else parse_replaces(value)

    def event(self) -> EventHeader | None:
        """The Event header (``refer``, ``dialog`` ...) with its ``id``."""
        value = self.header("event")
        return None if value is None else parse_event(value)

    def subscription_state(self) -> SubscriptionState | None:
        """The Subscription-State header."""
        value = self.header("subscription-state")
        return None if value is None else parse_subscription_state(value)

    def refer_sub(self) -> bool | None:
        """The Refer-Sub header (RFC 4488): False asks for no NOTIFYs; None when absent."""
        value = self.header("refer-sub")
        return None if value is None else parse_refer_sub(value)

    def sipfrag(self) -> SipFrag | None:
        """The status line of a ``message/sipfrag`` body, or None without one."""
        if not self.body:
            return None
        ctype = self.content_type
        if ctype is None:
            if self.body.lstrip()[:4].upper() != b"SIP/":
                return None
        elif ctype != "message/sipfrag":
            return None
        return parse_sipfrag(self.body)

    def sdp_direction(self) -> SdpDirection | None:
        """The media direction of an SDP body (hold detection), or None without SDP."""
        if not self.body:
            return None
        ctype = self.content_type
        if ctype is None:
            if self.body.lstrip()[:2] != b"v=":
                return None
        elif ctype != "application/sdp":
            return None
        return sdp_direction(self.body)


def _tag_of(value: str) -> str | None:
    gt = value.rfind(">")
    if gt >= 0:
        params = value[gt + 1 :]
    else:
        semi = value.find(";")
        params = "" if semi < 0 else value[semi:]
    if '"' in params or "<" in params:  # a quoted parameter value: take the careful path
        params = split_name_addr(value)[2]
    else:
        i = params.find(";tag=")
        if i >= 0:  # the usual spelling; anything else goes through find_param
            j = params.find(";", i + 5)
            fast = (params[i + 5 :] if j < 0 else params[i + 5 : j]).strip()
            if fast:
                return fast
            raise SipParseError(f"empty tag in {value!r}")
    if "tag" not in params.lower():
        return None
    tag = find_param(params, "tag")
    if tag == "":
        raise SipParseError(f"empty tag in {value!r}")
    return tag


def _branch_of(via: str) -> str | None:
    i = via.find(";branch=")
    comma = via.find(",")
    if i >= 0 and (comma < 0 or comma > i) and '"' not in via:
        end = via.find(";", i + 8)
        if comma > i and (end < 0 or comma < end):
            end = comma
        return (via[i + 8 :] if end < 0 else via[i + 8 : end]).strip() or None
    if comma >= 0:
        via = split_top_level(via, ",", angle=False)[0]
    semi = via.find(";")
    if semi < 0:
        return None
    return find_param(via[semi:], "branch") or None
