"""The Asterisk rig itself: a real Asterisk 22, real pjsua2 phones, its HEP and its AMI.

Uses the session's one Asterisk (fixture ``pbx`` from ``tests/pbx.py``); each test binds a HEP
collector on the port Asterisk sends to and logs in to AMI on its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.ami import AmiEvent, AmiParser, AmiResponse
from bridge.hep.decode import decode_hep
from bridge.sip import parse_message
from tests.rig.asterisk import RunningAsterisk
from tests.rig.collector import HepCollector, running_collector
from tests.rig.phones import Phones, PhonesFailed, running_phones

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(60)]

Fields = dict[str, str]


class Ami:
    """A logged-in AMI connection that parses what arrives into events."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.events: list[Fields] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        parser = AmiParser()
        while data := await self.reader.read(65536):
            parser.receive_data(data)
            for item in parser.events():
                if isinstance(item, AmiEvent | AmiResponse):
                    self.events.append(dict(reversed(item.fields)))  # a repeated key: the first
                    self.changed.set()

    async def wait_for(self, want: Fields, time_limit: float = 10.0) -> Fields:
        """The first message whose fields include all of ``want`` (values: prefixes)."""
        async with asyncio.timeout(time_limit):
            while True:
                for e in self.events:
                    if all(e.get(k, "").startswith(v) for k, v in want.items()):
                        return e
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def ami_session(pbx: RunningAsterisk) -> AsyncIterator[Ami]:
    reader, writer = await asyncio.open_connection(*pbx.ami)
    ami = Ami(reader, writer)
    try:
        writer.write(
            f"Action: Login\r\nActionID: t1\r\nUsername: {pbx.ami_username}\r\n"
            f"Secret: {pbx.ami_secret}\r\n\r\n".encode()
        )
        await writer.drain()
        login = await ami.wait_for({"ActionID": "t1"}, 5)
        assert login.get("Response") == "Success", login
        yield ami
    finally:
        await ami.close()


def sip_messages(hep: HepCollector) -> list[tuple[int, int, str]]:
    """(source port, destination port, SIP text) of each SIP packet received (RTCP skipped)."""
    out = []
    for raw in hep.raw:
        packet = decode_hep(raw)
        try:
            parse_message(packet.payload)
        except ValueError:
            continue
        out.append((packet.src_port, packet.dst_port, packet.payload.decode(errors="replace")))
    return out


async def connected_call(phones: Phones, customer: str, agent: str) -> tuple[str, str]:
    since = len(phones.events)
    out = await phones.call(customer, agent)
    ring = await phones.wait_state(agent, "INCOMING", since=since)
    await phones.answer(agent, ring["ref"])
    await phones.wait_state(customer, "CONFIRMED", ref=out["ref"])
    await phones.wait_state(agent, "CONFIRMED", ref=ring["ref"])
    return str(out["ref"]), str(ring["ref"])


async def test_blind_transfer_connects_the_customer_to_the_target(
    pbx: RunningAsterisk, tmp_path: Path
) -> None:
    async with (
        running_collector(port=pbx.hep_port) as hep,
        ami_session(pbx) as ami,
        running_phones(pbx.phone_ports, pbx.sip, tmp_path) as phones,
    ):
        await phones.behaviour("1002", "auto", delay_ms=200)
        customer, agent = await connected_call(phones, "2000", "1001")
        await asyncio.sleep(1.0)  # a human waits before transferring (see test_quick_refer)
        await phones.blind_transfer("1001", agent, "1002")

        final = await phones.wait_xfer_final("1001", agent)
        assert final["code"] == 200, final
        target = await phones.wait_state("1002", "CONFIRMED")
        assert "sip:2000@" in target["remote"], target  # 1002 is talking to the customer
        await phones.wait_state("1001", "DISCONNECTED", ref=agent)
        assert phones.state_of(customer) == "CONFIRMED"  # the customer never lost the call

        transfer = await ami.wait_for({"Event": "BlindTransfer"})
        assert transfer["Result"] == "Success", transfer
        assert transfer["TransfererChannel"].startswith("PJSIP/1001-")
        assert transfer["TransfereeChannel"].startswith("PJSIP/2000-")
        assert transfer["Extension"] == "1002"
        answered = await ami.wait_for(
            {"Event": "DialEnd", "DestChannel": "PJSIP/1002-", "DialStatus": "ANSWER"}
        )
        assert answered["Channel"] == transfer["TransfereeChannel"]
        # The agent's leg carries its SIP Call-ID (dialplan SIPCALLID, manager.conf channelvars)
        agent_call_id = phones.calls_of("1001")[agent]["call_id"]
        await ami.wait_for({"Event": "VarSet", "Variable": "SIPCALLID", "Value": agent_call_id})

        await hep.settle(quiet=0.3)
        wire = sip_messages(hep)
        agent_port = pbx.phone_ports["1001"]
        refers = [t for s, d, t in wire if s == agent_port and t.startswith("REFER ")]
        assert len(refers) == 1, wire
        refer_to = parse_message(refers[0].encode()).header("refer-to") or ""
        assert "sip:1002@127.0.0.1:5070" in refer_to, refers[0]
        notifies = [t for s, d, t in wire if d == agent_port and t.startswith("NOTIFY ")]
        assert any(t.rstrip().endswith("SIP/2.0 200 OK") for t in notifies), notifies
        await phones.hangup("2000", customer)
        await phones.wait_state("1002", "DISCONNECTED", ref=target["ref"])


async def test_quick_refer_is_refused_and_the_call_stays_up(
    pbx: RunningAsterisk, tmp_path: Path
) -> None:
    """A REFER sent in the same instant as the 200 OK races Asterisk's bridge set-up."""
    async with (
        ami_session(pbx) as ami,
        running_phones(pbx.phone_ports, pbx.sip, tmp_path) as phones,
    ):
        await phones.behaviour("1002", "auto", delay_ms=0)
        since = len(phones.events)
        out = await phones.call("2000", "1001")
        ring = await phones.wait_state("1001", "INCOMING", since=since)
        await asyncio.sleep(0.3)  # ringing: the race is lost the same way in each run then
        await phones.answer_then_transfer("1001", ring["ref"], "1002")

        final = await phones.wait_xfer_final("1001", ring["ref"])
        assert final["code"] == 400, final
        refused = await ami.wait_for({"Event": "BlindTransfer"})
        assert refused["Result"] == "Invalid", refused
        await asyncio.sleep(0.5)
        assert phones.state_of(out["ref"]) == "CONFIRMED"
        assert phones.state_of(ring["ref"]) == "CONFIRMED"
        assert phones.calls_of("1002") == {}  # the target was never called
        await phones.hangup("2000", out["ref"])
        await phones.wait_state("1001", "DISCONNECTED", ref=ring["ref"])


async def test_busy_target_fails_the_transfer(pbx: RunningAsterisk, tmp_path: Path) -> None:
    async with running_phones(pbx.phone_ports, pbx.sip, tmp_path) as phones:
        await phones.behaviour("1002", "busy")
        customer, agent = await connected_call(phones, "2000", "1001")
        await asyncio.sleep(1.0)
        await phones.blind_transfer("1001", agent, "1002")
        final = await phones.wait_xfer_final("1001", agent)
        assert final["code"] >= 300, final  # Asterisk reports 503 for the target's 486
        # Asterisk's dialplan hangs the customer up; the agent's phone keeps its leg
        await phones.wait_state("2000", "DISCONNECTED", ref=customer)
        assert phones.state_of(agent) == "CONFIRMED"
        await phones.hangup("1001", agent)


def test_cli_lists_the_phones(pbx: RunningAsterisk) -> None:
    out = pbx.cli("pjsip show endpoints")
    for ext in ("1001", "1002", "1003", "2000", "2001"):
        assert f"Endpoint:  {ext}" in out, out


async def test_a_dead_phone_process_is_reported_with_its_stderr(tmp_path: Path) -> None:
    from tests.rig.procs import free_udp_ports

    (port,) = free_udp_ports(1)
    async with running_phones({"1001": port}, workdir=tmp_path) as phones:
        os.kill(phones.procs["1001"].proc.pid, signal.SIGKILL)
        with pytest.raises(PhonesFailed, match="phone 1001 process exited"):
            await phones.wait_state("1001", "INCOMING", time_limit=5)
        with pytest.raises(PhonesFailed, match="phone 1001 process exited"):
            await phones.call("1001", "2000")
