"""Whatever a phone (or anyone on an allowed address) sends, parsing gives events or a clear
`InvalidInput`, never another exception."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from bridge.deskphone import poly, snom, yealink
from bridge.errors import InvalidInput

QUERY_KEYS = ("mac", "ip", "local", "remote", "call_id", "user", "active_user", "display_remote")
TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["00:15:65:aa:bb:cc", "001565AABBCC", "sip:1001@pbx", "", "0", "-1"]),
)


EVENT = st.one_of(st.sampled_from([*yealink.EVENTS, *snom.EVENTS]), st.text(max_size=20))


@given(EVENT, st.dictionaries(st.sampled_from(QUERY_KEYS), TEXT, max_size=8))
def test_any_action_url_query_gives_events_or_invalid_input(
    event: str, query: dict[str, str]
) -> None:
    """An event name the vendor does not send is a KeyError (the route answers 404
    unknown_event); any query is an event or InvalidInput."""
    for vendor in (yealink, snom):
        try:
            vendor.parse(event, query)
        except InvalidInput:
            pass
        except KeyError:
            assert event not in vendor.EVENTS


ELEMENT = st.sampled_from(
    ["CallStateChangeEvent", "IncomingCallEvent", "OutgoingCallEvent", "OffHookEvent", "X"]
)
FIELD = st.sampled_from(
    ["MACAddress", "PhoneIP", "TimeStamp", "CallState", "CallReference", "CallLineInfo"]
)


@st.composite
def poly_bodies(draw: st.DrawFn) -> bytes:
    events = []
    for _ in range(draw(st.integers(0, 3))):
        fields = "".join(
            f"<{name}>{value}</{name}>"
            for name, value in draw(
                st.lists(
                    st.tuples(
                        FIELD,
                        st.one_of(
                            st.sampled_from(
                                [
                                    "0004f2aabbcc",
                                    "2026-11-25T10:00:00",
                                    "9999-12-31T23:59:59-23:59",
                                    "0001-01-01T00:00:00+23:59",
                                    "Connected",
                                    "Offering",
                                    "0x1",
                                ]
                            ),
                            st.text(
                                alphabet=st.characters(blacklist_characters="<>&"), max_size=12
                            ),
                        ),
                    ),
                    max_size=6,
                )
            )
        )
        events.append(f"<{draw(ELEMENT)}>{fields}</{draw(ELEMENT)}>")
    body = "<PolycomIPPhone>" + "".join(events) + "</PolycomIPPhone>"
    return draw(st.one_of(st.just(body.encode("utf-8", "surrogatepass")), st.binary(max_size=60)))


@given(poly_bodies())
def test_any_poly_body_gives_events_or_invalid_input(body: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        poly.parse(body)
