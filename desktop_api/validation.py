"""Request bodies checked field by field: every refusal names the field as a JSON pointer."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bridge.errors import InvalidInput
from bridge.model import ID_PATTERN

MAX_TEXT = 200
# Text must hold at least one character that is neither white space nor a control character;
# openapi.yaml's `Text` pattern is this same expression.
VISIBLE = re.compile(r"[^\s\u0000-\u001f\u007f-\u009f\ufeff]")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or `invalid_json` / `invalid_body`."""
    if not raw.strip():
        raise InvalidInput("invalid_json", "the request body is empty; a JSON object is expected")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("invalid_body", "the request body must be a JSON object", field="")
    return body


def check_keys(
    obj: dict[str, Any], pointer: str, required: Iterable[str], optional: Iterable[str] = ()
) -> None:
    """Refuse unknown fields and report the first missing one."""
    required = list(required)
    known = set(required) | set(optional)
    for key in obj:
        if key not in known:
            raise InvalidInput(
                "unknown_field",
                f"unknown field {key!r}; expected: {', '.join(sorted(known))}",
                field=f"{pointer}/{_escape(key)}",
            )
    for key in required:
        if key not in obj:
            raise InvalidInput("missing_field", f"{key!r} is required", field=f"{pointer}/{key}")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def text(
    obj: dict[str, Any],
    key: str,
    pointer: str,
    *,
    max_len: int = MAX_TEXT,
    optional: bool = False,
) -> str | None:
    """A non-empty string of at most `max_len` characters."""
    if key not in obj or (optional and obj[key] is None):
        if optional:
            return None
        raise InvalidInput("missing_field", f"{key!r} is required", field=f"{pointer}/{key}")
    value = obj[key]
    where = f"{pointer}/{key}"
    if not isinstance(value, str):
        raise InvalidInput("invalid_field", f"{key!r} must be a string", field=where)
    if not VISIBLE.search(value):
        raise InvalidInput("invalid_field", f"{key!r} must hold a visible character", field=where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            "invalid_field", f"{key!r} is not valid Unicode text", field=where
        ) from None
    if len(value) > max_len:
        raise InvalidInput(
            "invalid_field", f"{key!r} is longer than {max_len} characters", field=where
        )
    return value


def identifier(obj: dict[str, Any], key: str, pointer: str) -> str:
    """An id chosen by the caller: `[A-Za-z0-9._-]{1,64}`."""
    value = text(obj, key, pointer, max_len=64)
    assert value is not None
    check_id(value, f"{pointer}/{key}")
    return value


def check_id(value: str, where: str) -> None:
    """Refuse ids outside `[A-Za-z0-9._-]{1,64}`."""
    if not ID_PATTERN.fullmatch(value):
        raise InvalidInput(
            "invalid_field", "ids are 1 to 64 characters of A-Z a-z 0-9 . _ -", field=where
        )


def boolean(obj: dict[str, Any], key: str, pointer: str) -> bool:
    """A JSON true or false (not 0/1, not a string)."""
    value = obj.get(key)
    if not isinstance(value, bool):
        raise InvalidInput(
            "invalid_field", f"{key!r} must be true or false", field=f"{pointer}/{key}"
        )
    return value


def obj_field(obj: dict[str, Any], key: str, pointer: str) -> dict[str, Any]:
    """A nested JSON object."""
    value = obj.get(key)
    if not isinstance(value, dict):
        raise InvalidInput("invalid_field", f"{key!r} must be an object", field=f"{pointer}/{key}")
    return value


def choice(
    obj: dict[str, Any], key: str, pointer: str, allowed: Iterable[str], code: str = "invalid_field"
) -> str:
    """One of a fixed set of strings."""
    allowed = list(allowed)
    value = obj.get(key)
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInput(
            code, f"{key!r} must be one of: {', '.join(allowed)}", field=f"{pointer}/{key}"
        )
    return value


MAX_TIME = "9999-12-31T23:59:59.999Z"
RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def future_time(obj: dict[str, Any], key: str, pointer: str, now: str) -> str:
    """An RFC 3339 time later than `now`, as UTC in the clock's own form
    (`2026-11-25T11:05:42.123Z`), so stored times compare as text.

    Not a time: `400 invalid_field`; a time not in the future: `422 already_expired`.
    """
    value = text(obj, key, pointer, max_len=64)
    assert value is not None
    where = f"{pointer}/{key}"
    match = RFC3339.fullmatch(value)
    parsed = None
    if match is not None:
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        fraction, offset = match.group(7) or "", match.group(8).upper()
        zone = "+00:00" if offset == "Z" else offset
        iso = (
            f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{min(second, 59):02d}"
            f"{fraction[:7]}{zone}"
        )
        try:
            parsed = datetime.fromisoformat(iso)
        except ValueError:
            parsed = None
    if parsed is None:
        raise InvalidInput("invalid_field", f"{key!r} must be an RFC 3339 date-time", field=where)
    try:
        stamp = parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except OverflowError:
        stamp = MAX_TIME if parsed.year > 5000 else "0001-01-01T00:00:00.000Z"
    if stamp <= now:
        raise InvalidInput("already_expired", f"{key!r} must be in the future", field=where)
    return stamp
