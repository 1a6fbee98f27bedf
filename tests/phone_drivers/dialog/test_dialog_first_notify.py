"""A line counts as watched only once the PBX's first NOTIFY told its state (real UDP sockets, a
minimal PBX that accepts the SUBSCRIBE and sends its NOTIFY when the test says so)."""

from __future__ import annotations

import asyncio
import re
import socket

from bridge.evidence import PhoneEvent
from phone_drivers.dialog import DialogClient
from tests.rig.procs import wait_until

BODY = (
    '<?xml version="1.0"?>\n'
    '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" '
    'entity="sip:1001@127.0.0.1"></dialog-info>'
)


def _header(message: str, name: str) -> str:
    found = re.search(rf"^{name}:\s*(.*?)\r$", message, re.M | re.I)
    assert found, f"no {name} in {message!r}"
    return found.group(1)


def _accept(subscribe: str) -> bytes:
    """A 200 to the SUBSCRIBE: same Via, From, Call-ID, CSeq; a To tag; Expires."""
    lines = [
        "SIP/2.0 200 OK",
        *(f"{h}: {_header(subscribe, h)}" for h in ("Via", "From")),
        f"To: {_header(subscribe, 'To')};tag=pbx1",
        *(f"{h}: {_header(subscribe, h)}" for h in ("Call-ID", "CSeq")),
        "Contact: <sip:1001@127.0.0.1>",
        "Expires: 600",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _notify(subscribe: str) -> bytes:
    from_ = _header(subscribe, "From")
    body = BODY.encode()
    lines = [
        "NOTIFY sip:watcher@127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKn1",
        f"From: {_header(subscribe, 'To')};tag=pbx1",
        f"To: {from_}",
        f"Call-ID: {_header(subscribe, 'Call-ID')}",
        "CSeq: 1 NOTIFY",
        "Event: dialog",
        "Subscription-State: active;expires=600",
        "Content-Type: application/dialog-info+xml",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_a_line_is_subscribed_only_after_its_first_notify() -> None:
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    pbx.setblocking(False)
    loop = asyncio.get_running_loop()
    got: list[PhoneEvent] = []
    client = DialogClient(
        "pbx-dialog", pbx.getsockname(), ("127.0.0.1", 0), "watcher", "secret", got.extend
    )
    client.set_phones({"1001": "sip:1001@127.0.0.1"})
    await client.start()
    try:
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(pbx, 65535), 5)
        subscribe = data.decode()
        assert subscribe.startswith("SUBSCRIBE "), subscribe
        await loop.sock_sendto(pbx, _accept(subscribe), addr)
        await wait_until(lambda: client.stats.datagrams >= 1, 5)
        await asyncio.sleep(0.3)
        # accepted, but the line's state is still unknown: not watched yet
        health = client.health()
        assert health["subscribed"] == "0/1" and health["status"] == "subscribing", health

        await loop.sock_sendto(pbx, _notify(subscribe), addr)
        await wait_until(lambda: client.health()["status"] == "subscribed", 5)
        assert client.health()["subscribed"] == "1/1"
        answer, _ = await asyncio.wait_for(loop.sock_recvfrom(pbx, 65535), 5)
        assert answer.startswith(b"SIP/2.0 200"), answer
    finally:
        await client.close()
        pbx.close()
