"""Poly (Polycom) telephony event notifications: the phone POSTs XML call-state events.

Configured with `apps.telNotification.URL` and one switch per event
(`apps.telNotification.callStateChangeEvent`, ...). A body is a `<PolycomIPPhone>` holding one
or more events (UC Software 5 may also send the event element alone). Only the Call State
Change event names the call (`CallReference`); Incoming/Outgoing Call events do not, so they
cannot be tied to a call and are counted, not applied. Sources: "Web Application Developer's
Guide for Polycom Phones" (UC Software 5.0.0, "Using Telephony Notification Events"; SIP 3.1
"Developer's Guide SoundPoint IP / SoundStation IP").
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

from bridge.deskphone.events import DeskEventKind, DeskPhoneEvent, clean, normalise_mac, number_of
from bridge.errors import InvalidInput
from bridge.untrusted import UntrustedXmlError, parse_untrusted_xml

VENDOR = "poly"

CALL_STATES: dict[str, DeskEventKind | None] = {
    "offering": DeskEventKind.INCOMING,
    "dialtone": None,
    "setup": DeskEventKind.OUTGOING,
    "ringback": DeskEventKind.OUTGOING,
    "connected": DeskEventKind.ESTABLISHED,
    "hold": DeskEventKind.HOLD,
    "callhold": DeskEventKind.HOLD,
    "held": None,
    "callheld": None,
    "disconnected": DeskEventKind.TERMINATED,
    "free": DeskEventKind.TERMINATED,
}
PLAIN_EVENTS = {
    "IncomingCallEvent": DeskEventKind.INCOMING,
    "OutgoingCallEvent": DeskEventKind.OUTGOING,
}
SETTINGS = (
    ("apps.telNotification.callStateChangeEvent", "1"),
    ("apps.telNotification.incomingEvent", "0"),
    ("apps.telNotification.outgoingEvent", "0"),
)


def _text(element: ET.Element, path: str) -> str | None:
    found = element.find(path)
    return clean(found.text) if found is not None and found.text else None


def _timestamp(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise InvalidInput(
            "invalid_body", f"TimeStamp {value!r} is not a date-time", field="/TimeStamp"
        ) from None


def _call_state_event(
    element: ET.Element, mac: str | None, ip: str | None
) -> DeskPhoneEvent | None:
    state = element.get("CallState") or _text(element, "CallLineInfo/CallInfo/CallState")
    if not state:
        raise InvalidInput(
            "invalid_body", "CallStateChangeEvent has no CallState", field="/CallState"
        )
    kind = CALL_STATES.get(state.lower())
    if kind is None:
        return None
    reference = clean(element.get("CallReference")) or _text(
        element, "CallLineInfo/CallInfo/CallReference"
    )
    incoming = (_text(element, "CallLineInfo/CallInfo/CallType") or "").lower() == "incoming"
    party = "Calling" if incoming or kind is DeskEventKind.INCOMING else "Called"
    remote = _text(element, f"CallLineInfo/CallInfo/{party}PartyDirNum") or _text(
        element, f"CallLineInfo/CallInfo/{party}PartyNumber"
    )
    return DeskPhoneEvent(
        vendor=VENDOR,
        kind=kind,
        mac=mac,
        ip=ip,
        call_id=reference,
        remote=number_of(remote),
        observed=_timestamp(_text(element, "TimeStamp")),
    )


def _plain_event(
    element: ET.Element, kind: DeskEventKind, mac: str | None, ip: str | None
) -> DeskPhoneEvent:
    party = "CallingPartyNumber" if kind is DeskEventKind.INCOMING else "CalledPartyNumber"
    return DeskPhoneEvent(
        vendor=VENDOR,
        kind=kind,
        mac=mac,
        ip=ip,
        call_id=None,
        remote=number_of(_text(element, party)),
        observed=_timestamp(_text(element, "TimeStamp")),
    )


@dataclass(frozen=True, slots=True)
class Notification:
    """One POST: the device it came from and its events (None: an event the bridge ignores)."""

    mac: str | None
    ip: str | None
    events: list[DeskPhoneEvent | None]


def parse(body: bytes) -> Notification:
    """Every event of one notification body, in order.

    Raises `InvalidInput` (`invalid_body`) for anything that is not such a notification, or for
    events of more than one device.
    """
    try:
        root = parse_untrusted_xml(body)  # any encoding trouble or DTD: a typed refusal
    except UntrustedXmlError as exc:
        message = "DTDs and entities are not accepted" if exc.hostile else f"not XML: {exc}"
        raise InvalidInput("invalid_body", message, field="") from None
    elements = list(root) if root.tag == "PolycomIPPhone" else [root]
    if not elements:
        raise InvalidInput("invalid_body", "no event in the notification", field="")
    out: list[DeskPhoneEvent | None] = []
    devices: set[tuple[str | None, str | None]] = set()
    for element in elements:
        mac = normalise_mac(_text(element, "MACAddress"), "/MACAddress")
        ip = _text(element, "PhoneIP")
        devices.add((mac, ip))
        if element.tag == "CallStateChangeEvent":
            out.append(_call_state_event(element, mac, ip))
        elif element.tag in PLAIN_EVENTS:
            out.append(_plain_event(element, PLAIN_EVENTS[element.tag], mac, ip))
        elif element.tag.endswith("Event"):
            out.append(None)  # offhook, onhook, lock, registration...: nothing about a call
        else:
            raise InvalidInput("invalid_body", f"unknown element <{element.tag}>", field="")
    if len(devices) != 1:
        raise InvalidInput("invalid_body", "events of more than one device", field="")
    mac, ip = devices.pop()
    if mac is None and ip is None:
        raise InvalidInput("invalid_body", "MACAddress (or PhoneIP) is required", field="")
    return Notification(mac, ip, out)


def templates(base: str, secret: str) -> list[dict[str, str]]:
    """What an admin pastes into the phone's configuration file (one `<apps .../>` element)."""
    url = f"{base}/poly?key={secret}"
    attrs = [("apps.telNotification.URL", url), *SETTINGS]
    out = [
        {
            "setting": name,
            "web_ui": "",
            "url": url if name.endswith(".URL") else "",
            "line": f'{name}="{value}"',
        }
        for name, value in attrs
    ]
    element = "<apps " + " ".join(f'{name}="{value}"' for name, value in attrs) + "/>"
    out.append({"setting": "apps", "web_ui": "", "url": url, "line": element})
    return out
