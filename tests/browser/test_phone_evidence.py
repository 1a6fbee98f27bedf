"""Phone evidence reaching the open page through the real HEP path: SIPp phones transfer a call
through a real Kamailio, whose siptrace sends HEPv3 to the bridge's listener; the page shows
each piece as it lands, skips the questions the phone has answered, and shows a conflict.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from desktop_api.testing import running_bridge
from tests.browser.conftest import ADMIN, Desk, file_stem, make_desk
from tests.rig.bridge_collector import HEP_KEY, BridgeAsCollector, settings_with_hep
from tests.rig.cases import AGENT, CUSTOMER, TARGET
from tests.rig.rig import CaseRun, missing_binaries, rig_required, run_case

pytestmark = [
    pytest.mark.browser,
    pytest.mark.kamailio,
    pytest.mark.asyncio(loop_scope="session"),
]

if missing_binaries() and not rig_required():  # pragma: no cover - developer machines only
    pytest.skip(f"rig not installed: {missing_binaries()}", allow_module_level=True)

PHONE = 20_000  # ms: a whole rig case, start to finish, fits in this


@pytest_asyncio.fixture(loop_scope="session")
async def desk(
    chromium: Browser,
    tmp_path: Path,
    client: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Desk]:
    """A bridge listening for HEP, agents on phones 1001 and 1002, and a fresh page."""
    settings = settings_with_hep(tmp_path, ADMIN)
    async with running_bridge(settings) as bridge:
        d, problems = await make_desk(
            chromium,
            bridge,
            client,
            file_stem(request),
            agents=(("a-7", AGENT), ("a-8", TARGET)),
        )
        try:
            yield d
        finally:
            await d.page.context.close()
    assert not problems, problems


@contextlib.asynccontextmanager
async def playing(desk: Desk, case: str, workdir: Path) -> AsyncIterator[asyncio.Task[CaseRun]]:
    """Play a rig case in the background while the test drives the page; always finish it."""
    collector = BridgeAsCollector(desk.bridge)
    task = asyncio.ensure_future(
        run_case(case, workdir / case, auth_key=HEP_KEY, collector=collector)  # type: ignore[arg-type]
    )
    try:
        yield task
        await task
        await desk.bridge.evidence.drain()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def hhmmss(iso: str) -> str:
    """The page's clock for a timestamp (the browser context runs in UTC)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%H:%M:%S")


async def test_phone_proves_an_attended_transfer_while_the_page_is_open(
    desk: Desk, tmp_path: Path
) -> None:
    # The customer's request reaches the desktop before the call: no call yet, so no transfer.
    await desk.open_session(call={}, number=CUSTOMER)
    await desk.sign_in()
    page = desk.page
    await expect(desk.button("Transfer Call")).to_be_disabled()
    await expect(page.locator("#unavailable-reason")).to_contain_text(
        "Transfer Call is unavailable"
    )

    async with playing(desk, "attended_success", tmp_path):
        # The phone rings and is answered: the page learns it from the phone, not the desktop.
        await expect(desk.button("Transfer Call")).to_be_enabled(timeout=PHONE)
        await desk.button("Transfer Call").click()
        await desk.button("Internal transfer").click()
        await desk.on_screen("dial", "Dial on your phone")
        # The agent dials on the phone and never clicks Next or Yes: the phone proves it.
        await desk.on_screen("confirmation", "Customer transferred")
        await expect(desk.screen).to_contain_text(
            "Your phone confirmed the transfer, so there is nothing more to answer."
        )
        await expect(page.locator('[data-fact="confirmed by"]')).to_have_text("your phone")
        for skipped in ("Next", "Yes", "No"):
            await expect(desk.button(skipped)).to_have_count(0)

    await expect(page.locator("#evidence-list")).to_have_attribute("aria-live", "polite")
    items = page.locator("#evidence-list li")
    expected = [
        "Call ringing",
        "Call connected",
        "Call on hold",
        f"Consult call dialling {TARGET}",
        f"Consult call ringing {TARGET}",
        f"Consult call answered {TARGET}",
        f"Transfer requested (attended) to {TARGET}",
        "Transfer accepted",
        "Transfer trying (SIP/2.0 100 Trying)",
        "Transfer succeeded: the customer's call was handed to the other agent",
        "Call ended",
    ]
    await expect(items).to_have_count(len(expected), timeout=PHONE)
    shown = [re.sub(r"^\d\d:\d\d:\d\d ", "", t) for t in await items.all_inner_texts()]
    assert shown == expected
    # Each with the time the source saw it; evidence that changed nothing (the NOTIFY 200 after
    # the replaced dialog proved it) stays in the audit trail only.
    audit = (await desk.api.get("/v1/sessions/s-1/audit")).body["entries"]
    seen_at = [
        e["detail"]["observed_at"]
        for e in audit
        if e["kind"] == "phone" and "ignored" not in e["detail"]
    ]
    times = await page.locator("#evidence-list time").evaluate_all(
        "els => els.map(e => [e.dateTime, e.textContent])"
    )
    assert times == [[at, hhmmss(at)] for at in seen_at]
    await expect(page.locator('[data-fact="call"]')).to_have_text("Ended")
    await desk.shot("phone-confirmed")

    await desk.button("OK").click()
    await expect(page.locator("#overview-status")).to_have_text("Call transferred")
    await expect(page.locator("#availability")).to_have_text("Cannot take new requests")
    s = await desk.session()
    assert (s["transfer"]["confirmed_by"], s["transfer"]["kind"]) == ("phone", "attended")


async def test_conflict_when_the_phone_reports_a_failure_after_yes(
    desk: Desk, tmp_path: Path
) -> None:
    # The desktop knows the agent is on the call; the agent answers Yes before the phone says
    # anything. Then the target turns out to be busy.
    await desk.open_session(number=CUSTOMER)
    await desk.sign_in()
    page = desk.page
    for button in ("Transfer Call", "Internal transfer", "Next", "Yes"):
        await desk.button(button).click()
    await desk.on_screen("confirmation", "Customer transferred")
    await expect(page.locator("#availability")).to_have_text("Cannot take new requests")

    async with playing(desk, "blind_busy", tmp_path):
        conflict = page.locator("#notices .conflict")
        await expect(conflict).to_have_text(
            "Conflict: you answered Yes, but the phone reports that the transfer failed "
            "(SIP/2.0 486 Busy Here). The phone wins: the customer was not transferred.",
            timeout=PHONE,
        )
        await expect(conflict).to_have_attribute("role", "alert")
        await desk.on_screen("overview", "Overview")
        await expect(page.locator("#overview-status")).to_have_text("Active")
        await expect(page.locator("#availability")).to_have_text("Can take new requests")
        await expect(page.locator("#evidence-list")).to_contain_text(
            "Transfer failed: the other agent's phone did not take the call, busy "
            "(SIP/2.0 486 Busy Here)"
        )
    await desk.shot("conflict")
    s = await desk.session()
    assert s["transfer"]["conflict"]["desktop"] == "confirm"
    assert (s["status"], s["transfer"]["state"]) == ("active", "failed")
