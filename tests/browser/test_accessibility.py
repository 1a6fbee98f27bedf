"""The page for keyboard users and at high zoom: the whole manual flow with Tab and Enter only,
a visible focus ring, and no sideways scrolling at 200% and 400% zoom.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import Desk

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

FOCUSED = """() => {
  const e = document.activeElement;
  const s = getComputedStyle(e);
  return {tag: e.tagName, id: e.id, text: e.textContent.trim(),
          outline: s.outlineStyle, width: parseFloat(s.outlineWidth)};
}"""


async def focused(page: Page) -> dict[str, object]:
    return await page.evaluate(FOCUSED)  # type: ignore[no-any-return]


async def tab_to(page: Page, *, text: str | None = None, id: str | None = None) -> int:
    """Press Tab until the button with `text` (or the element `id`) has focus; how many."""
    for presses in range(1, 16):
        await page.keyboard.press("Tab")
        now = await focused(page)
        if (text is not None and now["tag"] == "BUTTON" and now["text"] == text) or (
            id is not None and now["id"] == id
        ):
            return presses
    raise AssertionError(f"Tab never reached {text or id!r}; focus is on {now}")


async def test_whole_flow_with_the_keyboard_only(desk: Desk) -> None:
    await desk.open_session()
    page = desk.page
    await page.goto(desk.url)
    await tab_to(page, id="token")
    await page.keyboard.type(desk.token)
    await tab_to(page, id="agent-id")
    await page.keyboard.type("a-7")
    await page.keyboard.press("Enter")
    await expect(page.locator("#availability")).to_have_text("Can take new requests")

    flow = [
        ("Transfer Call", "choice"),
        ("Internal transfer", "dial"),
        ("Next", "question"),
        ("Yes", "confirmation"),
        ("OK", "overview"),
    ]
    for label, screen in flow:
        presses = await tab_to(page, text=label)
        ring = await focused(page)
        assert ring["outline"] == "solid" and float(ring["width"]) >= 2, ring  # type: ignore[arg-type]
        if label == "Internal transfer":
            await desk.shot("keyboard-focus")
        await page.keyboard.press("Enter")
        await expect(desk.screen).to_have_attribute("data-screen", screen)
        if label != "Transfer Call":
            # A new screen takes focus to its heading, so its first button is one Tab away.
            assert presses == 1, (label, presses)
        await expect(page.locator("#step-title")).to_be_focused()

    await expect(page.locator("#overview-status")).to_have_text("Call transferred")
    await tab_to(page, id="result")
    await page.keyboard.type("sent to support")
    await page.keyboard.press("Enter")
    await expect(desk.screen).to_have_attribute("data-screen", "ended")
    await expect(page.locator("#availability")).to_have_text("Can take new requests")
    assert (await desk.session())["result"] == "sent to support"


OVERFLOW = """() => {
  const doc = document.documentElement;
  const wide = [...document.querySelectorAll('main *')]
    .filter(e => e.getClientRects().length && e.getBoundingClientRect().right > doc.clientWidth + 1)
    .map(e => e.tagName + (e.id ? '#' + e.id : '') + ' ' + e.textContent.slice(0, 30));
  return {scroll: doc.scrollWidth, client: doc.clientWidth, wide};
}"""


@pytest.mark.parametrize("zoom", [200, 400])
async def test_readable_when_zoomed(desk: Desk, zoom: int) -> None:
    # Browser zoom on a 1280-pixel-wide screen leaves 1280/zoom CSS pixels of width.
    page = desk.page
    await page.set_viewport_size({"width": 1280 * 100 // zoom, "height": 700})
    await desk.api.put(
        "/v1/agents/a-7",
        {"name": "Anastasia Konstantinopoulou", "phone": {"sip_uri": "sip:1001@pbx.example"}},
    )
    await desk.api.post(
        "/v1/sessions",
        {
            "id": "s-1",
            "agent_id": "a-7",
            "customer": {"number": "+34900000001", "name": "Bartholomew Featherstonehaugh-Smythe"},
            "call": {"state": "connected"},
        },
    )
    await desk.sign_in()
    for step, screen in (("open", "choice"), ("internal", "dial"), ("next", "question")):
        assert (await desk.api.step("s-1", step)).status == 200
        await expect(desk.screen).to_have_attribute("data-screen", screen)
        layout = await page.evaluate(OVERFLOW)
        assert layout["scroll"] <= layout["client"], layout
        assert not layout["wide"], layout
    width = page.viewport_size["width"] if page.viewport_size else 0
    for name in ("Yes", "No", "Dismiss"):
        box = await desk.button(name).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (name, box)
    await desk.shot(f"question-{zoom}")
