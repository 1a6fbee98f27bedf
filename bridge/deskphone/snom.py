"""Snom "Action URLs": the phone sends an HTTP GET on each configured event.

Settings `action_incoming_url`, `action_outgoing_url`, `action_connected_url`,
`action_disconnected_url`, `action_hold`, `action_unhold`, `action_transfer`,
`action_blind_transfer`, `action_attended_transfer`; runtime variables `$local`, `$remote`,
`$call-id`, `$active_user`, `$phone_ip`, and `$mac` (a static setting). Sources: Snom wiki
"Action URLs", "Action URLs/Runtime Variables", "Web Interface/V8/Action URL Settings".
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from bridge.deskphone.events import DeskEventKind, DeskPhoneEvent, from_action_url

VENDOR = "snom"

# Our path segment -> (event, Snom setting, web UI field).
EVENTS: dict[str, tuple[DeskEventKind, str, str]] = {
    "incoming": (DeskEventKind.INCOMING, "action_incoming_url", "Incoming call"),
    "outgoing": (DeskEventKind.OUTGOING, "action_outgoing_url", "Outgoing call"),
    "connected": (DeskEventKind.ESTABLISHED, "action_connected_url", "On Connected"),
    "disconnected": (DeskEventKind.TERMINATED, "action_disconnected_url", "On Disconnected"),
    "hold": (DeskEventKind.HOLD, "action_hold", "Hold call"),
    "unhold": (DeskEventKind.UNHOLD, "action_unhold", "Unhold call"),
    "transfer": (DeskEventKind.TRANSFER, "action_transfer", "Transfer call"),
    "blind_transfer": (DeskEventKind.BLIND_TRANSFER, "action_blind_transfer", "Blind transfer"),
    "attended_transfer": (
        DeskEventKind.ATTENDED_TRANSFER,
        "action_attended_transfer",
        "Attended transfer",
    ),
}
QUERY = "mac=$mac&ip=$phone_ip&local=$local&remote=$remote&call_id=$call-id&user=$active_user"


def parse(event: str, query: Mapping[str, str]) -> DeskPhoneEvent:
    """The event of one Action URL request; KeyError for an event name the bridge does not take."""
    kind = EVENTS[event][0]
    return from_action_url(VENDOR, kind, query)


def templates(base: str, secret: str) -> list[dict[str, str]]:
    """What an admin pastes: the web UI field, or the provisioning XML line, per event."""
    out = []
    for event, (_, setting, label) in EVENTS.items():
        url = f"{base}/snom/{event}?{QUERY}&key={secret}"
        out.append(
            {
                "setting": setting,
                "web_ui": f"Setup > Advanced > Action URL Settings > {label}",
                "url": url,
                "line": f'<{setting} perm="R">{escape(url, quote=False)}</{setting}>',
            }
        )
    return out
