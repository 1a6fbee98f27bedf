"""The dialog-state client against the real Asterisk 22 (fixture `pbx`): digest login, NOTIFYs
turned into evidence, refusal of a wrong password, and garbage that changes nothing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bridge.evidence import CallStateChanged, PhoneEvent
from bridge.model import CallState
from phone_drivers.dialog import DialogClient
from tests.rig.asterisk import RunningAsterisk
from tests.rig.phones import running_phones
from tests.rig.procs import wait_until

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(60)]

PHONES = {"1001": "sip:1001@127.0.0.1", "1002": "sip:1002@127.0.0.1"}


@asynccontextmanager
async def watching(
    pbx: RunningAsterisk, got: list[PhoneEvent], *, password: str | None = None
) -> AsyncIterator[DialogClient]:
    client = DialogClient(
        "pbx-dialog",
        pbx.sip,
        ("127.0.0.1", 0),
        pbx.watcher_username,
        password or pbx.watcher_password,
        got.extend,
        domain="127.0.0.1",
    )
    client.set_phones(PHONES)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def until(predicate: Callable[[], Any], within: float = 5.0) -> None:
    await wait_until(predicate, within)


async def test_subscribes_with_digest_and_reports_a_call_on_the_agents_line(
    pbx: RunningAsterisk, tmp_path: Any
) -> None:
    got: list[PhoneEvent] = []
    async with watching(pbx, got) as client:
        await until(lambda: client.health()["status"] == "subscribed")
        health = client.health()
        assert health["subscribed"] == "2/2" and health["kind"] == "dialog", health
        assert pbx.watcher_password not in repr(health)
        phones_ports = {k: pbx.phone_ports[k] for k in ("1001", "2000")}
        async with running_phones(phones_ports, pbx.sip, tmp_path / "phones") as phones:
            since = len(phones.events)
            await phones.call("2000", "1001")
            ringing = await phones.wait_state("1001", "INCOMING", since=since)
            await until(
                lambda: any(
                    e.evidence.observation == CallStateChanged(CallState.RINGING) for e in got
                )
            )
            ring = got[-1]
            assert ring.phone == PHONES["1001"] and ring.remote == "2000", ring
            assert ring.call_id is not None and ring.call_id.startswith("dialog:pbx-dialog:1001:")
            await phones.answer("1001", ringing["ref"])
            await until(
                lambda: got[-1].evidence.observation == CallStateChanged(CallState.CONNECTED)
            )
            await phones.hangup("2000", next(iter(phones.calls_of("2000"))))
            await until(lambda: got[-1].evidence.observation == CallStateChanged(CallState.ENDED))
        assert {e.call_id for e in got} == {ring.call_id}  # one call, one key
        stats = client.stats
        assert stats.documents >= 5 and stats.malformed == 0, stats


async def test_a_wrong_password_fails_visibly_and_is_retried(pbx: RunningAsterisk) -> None:
    got: list[PhoneEvent] = []
    async with watching(pbx, got, password="not-the-password") as client:
        await until(lambda: client.health()["status"] == "failing")
        health = client.health()
        assert health["reason"] == "auth_failed" and health["subscribed"] == "0/2", health
        assert "not-the-password" not in repr(health)
        assert client.stats.failures >= 2


async def test_garbage_and_strangers_are_counted_and_change_nothing(pbx: RunningAsterisk) -> None:
    got: list[PhoneEvent] = []
    async with watching(pbx, got) as client:
        await until(lambda: client.health()["status"] == "subscribed")
        assert client.local is not None
        notify = (
            "NOTIFY sip:watcher@127.0.0.1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
            "From: <sip:1001@127.0.0.1>;tag=a\r\nTo: <sip:watcher@127.0.0.1>;tag=b\r\n"
            "Call-ID: nobody-knows\r\nCSeq: 1 NOTIFY\r\nEvent: dialog\r\nContent-Length: 0\r\n\r\n"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.bind(("127.0.0.1", 0))
            for junk in (b"\x00\xff garbage", b"NOTIFY nonsense\r\n\r\n", notify.encode()):
                s.sendto(junk, client.local)
            # the loop must run to answer: wait for the counters before reading the reply
            await until(lambda: client.stats.malformed >= 2 and client.stats.unknown >= 1)
            answer = s.recv(2000)
        assert answer.startswith(b"SIP/2.0 481"), answer
        await asyncio.sleep(0.2)
        assert client.health()["status"] == "subscribed" and got == []


async def test_closed_and_started_again_it_subscribes_every_line_afresh(
    pbx: RunningAsterisk, tmp_path: Any
) -> None:
    """What a lease lost and taken back does to a dialog source (desktop_api/cluster/lease.py):
    the same client, closed, then started again, watches every line again."""
    got: list[PhoneEvent] = []
    async with watching(pbx, got) as client:
        await until(lambda: client.health()["status"] == "subscribed")
        await client.close()
        assert client.watched == {}
        await client.start()
        await until(lambda: client.health()["status"] == "subscribed")
        assert client.health()["subscribed"] == "2/2"
        phones_ports = {k: pbx.phone_ports[k] for k in ("1001", "2000")}
        async with running_phones(phones_ports, pbx.sip, tmp_path / "phones") as phones:
            since = len(phones.events)
            call = await phones.call("2000", "1001")
            await phones.wait_state("1001", "INCOMING", since=since)
            await until(
                lambda: any(
                    e.evidence.observation == CallStateChanged(CallState.RINGING) for e in got
                )
            )
            await phones.hangup("2000", call["ref"])
