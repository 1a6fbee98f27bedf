"""Header-name tables: compact forms (RFC 3261 7.3.3 and later RFCs) and list-valued headers."""

from __future__ import annotations

__all__ = ["COMPACT_FORMS", "LIST_HEADERS", "canonical_name"]

COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}
"""Single-letter compact header names mapped to the lower-cased long name."""

# Headers whose grammar is a comma-separated list, so that "A: x, y" equals "A: x" + "A: y".
# Others (Date, Subject, User-Agent, WWW-Authenticate, ...) may contain commas in one value and
# are never split.
LIST_HEADERS: frozenset[str] = frozenset(
    {
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "request-disposition",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)


def canonical_name(name: str) -> str:
    """Return the index key for a header name: lower-cased, compact form expanded."""
    key = name.strip().lower()
    if len(key) == 1:
        return COMPACT_FORMS.get(key, key)
    return key
