"""The seed's screens in a real browser, clicked as an agent would, checked on the page and in
the API: the full manual flow, dismiss, No, the feature switched off, the agent blocked until
the transferred session is ended with a result, and the long-poll fallback.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from desktop_api.testing import ApiClient, running_bridge, settings_for
from tests.browser.conftest import ADMIN, Desk, file_stem, make_desk

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_full_manual_flow(desk: Desk) -> None:
    await desk.open_session()
    await desk.sign_in()
    page = desk.page
    await expect(page.get_by_role("button", name="s-1")).to_have_attribute("aria-pressed", "true")
    await desk.on_screen("overview", "Overview")
    await expect(page.locator("#overview-status")).to_have_text("Active")
    await expect(page.locator("#availability")).to_have_text("Can take new requests")
    await expect(desk.button("Transfer Call")).to_be_enabled()
    await desk.shot("overview")

    await desk.button("Transfer Call").click()
    await desk.on_screen("choice", "Transfer Call")
    await expect(desk.button("Internal transfer")).to_be_enabled()
    await expect(desk.button("Dismiss")).to_be_enabled()
    await desk.shot("choice")

    await desk.button("Internal transfer").click()
    await desk.on_screen("dial", "Dial on your phone")
    await expect(desk.screen).to_contain_text("Enter the phone number on your own phone")
    await desk.shot("dial")

    await desk.button("Next").click()
    await desk.on_screen("question", "Is the other agent talking with the customer?")
    await expect(desk.button("Yes")).to_be_enabled()
    await expect(desk.button("No")).to_be_enabled()
    await desk.shot("question")

    await desk.button("Yes").click()
    await desk.on_screen("confirmation", "Customer transferred")
    await expect(desk.screen).to_contain_text(
        "The customer has been transferred and the phone call has ended."
    )
    await expect(page.locator('[data-fact="confirmed by"]')).to_have_text("you")
    await desk.shot("confirmation")

    await desk.button("OK").click()
    await desk.on_screen("overview", "Overview")
    await expect(page.locator("#overview-status")).to_have_text("Call transferred")
    await expect(desk.button("Transfer Call")).to_be_disabled()
    await expect(page.locator("#unavailable-reason")).to_contain_text(
        "Transfer Call is unavailable"
    )
    await expect(page.locator("#availability")).to_have_text("Cannot take new requests")
    await desk.shot("transferred")

    s = await desk.session()
    assert (s["status"], s["transfer"]["state"], s["transfer"]["acknowledged"]) == (
        "call_transferred",
        "transferred",
        True,
    )
    assert s["transfer"]["confirmed_by"] == "agent"

    # The sign-in is remembered for the tab: a reload comes back to the same screen.
    await page.reload()
    await expect(page.locator("#overview-status")).to_have_text("Call transferred")

    await page.get_by_label("Result").fill("sent to support")
    await desk.button("End session").click()
    await desk.on_screen("ended", "Session ended")
    await expect(desk.screen).to_contain_text("Result: sent to support")
    await expect(page.locator("#availability")).to_have_text("Can take new requests")
    await expect(page.get_by_label("Result")).to_be_hidden()
    await desk.shot("ended")
    s = await desk.session()
    assert (s["status"], s["result"]) == ("ended", "sent to support")


async def test_sign_in_refusals_are_shown(desk: Desk) -> None:
    page = desk.page
    await page.goto(desk.url)
    for token, agent, message in (
        ("not-a-token", "a-7", "The bridge did not accept this token."),
        (desk.token, "a-99", "There is no agent a-99 in this account."),
    ):
        await page.get_by_label("Account token").fill(token)
        await page.get_by_label("Agent id").fill(agent)
        await desk.button("Connect").click()
        await expect(page.get_by_role("alert")).to_have_text(message)
        await expect(page.get_by_label("Account token")).to_be_focused()
        assert await page.evaluate("sessionStorage.length") == 0
    await desk.sign_in()
    await desk.button("Sign out").click()
    await expect(page.get_by_role("button", name="Connect")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_dismiss(desk: Desk) -> None:
    await desk.open_session()
    await desk.sign_in()
    await desk.button("Transfer Call").click()
    await desk.on_screen("choice", "Transfer Call")
    await desk.button("Dismiss").click()
    await desk.on_screen("overview", "Overview")
    await expect(desk.button("Transfer Call")).to_be_enabled()  # the one transfer is not used
    await expect(desk.page.locator("#overview-status")).to_have_text("Active")
    await desk.shot("dismissed")
    s = await desk.session()
    assert (s["transfer"]["state"], s["actions"]) == ("none", ["transfer.open", "end"])


async def test_no(desk: Desk) -> None:
    await desk.open_session()
    await desk.sign_in()
    for button, screen in (
        ("Transfer Call", "choice"),
        ("Internal transfer", "dial"),
        ("Next", "question"),
    ):
        await desk.button(button).click()
        await expect(desk.screen).to_have_attribute("data-screen", screen)
    await desk.button("No").click()
    await desk.on_screen("overview", "Overview")
    await expect(desk.page.locator("#overview-status")).to_have_text("Active")
    await expect(desk.button("Transfer Call")).to_be_enabled()  # a denied attempt is not the one
    await expect(desk.page.locator("#availability")).to_have_text("Can take new requests")
    await desk.shot("denied")
    s = await desk.session()
    assert (s["status"], s["transfer"]["state"]) == ("active", "none")
    audit = (await desk.api.get("/v1/sessions/s-1/audit")).body["entries"]
    assert [e["event"] for e in audit if e["kind"] == "desktop"][-1] == "transfer.deny"


async def test_feature_switched_off_for_the_account(desk: Desk) -> None:
    r = await desk.admin.patch("/v1/accounts/acme", {"transfer_enabled": False})
    assert r.status == 200, r.body
    await desk.open_session()
    await desk.sign_in()
    page = desk.page
    await desk.on_screen("overview", "Overview")
    await expect(desk.button("Transfer Call")).to_be_disabled()
    reason = page.locator("#unavailable-reason")
    await expect(reason).to_contain_text("Transfer Call is unavailable")
    await expect(reason).to_contain_text("transfer")  # the bridge's own words for why
    await expect(desk.button("Transfer Call")).to_have_attribute(
        "aria-describedby", "unavailable-reason"
    )
    await desk.shot("disabled")
    s = await desk.session()
    assert "transfer.open" not in s["actions"]
    assert s["transfer"]["unavailable"]["code"] == "transfer_disabled"
    assert await reason.text_content() == (
        f"Transfer Call is unavailable: {s['transfer']['unavailable']['message']}"
    )

    # Switched on while the page is open: the button comes alive without a reload.
    r = await desk.admin.patch("/v1/accounts/acme", {"transfer_enabled": True})
    assert r.status == 200, r.body
    await expect(desk.button("Transfer Call")).to_be_enabled()
    await expect(reason).to_have_count(0)


async def test_agent_blocked_until_the_session_ends_with_a_result(desk: Desk) -> None:
    await desk.open_session()
    await desk.sign_in()
    page = desk.page
    # Another desktop of the same agent (or the API) moves the session; this page follows live.
    for step in ("open", "internal", "next", "confirm", "acknowledge"):
        assert (await desk.api.step("s-1", step)).status == 200
    await expect(page.locator("#overview-status")).to_have_text("Call transferred")
    availability = page.locator("#availability")
    await expect(availability).to_have_text("Cannot take new requests")
    await expect(page.locator("#blocked-reason")).to_have_text(
        "A transferred session must be ended with a result before new requests (session s-1)."
    )
    await desk.shot("blocked")

    r = await desk.api.post(
        "/v1/sessions", {"id": "s-2", "agent_id": "a-7", "customer": {"number": "+34900000002"}}
    )
    assert (r.status, r.body["error"]["code"]) == (409, "agent_blocked")

    # The result is required: an empty one is not sent, the agent stays blocked.
    await desk.button("End session").click()
    await expect(page.get_by_label("Result")).to_be_focused()
    assert (await desk.session())["status"] == "call_transferred"
    await expect(availability).to_have_text("Cannot take new requests")

    await page.get_by_label("Result").fill("sent to support")
    await page.get_by_label("Result").press("Enter")
    await desk.on_screen("ended", "Session ended")
    await expect(availability).to_have_text("Can take new requests")
    await expect(page.locator("#blocked-reason")).to_be_hidden()

    # Unblocked: the next customer request opens, shows up on the page and is selected.
    await desk.open_session("s-2", number="+34900000002")
    await expect(page.get_by_role("button", name="s-2")).to_have_attribute("aria-pressed", "true")
    await desk.on_screen("overview", "Overview")
    await expect(desk.button("Transfer Call")).to_be_enabled()
    await expect(page.get_by_role("button", name="s-1")).to_have_count(0)


async def test_long_poll_when_the_event_stream_is_blocked(desk: Desk) -> None:
    # A proxy that buffers or blocks text/event-stream: the page must still follow the session.
    await desk.page.route("**/v1/events*", lambda route: route.abort())
    await desk.open_session()
    page = desk.page
    await page.goto(desk.url)
    await page.get_by_label("Account token").fill(desk.token)
    await page.get_by_label("Agent id").fill("a-7")
    await page.get_by_label("Agent id").press("Enter")
    await expect(page.locator("#connection")).to_have_text("Live: long-poll")
    await desk.on_screen("overview", "Overview")
    assert (await desk.api.step("s-1", "open")).status == 200
    await desk.on_screen("choice", "Transfer Call")
    assert (await desk.api.step("s-1", "internal")).status == 200
    await desk.on_screen("dial", "Dial on your phone")
    await desk.button("Next").click()
    await desk.on_screen("question", "Is the other agent talking with the customer?")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_follows_the_bridge_through_a_restart(
    chromium: Browser, tmp_path: Path, client: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    settings = dataclasses.replace(settings_for(tmp_path, ADMIN), port=free_tcp_port())
    async with running_bridge(settings) as first:
        desk, problems = await make_desk(chromium, first, client, file_stem(request))
        await desk.open_session()
        await desk.sign_in()
    page = desk.page
    try:
        await expect(page.locator("#connection")).to_have_text("Reconnecting…")
        async with running_bridge(settings) as _, aiohttp.ClientSession() as http:
            api = ApiClient(http, first.url, desk.token)
            # A change made before the page is back: it resumes from its cursor and sees it.
            assert (await api.step("s-1", "open")).status == 200
            await expect(page.locator("#connection")).to_have_text("Live: Server-Sent Events")
            await desk.on_screen("choice", "Transfer Call")
            assert (await api.step("s-1", "internal")).status == 200
            await desk.on_screen("dial", "Dial on your phone")
    finally:
        await page.context.close()
    assert not problems, problems
