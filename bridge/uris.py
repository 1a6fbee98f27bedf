"""SIP URI and phone-number helpers shared by every source and by correlation."""

from __future__ import annotations

from bridge.sip.syntax import pct_decode

__all__ = ["digits", "numbers_match", "phone_key", "uri_of_header", "user_of_uri"]

MIN_SUFFIX_DIGITS = 7


def phone_key(uri: str) -> str:
    """Reduce a SIP URI to `user@host` (lower-case host, no scheme, port or parameters).

    >>> phone_key("<sip:1001@PBX.example:5060;transport=udp>")
    '1001@pbx.example'
    """
    text = uri.strip().strip("<>")
    for scheme in ("sips:", "sip:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split(";", 1)[0].split("?", 1)[0]
    user, at, host = text.rpartition("@")
    if not at:
        return text.lower()
    host = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
    return f"{user}@{host.lower()}"


def digits(number: str) -> str:
    """Only the (ASCII) digits of a phone number."""
    return "".join(ch for ch in number if "0" <= ch <= "9")


def numbers_match(a: str | None, b: str | None) -> bool:
    """Same number, allowing a national form against an international one.

    Equal digits match; otherwise the shorter must be at least 7 digits and end the longer
    (`+34 900 000 001` matches `900000001` and `0034900000001`).
    """
    if not a or not b:
        return False
    da, db = digits(a), digits(b)
    if not da or not db:
        return a.strip().lower() == b.strip().lower()
    if da == db:
        return True
    short, long_ = sorted((da, db), key=len)
    return len(short) >= MIN_SUFFIX_DIGITS and long_.endswith(short)


def uri_of_header(value: str) -> str:
    """The URI text of a From/To/Contact/P-Asserted-Identity value (name-addr or addr-spec)."""
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        return value[lt + 1 : gt if gt >= 0 else len(value)].strip()
    # An addr-spec: parameters after it belong to the header (RFC 3261 20.10).
    return value.split(";", 1)[0].strip()


def user_of_uri(uri: str) -> str | None:
    """The user part of a ``sip:``/``sips:`` URI, or the number of a ``tel:`` URI; %-decoded."""
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return None
    if scheme.lower() == "tel":
        number = rest.split(";", 1)[0]
        return pct_decode(number) or None
    at = rest.find("@")
    if at < 0:
        return None
    user = rest[:at].split(":", 1)[0]  # drop a password
    if not user or ";" in user or "?" in user:
        return None
    return pct_decode(user)
