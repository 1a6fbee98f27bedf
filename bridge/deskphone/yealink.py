"""Yealink "Action URL": the phone sends an HTTP GET on each configured event.

Each event has its own provisioning key (`action_url.<event>`) and web UI field (Features >
Action URL); the query part carries `$variables` the phone fills in (`$mac`, `$ip`, `$local`,
`$remote`, `$call_id`, `$active_user`). Sources: Yealink Administrator Guides for SIP-T2/T4/T5
series ("Action URL", "Pre-defined Events List", "Variable Values List").
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.deskphone.events import DeskEventKind, DeskPhoneEvent, from_action_url

VENDOR = "yealink"

# Our path segment = the provisioning key without `action_url.`; None = known, carries nothing
# about the customer call (accepted and counted as ignored).
EVENTS: dict[str, DeskEventKind | None] = {
    "incoming_call": DeskEventKind.INCOMING,
    "outgoing_call": DeskEventKind.OUTGOING,
    "call_established": DeskEventKind.ESTABLISHED,
    "call_terminated": DeskEventKind.TERMINATED,
    "hold": DeskEventKind.HOLD,
    "unhold": DeskEventKind.UNHOLD,
    "held": None,
    "unheld": None,
    "transfer_call": DeskEventKind.TRANSFER,
    "blind_transfer_call": DeskEventKind.BLIND_TRANSFER,
    "attended_transfer_call": DeskEventKind.ATTENDED_TRANSFER,
    "transfer_finished": DeskEventKind.TRANSFER_FINISHED,
    "transfer_failed": DeskEventKind.TRANSFER_FAILED,
}
# The events an admin configures for the bridge, with their web UI names.
CONFIGURED = (
    ("incoming_call", "Incoming Call"),
    ("outgoing_call", "Outgoing Call"),
    ("call_established", "Established"),
    ("call_terminated", "Terminated"),
    ("hold", "Hold"),
    ("unhold", "UnHold"),
    ("transfer_call", "Transfer Call"),
    ("blind_transfer_call", "Blind Transfer"),
    ("attended_transfer_call", "Attended Transfer"),
    ("transfer_finished", "Transfer Finished"),
    ("transfer_failed", "Transfer Failed"),
)
QUERY = "mac=$mac&ip=$ip&local=$local&remote=$remote&call_id=$call_id&user=$active_user"


def parse(event: str, query: Mapping[str, str]) -> DeskPhoneEvent | None:
    """The event of one Action URL request; None for a known event the bridge ignores.

    Raises KeyError for an event name Yealink does not send.
    """
    kind = EVENTS[event]
    if kind is None:
        return None
    return from_action_url(VENDOR, kind, query)


def templates(base: str, secret: str) -> list[dict[str, str]]:
    """What an admin pastes: one provisioning line (and web UI field) per event."""
    out = []
    for event, label in CONFIGURED:
        url = f"{base}/yealink/{event}?{QUERY}&key={secret}"
        out.append(
            {
                "setting": f"action_url.{event}",
                "web_ui": f"Features > Action URL > {label}",
                "url": url,
                "line": f"action_url.{event} = {url}",
            }
        )
    return out
