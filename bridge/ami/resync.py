"""Resync after (re)connecting: the answer to `Action: CoreShowChannels`. No I/O.

While the channel list is on its way, other events are held (`Resync`); once it is complete,
`rebuild_legs` rebuilds the watched phones' calls from it and the tracker replays what was held
on top, so a transfer made while the list came is still understood.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bridge.ami.channels import AmiChannel, listing_age, live_customer, number, variable
from bridge.ami.messages import AmiEvent
from bridge.ami.phones import AmiPhones
from bridge.model import ConsultState

LISTING = frozenset({"CoreShowChannel", "CoreShowChannelsComplete"})
MAX_HELD = 10_000  # events held while a channel list is awaited
MAX_ROWS = 50_000  # channels kept (watched) or indexed (dialled) from one list


@dataclass(slots=True)
class Resync:
    """The channel list as it arrives, and the events held until it is complete (`active`)."""

    active: bool = False
    rows: list[AmiEvent] = field(default_factory=list)  # CoreShowChannel rows so far
    # Channels being dialled (`Application: AppDial`), watched phones or not, by `Linkedid`.
    dialled: dict[str, list[str]] = field(default_factory=dict)
    held: list[tuple[AmiEvent, float]] = field(default_factory=list)  # (event, received_at)

    def reset(self, *, active: bool) -> None:
        """Drop the rows and the held events; wait for a list when `active`."""
        self.rows.clear()
        self.dialled.clear()
        self.held.clear()
        self.active = active

    def hold(self, event: AmiEvent, received_at: float) -> bool:
        """Keep an event for the replay; False when `MAX_HELD` are held already."""
        if len(self.held) < MAX_HELD:
            self.held.append((event, received_at))
            return True
        return False

    def release(self) -> list[tuple[AmiEvent, float]]:
        """Stop waiting; the held events, oldest first, to replay."""
        self.active = False
        held, self.held = self.held, []
        return held

    def listed(self, row: AmiEvent, watched: bool) -> None:
        """One `CoreShowChannel` row: kept if it is a watched phone's, indexed if dialled."""
        if watched and len(self.rows) < MAX_ROWS:
            self.rows.append(row)
        linkedid, uniqueid = row.get("Linkedid"), row.get("Uniqueid")
        if row.get("Application") != "AppDial" or not linkedid or not uniqueid:
            return
        if linkedid in self.dialled or len(self.dialled) < MAX_ROWS:
            self.dialled.setdefault(linkedid, []).append(uniqueid)

    def take_rows(self) -> tuple[list[AmiEvent], dict[str, list[str]]]:
        """The watched rows and the dialled index of a completed list (and forget them)."""
        rows, self.rows = self.rows, []
        dialled, self.dialled = self.dialled, {}
        return rows, dialled


def rebuild_legs(
    rows: Iterable[AmiEvent],
    phones: AmiPhones,
    legs: dict[str, AmiChannel],
    call_id_variable: str | None,
    dialled: dict[str, list[str]] | None = None,
) -> None:
    """Add to `legs` the watched phones' calls that were already up when we connected.

    Nothing is emitted: the store already holds what an earlier run concluded; this only lets
    later events (a transfer, a hang-up) be understood. Per phone the oldest channel is the
    customer call; a channel the phone is dialling from (`Application: Dial`) next to it is
    the consult, and the channel it dials (same `Linkedid`, `Application: AppDial`) is the
    consult's target: a semi-attended transfer made after the resync is then settled by that
    channel answering or giving up, as it is when the bridge saw the consult's `DialBegin`.
    """
    rows = sorted(rows, key=listing_age)
    for row in rows:
        uniqueid = row.get("Uniqueid") or ""
        channel = row.get("Channel") or ""
        phone = phones.phone_of(channel)
        if phone is None or not uniqueid or uniqueid in legs:
            continue
        placed = row.get("Application") == "Dial"
        customer = live_customer(legs.values(), phone)
        role = "consult" if placed and customer is not None else "customer"
        up = row.get("ChannelStateDesc") == "Up"
        leg = AmiChannel(
            uniqueid, channel, phone, role, placed, number(row.get("ConnectedLineNum"))
        )
        leg.up = up
        leg.sip_call_id = variable(row, call_id_variable)
        leg.key = leg.sip_call_id or f"ami:{uniqueid}"
        if role == "consult" and customer is not None:
            leg.customer_leg = customer.uniqueid
            leg.answered = up
            leg.peer = target_of(row, dialled or {})
            customer.consult = ConsultState.ANSWERED if up else ConsultState.RINGING
        legs[uniqueid] = leg


def target_of(caller: AmiEvent, dialled: dict[str, list[str]]) -> str | None:
    """The channel `caller` is dialling: the one `AppDial` channel of its call (`Linkedid`);
    None when there is not exactly one (a ring group, Local channels)."""
    found = [
        u for u in dialled.get(caller.get("Linkedid") or "", ()) if u != caller.get("Uniqueid")
    ]
    return found[0] if len(found) == 1 else None
