"""Encoding of actions sent to Asterisk, refusing anything that could inject a header."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bridge.ami.errors import AmiActionError

__all__ = ["encode_action"]

_FORBIDDEN = ("\r", "\n", "\x00")
_RESERVED = frozenset({"action", "actionid"})


def _check(what: str, text: str) -> None:
    for ch in _FORBIDDEN:
        if ch in text:
            raise AmiActionError(f"{what} contains {ch!r}: {text[:60]!r}", field=what)


def _check_key(key: str) -> None:
    _check("key", key)
    if not key or ":" in key or key != key.strip():
        raise AmiActionError(f"not a valid AMI key: {key[:60]!r}", field="key")


def encode_action(
    name: str,
    fields: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    action_id: str | None = None,
) -> bytes:
    """Wire bytes of ``Action: name`` with ``ActionID`` and ``fields`` (pairs may repeat)."""
    _check("action", name)
    if not name or name != name.strip():
        raise AmiActionError(f"not a valid action name: {name[:60]!r}", field="action")
    lines = [f"Action: {name}"]
    if action_id is not None:
        _check("action_id", action_id)
        lines.append(f"ActionID: {action_id}")
    pairs = fields.items() if isinstance(fields, Mapping) else fields
    for key, value in pairs:
        _check_key(key)
        if key.casefold() in _RESERVED:
            raise AmiActionError(f"{key} is set by encode_action, not by fields", field="key")
        _check(key, value)
        lines.append(f"{key}: {value}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AmiActionError(f"action is not encodable as UTF-8: {exc.reason}") from exc
