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


@dataclass(slots=True)
class Resync:
    """The channel list as it arrives, and the events held until it is complete (`active`)."""

    active: bool = False
    rows: list[AmiEvent] = field(default_factory=list)  # CoreShowChannel rows so far
    held: list[tuple[AmiEvent, float]] = field(default_factory=list)  # (event, received_at)

    def reset(self, *, active: bool) -> None:
        """Drop the rows and the held events; wait for a list when `active`."""
        self.rows.clear()
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

    def take_rows(self) -> list[AmiEvent]:
        """The rows of a completed list (and forget them)."""
        rows, self.rows = self.rows, []
        return rows


def rebuild_legs(
    rows: Iterable[AmiEvent],
    phones: AmiPhones,
    legs: dict[str, AmiChannel],
    call_id_variable: str | None,
) -> None:
    """Add to `legs` the watched phones' calls that were already up when we connected.

    Nothing is emitted: the store already holds what an earlier run concluded; this only lets
    later events (a transfer, a hang-up) be understood. Per phone the oldest channel is the
    customer call; a channel the phone is dialling from (`Application: Dial`) next to it is
    the consult.
    """
    for row in sorted(rows, key=listing_age):
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
            customer.consult = ConsultState.ANSWERED if up else ConsultState.RINGING
        legs[uniqueid] = leg
