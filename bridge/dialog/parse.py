"""`application/dialog-info+xml` (RFC 4235) -> `DialogInfo`, refusing DTDs and entities.

The stdlib parser expands internal entities (a "billion laughs" body would eat memory), so a
body that declares a DTD or an entity is refused (looked for in the decoded text, so a UTF-16
body cannot hide one) before the parser sees it, unknown encodings are a `DialogInfoError`, and
bodies are bounded in size. Namespaced (`urn:ietf:params:xml:ns:dialog-info`) and unqualified
element names are both accepted: some PBXs omit the namespace.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import StrEnum

from bridge.dialog.errors import DialogInfoError, HostileXml
from bridge.untrusted import UntrustedXmlError, ascii_uint, parse_untrusted_xml

__all__ = [
    "MAX_BODY_BYTES",
    "NAMESPACE",
    "DialogEntry",
    "DialogInfo",
    "DialogState",
    "DocumentState",
    "parse_dialog_info",
]

NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"
MAX_BODY_BYTES = 64 * 1024
MAX_DIALOGS = 256


class DialogState(StrEnum):
    """A dialog's state (RFC 4235 section 3.7.1)."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DocumentState(StrEnum):
    """Whether a document lists every dialog (`full`) or only changed ones (`partial`)."""

    FULL = "full"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class Replaces:
    """The dialog a dialog replaced (`<replaces call-id local-tag remote-tag/>`)."""

    call_id: str
    local_tag: str | None
    remote_tag: str | None


@dataclass(frozen=True, slots=True)
class DialogEntry:
    """One `<dialog>`; Asterisk's hints give only `id` (the extension) and `state`, plus the
    caller's identity while the line rings."""

    id: str
    state: DialogState
    event: str | None = None  # on terminated: cancelled, rejected, replaced, local-bye, ...
    code: int | None = None
    call_id: str | None = None
    local_tag: str | None = None
    remote_tag: str | None = None
    direction: str | None = None  # initiator | recipient
    remote_identity: str | None = None
    remote_display: str | None = None
    local_identity: str | None = None
    replaces: Replaces | None = None


@dataclass(frozen=True, slots=True)
class DialogInfo:
    """One dialog-info document."""

    version: int
    state: DocumentState
    entity: str
    dialogs: tuple[DialogEntry, ...] = field(default_factory=tuple)


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for child in elem:
        ns, local = _local(child.tag)
        if local == name and ns in (None, NAMESPACE):
            return child
    return None


def _text(elem: ET.Element | None) -> str | None:
    if elem is None or elem.text is None:
        return None
    return elem.text.strip() or None


def _uint(value: str | None, what: str) -> int:
    number = ascii_uint(value)  # ASCII only: "²".isdigit() is true, int("²") raises
    if number is None:
        raise DialogInfoError(f"{what}: expected a whole number, got {value!r:.40}")
    return number


def _entry(elem: ET.Element) -> DialogEntry:
    dialog_id = elem.get("id")
    if not dialog_id:
        raise DialogInfoError("<dialog> without id")
    state_elem = _child(elem, "state")
    state_text = _text(state_elem)
    try:
        state = DialogState((state_text or "").lower())
    except ValueError:
        raise DialogInfoError(f"dialog {dialog_id!r}: unknown state {state_text!r}") from None
    assert state_elem is not None
    code_text = state_elem.get("code")
    code = _uint(code_text, "state code") if code_text is not None else None
    remote = _child(elem, "remote")
    local = _child(elem, "local")
    remote_identity = _child(remote, "identity") if remote is not None else None
    local_identity = _child(local, "identity") if local is not None else None
    replaces_elem = _child(elem, "replaces")
    replaces = None
    if replaces_elem is not None and replaces_elem.get("call-id"):
        replaces = Replaces(
            replaces_elem.get("call-id", ""),
            replaces_elem.get("local-tag"),
            replaces_elem.get("remote-tag"),
        )
    event = state_elem.get("event")
    return DialogEntry(
        id=dialog_id,
        state=state,
        event=event.strip().lower() if event else None,
        code=code,
        call_id=elem.get("call-id"),
        local_tag=elem.get("local-tag"),
        remote_tag=elem.get("remote-tag"),
        direction=elem.get("direction"),
        remote_identity=_text(remote_identity),
        remote_display=remote_identity.get("display") if remote_identity is not None else None,
        local_identity=_text(local_identity),
        replaces=replaces,
    )


def parse_dialog_info(body: bytes, *, max_size: int = MAX_BODY_BYTES) -> DialogInfo:
    """Decode a dialog-info document; `DialogInfoError` (or `HostileXml`) if unusable."""
    if len(body) > max_size:
        raise DialogInfoError(f"body of {len(body)} bytes is over the limit of {max_size}")
    try:
        root = parse_untrusted_xml(body)
    except UntrustedXmlError as exc:
        raise (HostileXml if exc.hostile else DialogInfoError)(exc.message) from None
    ns, name = _local(root.tag)
    if name != "dialog-info" or ns not in (None, NAMESPACE):
        raise DialogInfoError(f"root element is {root.tag!r}, not dialog-info")
    version = _uint(root.get("version"), "version")
    try:
        state = DocumentState((root.get("state") or "").lower())
    except ValueError:
        raise DialogInfoError(f"document state {root.get('state')!r}") from None
    entity = root.get("entity") or ""
    if not entity:
        raise DialogInfoError("dialog-info without entity")
    dialogs: list[DialogEntry] = []
    for child in root:
        ns, local = _local(child.tag)
        if local == "dialog" and ns in (None, NAMESPACE):
            if len(dialogs) >= MAX_DIALOGS:
                raise DialogInfoError(f"more than {MAX_DIALOGS} dialogs")
            dialogs.append(_entry(child))
    return DialogInfo(version, state, entity, tuple(dialogs))
