"""A request to a subscription, read: the answer it gets and what an accepted NOTIFY carries."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.dialog.errors import DialogInfoError
from bridge.dialog.parse import MAX_BODY_BYTES, DialogInfo, parse_dialog_info
from bridge.dialog.wire import CONTENT_TYPE, response
from bridge.sip import SipMessage, SipParseError, SubscriptionState

__all__ = ["Notify", "read_notify"]


@dataclass(slots=True)
class Notify:
    """The reply to send back; when `accepted` (a 200), the NOTIFY's tag, state and documents."""

    reply: bytes
    accepted: bool = False
    from_tag: str | None = None
    sub_state: SubscriptionState | None = None
    documents: list[DialogInfo] = field(default_factory=list)
    malformed: int = 0  # bodies (or headers) that could not be used: counted, answered, dropped


def read_notify(message: SipMessage, *, stopped: bool, remote_tag: str | None) -> Notify:
    """Check a request to the subscription (whose far tag is `remote_tag`, if known yet)."""
    if (message.method or "").upper() != "NOTIFY":
        return Notify(response(message, 405, "Method Not Allowed"))
    if stopped:
        return Notify(response(message, 481, "No Subscription"))
    try:
        from_tag = message.from_tag
        event = message.event()
        sub_state = message.subscription_state()
    except SipParseError:
        return Notify(response(message, 400, "Bad Request"), malformed=1)
    if event is None or event.package != "dialog":
        return Notify(response(message, 489, "Bad Event"))
    if remote_tag is not None and from_tag and from_tag != remote_tag:
        return Notify(response(message, 481, "No Subscription"))
    notify = Notify(response(message, 200, "OK"), True, from_tag, sub_state)
    if message.body:
        try:
            ctype = message.content_type
            if ctype is not None and ctype != CONTENT_TYPE:
                raise DialogInfoError(f"content type {ctype!r}")
            notify.documents.append(parse_dialog_info(message.body, max_size=MAX_BODY_BYTES))
        except (DialogInfoError, SipParseError):
            notify.malformed += 1
    return notify
