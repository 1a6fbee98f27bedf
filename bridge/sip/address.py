"""name-addr / addr-spec values (From, To, Contact, Refer-To, Referred-By) and Refer-To."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SipParseError
from .headers import ReplacesParams, parse_replaces
from .syntax import Params, get_param, parse_params, quoted_end, unescape_quoted
from .uri import SipUri, parse_uri

__all__ = ["NameAddr", "ReferTo", "parse_name_addr", "parse_refer_to", "split_name_addr"]


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A name-addr or addr-spec: optional display name, the URI, and header parameters."""

    display_name: str | None
    uri: SipUri
    params: Params = ()

    def param(self, name: str) -> str | None:
        """Return header parameter ``name`` (case-insensitive); None if absent or a flag."""
        return get_param(self.params, name)


@dataclass(frozen=True, slots=True)
class ReferTo:
    """A Refer-To value: the target address and, for attended transfer, its Replaces."""

    address: NameAddr
    replaces: ReplacesParams | None

    @property
    def uri(self) -> SipUri:
        """The target URI (its ``Replaces`` URI header, if any, is still in ``uri.headers``)."""
        return self.address.uri


def split_name_addr(value: str) -> tuple[str | None, str, str]:
    """Split a header value into (display name, URI text, header-parameter text).

    Following RFC 3261 20.10, parameters after an addr-spec (no ``<>``) are header parameters.
    """
    v = value.strip()
    if not v:
        raise SipParseError("empty address")
    display: str | None = None
    lt = v.find("<")
    q = v.find('"')
    if q >= 0 and (lt < 0 or q < lt):
        if v[:q].strip():
            raise SipParseError(f"text before quoted display name in {value!r}")
        end = quoted_end(v, q)
        lt = v.find("<", end)
        if lt < 0 or v[end:lt].strip():
            raise SipParseError(f"quoted display name not followed by <URI> in {value!r}")
        display = unescape_quoted(v[q + 1 : end - 1])
    elif lt > 0:
        display = v[:lt].strip() or None
    if lt >= 0:
        gt = v.find(">", lt + 1)
        if gt < 0:
            raise SipParseError(f"unclosed '<' in {value!r}")
        return display, v[lt + 1 : gt].strip(), v[gt + 1 :]
    semi = v.find(";")
    uri_text = v if semi < 0 else v[:semi].rstrip()
    if not uri_text or " " in uri_text or "\t" in uri_text:
        raise SipParseError(f"bad addr-spec {value!r}")
    return None, uri_text, "" if semi < 0 else v[semi:]


def parse_name_addr(value: str) -> NameAddr:
    """Parse a From/To/Contact/Referred-By style value into a :class:`NameAddr`."""
    display, uri_text, params_text = split_name_addr(value)
    return NameAddr(display, parse_uri(uri_text), parse_params(params_text))


def parse_refer_to(value: str) -> ReferTo:
    """Parse Refer-To; an escaped ``?Replaces=`` URI header becomes :class:`ReplacesParams`."""
    address = parse_name_addr(value)
    raw = address.uri.header("replaces")
    return ReferTo(address, None if raw is None else parse_replaces(raw))
