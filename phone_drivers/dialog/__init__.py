"""The dialog-state source: SUBSCRIBE Event: dialog to each agent's extension on the PBX."""

from phone_drivers.dialog.client import DialogClient, DialogStats, EvidenceSink

__all__ = ["DialogClient", "DialogStats", "EvidenceSink"]
