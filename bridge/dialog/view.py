"""The dialogs of one watched line, from the NOTIFYs of one subscription (RFC 4235 4.1).

Versions count up by one per NOTIFY within a subscription: a version not above the last one is
stale (a retransmission or reordering) and dropped; a `full` document replaces everything, a
`partial` one updates the dialogs it names. A gap before a `partial` document means a lost
NOTIFY: it is applied, and `needs_full` asks the subscription for a fresh full state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.dialog.parse import DialogEntry, DialogInfo, DialogState, DocumentState

__all__ = ["LineView"]


@dataclass(slots=True)
class LineView:
    """What one subscription says a line has now (dialog id -> entry)."""

    dialogs: dict[str, DialogEntry] = field(default_factory=dict)
    version: int | None = None
    stale: int = 0
    gaps: int = 0
    needs_full: bool = False

    def reset(self) -> None:
        """A new subscription: versions start again."""
        self.dialogs.clear()
        self.version = None
        self.needs_full = False

    def apply(self, info: DialogInfo) -> bool:
        """Take a document; False (and counted) if it is stale."""
        if self.version is not None and info.version <= self.version:
            self.stale += 1
            return False
        gap = self.version is not None and info.version != self.version + 1
        self.version = info.version
        if info.state is DocumentState.FULL:
            self.dialogs = {d.id: d for d in info.dialogs}
            self.needs_full = False
            return True
        if gap:
            self.gaps += 1
            self.needs_full = True
        for dialog in info.dialogs:
            self.dialogs[dialog.id] = dialog
        return True

    def live(self) -> list[DialogEntry]:
        """Dialogs not terminated, in document order."""
        return [d for d in self.dialogs.values() if d.state is not DialogState.TERMINATED]
