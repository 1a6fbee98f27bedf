"""The page tells the agent how strong the phone's word is, from real Asterisk 22 captures sent
over UDP to the bridge's HEP listener while the page is open.

- Blind transfer to an extension that plays early media and then rings the other agent: the
  PBX says "200 OK" four seconds before anyone answers. The page keeps the question, says the
  PBX's word is not proof, and only shows "Customer transferred" once the other agent answers.
- Blind transfer to an announcement that ends in busy: nobody ever answers. While it plays the
  page keeps the question; when the PBX drops the customer (`Reason: Q.850;cause=17`) it says
  the transfer failed because the other side was busy. It never says transferred.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from bridge.hep.decode import decode_hep
from bridge.sip import parse_message
from desktop_api.keys import SOURCES
from desktop_api.testing import running_bridge
from tests.browser.conftest import ADMIN, Desk, file_stem, make_desk
from tests.rig.bridge_collector import settings_with_hep
from tests.rig.hepfile import read_hep_file

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

HEP = Path(__file__).resolve().parents[1] / "fixtures" / "hep"
WAIT = 10_000  # ms


@pytest_asyncio.fixture(loop_scope="session")
async def desk(
    chromium: Browser,
    tmp_path: Path,
    client: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Desk]:
    """A bridge listening for HEP (the recordings' key), agents on 1001 and 1002, a page."""
    async with running_bridge(settings_with_hep(tmp_path, ADMIN)) as bridge:
        d, problems = await make_desk(
            chromium, bridge, client, file_stem(request), agents=(("a-7", "1001"), ("a-8", "1002"))
        )
        try:
            yield d
        finally:
            await d.page.context.close()
    assert not problems, problems


class Capture:
    """A recorded capture sent to the bridge in parts, as a capture point would send it."""

    def __init__(self, desk: Desk, case: str) -> None:
        self.packets = read_hep_file(HEP / f"asterisk-{case}.hep")
        self.sent = 0
        self.port = desk.bridge.app[SOURCES].hep[0].listener.address[1]
        self.desk = desk

    def index(self, predicate: str) -> int:
        """The first packet at or after what was sent whose SIP text matches ``predicate``."""
        for n in range(self.sent, len(self.packets)):
            payload = decode_hep(self.packets[n]).payload
            if predicate == "refer" and payload.startswith(b"REFER "):
                return n
            if predicate == "customer dropped" and payload.startswith(b"BYE sip:2000@"):
                return n
            if predicate == "target answers" and payload.startswith(b"SIP/2.0 200 OK"):
                msg = parse_message(payload)
                if msg.cseq.method == "INVITE" and b"To: <sip:1002@" in payload:
                    return n
        raise AssertionError(f"no {predicate!r} in the capture")

    async def send_until(self, end: int | None = None) -> None:
        """Send packets up to (not including) ``end``, then let the bridge apply them."""
        end = len(self.packets) if end is None else end
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for packet in self.packets[self.sent : end]:
                sock.sendto(packet, ("127.0.0.1", self.port))
        self.sent = end
        await self.desk.bridge.evidence.drain()


async def to_the_question(desk: Desk, capture: Capture) -> None:
    """The customer's call is up; the agent starts the transfer on the desktop, then the phone."""
    await desk.open_session(call={}, number="2000")
    await desk.sign_in()
    await capture.send_until(capture.index("refer"))
    await expect(desk.button("Transfer Call")).to_be_enabled(timeout=WAIT)
    for step in ("Transfer Call", "Internal transfer", "Next"):
        await desk.button(step).click()
    await desk.on_screen("question", "Is the other agent talking with the customer?")


async def test_early_media_then_the_other_agent_answers(desk: Desk) -> None:
    capture = Capture(desk, "blind_early_media_answer")
    page = desk.page
    await to_the_question(desk, capture)

    # The REFER, the PBX's NOTIFY 200 (early media), the target's phone ringing.
    await capture.send_until(capture.index("target answers"))
    proof = page.locator('[data-fact="phone\'s proof"]')
    await expect(proof).to_have_text("Reported by the PBX only (nobody at the target answered yet)")
    await desk.on_screen("question", "Is the other agent talking with the customer?")
    await expect(desk.screen).to_contain_text("answer Yes only if you heard them take the call")
    await expect(page.locator("#evidence-list")).to_contain_text("PBX reports success")
    assert (await desk.session())["transfer"]["state"] == "confirming"
    await desk.shot("pbx-reported")

    # The other agent answers: now the phone side proves it.
    await capture.send_until()
    await desk.on_screen("confirmation", "Customer transferred")
    await expect(proof).to_have_text("The other agent answered with the customer")
    await expect(desk.screen).to_contain_text("Your phone confirmed the transfer")
    body = await desk.session()
    assert body["transfer"]["phone"]["proof"] == "target_answered"
    assert body["transfer"]["phone"]["handoff_at"] > body["transfer"]["phone"]["pbx_reported_at"]
    await desk.shot("target-answered")


async def test_an_announcement_never_becomes_transferred(desk: Desk) -> None:
    capture = Capture(desk, "blind_early_media_busy")
    page = desk.page
    await to_the_question(desk, capture)
    # The announcement plays: early media, the PBX's NOTIFY 200; nobody answers.
    await capture.send_until(capture.index("customer dropped"))
    proof = page.locator('[data-fact="phone\'s proof"]')
    await expect(proof).to_have_text("Reported by the PBX only (nobody at the target answered yet)")
    await desk.on_screen("question", "Is the other agent talking with the customer?")
    await desk.shot("announcement")
    # The PBX drops the customer with "user busy": the transfer failed, and the page says why.
    await capture.send_until()
    await expect(page.locator("#notices")).to_contain_text(
        "The phone reports that the transfer failed (the other agent's phone was busy"
    )
    body = await desk.session()
    assert body["transfer"]["state"] == "failed"
    assert body["transfer"]["phone"]["failure"] == "target_busy"
    audit = (await desk.api.get("/v1/sessions/s-1/audit")).body["entries"]
    assert not [e for e in audit if e["event"] == "transfer_succeeded"]
    await desk.shot("announcement-failed")
