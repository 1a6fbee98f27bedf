"""Dialog state (RFC 4235): parse dialog-info+xml, keep a SUBSCRIBE alive, read line states.

Pure: no sockets, no clock (`now` is passed in). The asyncio driver is `phone_drivers.dialog`.
"""

from bridge.dialog.digest import (
    Challenge,
    DigestCredentials,
    DigestSession,
    authorization,
    parse_challenge,
)
from bridge.dialog.errors import (
    DialogInfoError,
    DigestError,
    HostileXml,
    SubscriptionError,
    SubscriptionStateError,
)
from bridge.dialog.lines import DialogLines, identity_number
from bridge.dialog.parse import (
    MAX_BODY_BYTES,
    NAMESPACE,
    DialogEntry,
    DialogInfo,
    DialogState,
    DocumentState,
    parse_dialog_info,
)
from bridge.dialog.requests import Outgoing, SubscriptionSettings
from bridge.dialog.subscription import TRANSITIONS, Step, SubEvent, Subscription, SubState
from bridge.dialog.view import LineView

__all__ = [
    "MAX_BODY_BYTES",
    "NAMESPACE",
    "TRANSITIONS",
    "Challenge",
    "DialogEntry",
    "DialogInfo",
    "DialogInfoError",
    "DialogLines",
    "DialogState",
    "DigestCredentials",
    "DigestError",
    "DigestSession",
    "DocumentState",
    "HostileXml",
    "LineView",
    "Outgoing",
    "Step",
    "SubEvent",
    "SubState",
    "Subscription",
    "SubscriptionError",
    "SubscriptionSettings",
    "SubscriptionStateError",
    "authorization",
    "identity_number",
    "parse_challenge",
    "parse_dialog_info",
]
