"""Smoke test of the real-traffic rig: a blind transfer between SIPp phones through Kamailio,
mirrored as HEPv3 to our collector; every message must arrive twice and decode cleanly.

Needs ``kamailio`` and ``sipp`` (scripts/rig/install.sh). Without them the test skips, unless
TRANSFER_BRIDGE_RIG_REQUIRED is set, in which case it fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.sip import SipMessage
from tests.rig.rig import REQUIRED_ENV, missing_binaries, rig_required, run_case
from tests.rig.wire import WireMessage, decode_capture, is_from_proxy, pair_copies, summary

pytestmark = [pytest.mark.kamailio, pytest.mark.timeout(120)]

AUTH_KEY = "smoke-hep-key"
CAPTURE_ID = 4711


def _need_rig() -> None:
    missing = missing_binaries()
    if not missing:
        return
    reason = f"rig binaries not installed: {', '.join(missing)} (run scripts/rig/install.sh)"
    if rig_required():
        pytest.fail(f"{reason}; {REQUIRED_ENV} is set")
    pytest.skip(reason)


async def test_blind_transfer_arrives_twice_as_hep(tmp_path: Path) -> None:
    _need_rig()
    run = await run_case(
        "blind_success", tmp_path / "rig", auth_key=AUTH_KEY, capture_id=CAPTURE_ID, time_limit=60
    )
    proxy = run.ports["kamailio"]
    phones = {run.ports[name] for name in ("customer", "agent", "target")}
    wire = decode_capture(p.data for p in run.packets)
    table = summary(wire, proxy)
    assert wire, "the collector received nothing"

    for m in wire:
        assert m.hep.auth_key == AUTH_KEY, table
        assert m.hep.capture_id == CAPTURE_ID, table
        assert m.hep.proto_type == 1, table
        assert m.hep.src_ip == m.hep.dst_ip == "127.0.0.1", table
        assert proxy in (m.hep.src_port, m.hep.dst_port), table

    groups = pair_copies(wire)
    for copies in groups.values():
        first = copies[0]
        if first.sip.start_line.startswith("SIP/2.0 100"):
            # Kamailio's own 100 Trying: sent (and mirrored) once, never received.
            assert len(copies) == 1 and is_from_proxy(first, proxy), table
            continue
        assert len(copies) == 2, f"{first.label()} arrived {len(copies)} times\n{table}"
        received = [c for c in copies if c.hep.dst_port == proxy]
        forwarded = [c for c in copies if is_from_proxy(c, proxy)]
        assert len(received) == 1 and len(forwarded) == 1, table
        rcv, fwd = received[0], forwarded[0]
        assert rcv.hep.src_port in phones and fwd.hep.dst_port in phones, table
        assert rcv.hep.timestamp is not None and fwd.hep.timestamp is not None
        assert rcv.hep.timestamp <= fwd.hep.timestamp, table
        extra_via = 1 if rcv.sip.is_request else -1
        assert len(fwd.sip.vias()) == len(rcv.sip.vias()) + extra_via, table
        if rcv.sip.method == "INVITE" and rcv.sip.to_tag is None:
            assert fwd.sip.header("record-route") is not None, table

    def copies_of(
        call_id: str | None,
        *,
        method: str | None = None,
        status: int | None = None,
        cseq: str | None = None,
        frag: int | None = None,
        ruri_user: str | None = None,
    ) -> list[WireMessage]:
        """The two copies of the one message matching all the criteria given."""

        def match(s: SipMessage) -> bool:
            sipfrag = s.sipfrag() if frag is not None else None
            return (
                (call_id is None or s.call_id == call_id)
                and (method is None or s.method == method)
                and (status is None or s.status_code == status)
                and (cseq is None or s.cseq.method == cseq)
                and (frag is None or (sipfrag is not None and sipfrag.status_code == frag))
                and (ruri_user is None or f"sip:{ruri_user}@" in s.start_line)
            )

        found = [copies for copies in groups.values() if match(copies[0].sip)]
        what = f"{method or status} {cseq or ''} {frag or ''}"
        assert len(found) == 1, f"expected one {what}, found {len(found)}\n{table}"
        assert len(found[0]) == 2, f"{what}: {len(found[0])} copies\n{table}"
        return found[0]

    invite = copies_of(None, method="INVITE", ruri_user="1001")[0].sip
    call = invite.call_id
    copies_of(call, status=200, cseq="INVITE")
    refer = copies_of(call, method="REFER")[0].sip
    refer_to = refer.refer_to()
    assert refer_to is not None and refer_to.uri.user == "1002", table
    copies_of(call, status=202, cseq="REFER")
    final = copies_of(call, method="NOTIFY", frag=200)[0].sip
    assert final.event() is not None, table
    copies_of(call, method="BYE")
    # The transferee's new call to the target is another dialog, with its own Call-ID.
    xfer = copies_of(None, method="INVITE", ruri_user="1002")[0].sip
    assert xfer.call_id != call, table
    copies_of(xfer.call_id, status=200, cseq="INVITE")
