"""SIP, SIPS and tel URIs: user, host, port, URI parameters and URI headers (RFC 3261 19.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SipParseError
from .syntax import Params, get_param, parse_params, parse_uint, pct_decode

__all__ = ["SipUri", "parse_uri", "split_hostport"]

_ILLEGAL_RE = re.compile(r'[\s<>"]')
_HOST_RE = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._~-]+)?\]")


@dataclass(frozen=True, slots=True)
class SipUri:
    """A parsed ``sip:``/``sips:``/``tel:`` URI; ``user`` and header values are %-decoded."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    password: str | None = None

    def param(self, name: str) -> str | None:
        """Return URI parameter ``name`` (case-insensitive); None if absent or a flag."""
        return get_param(self.params, name)

    def has_param(self, name: str) -> bool:
        """Return True if URI parameter ``name`` is present (with or without a value)."""
        name = name.lower()
        return any(key == name for key, _ in self.params)

    def header(self, name: str) -> str | None:
        """Return the first URI header ``name`` (``?Replaces=...``), case-insensitive."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def split_hostport(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 references in brackets) and validate both parts."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise SipParseError(f"unclosed IPv6 reference in {text!r}")
        host, rest = text[: close + 1], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"unexpected text after IPv6 reference in {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if colon else None
    if _HOST_RE.fullmatch(host) is None:
        raise SipParseError(f"bad host {host!r}")
    if port_text is None:
        return host, None
    port = parse_uint(port_text, "port", 5)
    if port > 65535:
        raise SipParseError(f"port out of range: {port}")
    return host, port


def _parse_uri_headers(text: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in text.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        if not name:
            raise SipParseError(f"URI header without a name in {text!r}")
        out.append((pct_decode(name), pct_decode(value)))
    return tuple(out)


def _parse_uri_params(text: str) -> Params:
    if "%" not in text:
        return parse_params(text)
    return tuple(
        (pct_decode(name), None if value is None else pct_decode(value))
        for name, value in parse_params(text)
    )


def parse_uri(text: str) -> SipUri:
    """Parse a URI as found inside ``<...>``, in an addr-spec or in a Request-Line."""
    scheme, colon, rest = text.strip().partition(":")
    scheme = scheme.lower()
    if not colon or not scheme:
        raise SipParseError(f"URI without a scheme: {text!r}")
    if _ILLEGAL_RE.search(rest) is not None:
        raise SipParseError(f"illegal character in URI {text!r}")
    if scheme == "tel":
        number, semi, params_text = rest.partition(";")
        if not number:
            raise SipParseError(f"tel URI without a number: {text!r}")
        return SipUri("tel", pct_decode(number), "", None, _parse_uri_params(semi + params_text))
    if scheme not in ("sip", "sips"):
        raise SipParseError(f"unsupported URI scheme {scheme!r} in {text!r}")
    rest, question, headers_text = rest.partition("?")
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_text, has_password, password_text = userinfo.partition(":")
        if not user_text:
            raise SipParseError(f"empty user part in {text!r}")
        user = pct_decode(user_text)
        password = pct_decode(password_text) if has_password else None
    hostport, semi, params_text = rest.partition(";")
    host, port = split_hostport(hostport)
    params = _parse_uri_params(semi + params_text) if semi else ()
    headers = _parse_uri_headers(headers_text) if question else ()
    return SipUri(scheme, user, host, port, params, headers, password)
