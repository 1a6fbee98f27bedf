"""What every session transition returns: the new session and the audit entries to append.

Shared by the desktop steps (`bridge.session.machine`) and phone evidence
(`bridge.session.phone`); no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bridge.model import (
    ConfirmedBy,
    Conflict,
    Session,
    SessionStatus,
    Transfer,
    TransferState,
)

PHONE_PROVED = frozenset({ConfirmedBy.PHONE, ConfirmedBy.PHONE_AND_AGENT})


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of a session's append-only trail."""

    at: str
    kind: str  # "desktop", "phone" or "system"
    event: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a transition: the session after it and what to append to its trail."""

    session: Session
    audit: tuple[AuditEntry, ...]
    changed: bool


def bump(session: Session, now: str, **changes: Any) -> Session:
    """The session one version on, with `changes`."""
    return replace(session, version=session.version + 1, updated_at=now, **changes)


def with_transfer(session: Session, transfer: Transfer) -> dict[str, Any]:
    """The changes that set `transfer`, and the status it implies (rule 4)."""
    status = session.status
    if status is not SessionStatus.ENDED:
        transferred = transfer.state is TransferState.TRANSFERRED
        status = SessionStatus.CALL_TRANSFERRED if transferred else SessionStatus.ACTIVE
    return {"transfer": transfer, "status": status}


def add(outcome: Outcome, entry: AuditEntry) -> Outcome:
    """`outcome` with one more audit entry."""
    return Outcome(outcome.session, (*outcome.audit, entry), outcome.changed)


def conflict_detail(conflict: Conflict) -> dict[str, Any]:
    """A conflict as audit detail."""
    return {"desktop": conflict.desktop, "phone": conflict.phone, "detail": conflict.detail}
