"""The reference desktop page in a real browser: Debian's Chromium driven by Playwright.

One Chromium for the whole run (a session-scoped event loop, so the tests here are marked
`asyncio(loop_scope="session")`), a fresh browser context per test, a real bridge per test.
Screenshots go to `artifacts/screenshots/<test>-<screen>.png`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from desktop_api.testing import ApiClient, RunningBridge, running_bridge, settings_for

try:
    from playwright.async_api import Browser, Locator, Page, async_playwright, expect
except ImportError:  # pragma: no cover - the test extras always have it
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REQUIRED_ENV = ("TRANSFER_BRIDGE_BROWSER_REQUIRED", "TRANSFER_BRIDGE_RIG_REQUIRED")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
ADMIN = "admin-secret"
# Chromium reports every 4xx answer of fetch() on the console; the page handles those itself.
HARMLESS_CONSOLE = re.compile(r"Failed to load resource|net::ERR_")


def _executable() -> str | None:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    return shutil.which("chromium")


def _missing() -> str | None:
    if async_playwright is None:
        return "playwright is not installed (pip install -e .[test])"
    if _executable() is None:
        return "Chromium is missing (bash scripts/browser/install.sh)"
    return None


def _required() -> bool:
    return any(
        os.environ.get(name, "").strip() not in ("", "0", "false", "no") for name in REQUIRED_ENV
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """One headless Debian Chromium for every browser test (never a downloaded browser)."""
    missing = _missing()
    if missing:
        if _required():
            pytest.fail(missing)
        pytest.skip(missing)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=_executable(), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def desk_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    """A bridge of its own for each test, on the session's loop."""
    async with running_bridge(settings_for(tmp_path, ADMIN)) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client on the session's loop (the desktop's back office, the admin)."""
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Desk:
    """A page on a bridge, an account with agent a-7 (phone 1001) and the helpers tests share."""

    page: Page
    bridge: RunningBridge
    admin: ApiClient
    api: ApiClient
    token: str
    name: str
    agent_id: str = "a-7"

    @property
    def url(self) -> str:
        return f"{self.bridge.url}/desktop/"

    async def sign_in(self, agent_id: str | None = None) -> None:
        """Fill in the sign-in form and wait for the agent's availability to show."""
        page = self.page
        await page.goto(self.url)
        await page.get_by_label("Account token").fill(self.token)
        await page.get_by_label("Agent id").fill(agent_id or self.agent_id)
        await page.get_by_role("button", name="Connect").click()
        await expect(page.locator("#availability")).to_contain_text("new requests")
        await expect(page.locator("#connection")).to_have_text("Live: Server-Sent Events")

    def button(self, name: str) -> Locator:
        """A button by its exact accessible name."""
        return self.page.get_by_role("button", name=name, exact=True)

    @property
    def screen(self) -> Locator:
        """The current step screen."""
        return self.page.locator("#screen .step")

    async def on_screen(self, screen: str, title: str) -> None:
        """The step screen `screen` with heading `title` is showing."""
        await expect(self.screen).to_have_attribute("data-screen", screen)
        await expect(self.page.locator("#step-title")).to_have_text(title)

    async def shot(self, screen: str) -> Path:
        """A screenshot of the whole page as `<test>-<screen>.png`."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.name}-{screen}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def session(self, session_id: str = "s-1") -> dict[str, Any]:
        """The session as the API shows it now."""
        r = await self.api.get(f"/v1/sessions/{session_id}")
        assert r.status == 200, r.body
        return r.body  # type: ignore[no-any-return]

    async def open_session(
        self, session_id: str = "s-1", *, call: dict[str, str] | None = None, number: str = ""
    ) -> dict[str, Any]:
        """A customer session for agent a-7 (on the phone with the customer by default)."""
        body: dict[str, Any] = {
            "id": session_id,
            "agent_id": self.agent_id,
            "customer": {"number": number or "+34900000001"},
        }
        body["call"] = {"state": "connected"} if call is None else call
        if not body["call"]:
            del body["call"]
        r = await self.api.post("/v1/sessions", body)
        assert r.status == 201, r.body
        return r.body  # type: ignore[no-any-return]


async def make_desk(
    browser: Browser,
    bridge: RunningBridge,
    http: aiohttp.ClientSession,
    name: str,
    *,
    enabled: bool = True,
    agents: tuple[tuple[str, str], ...] = (("a-7", "1001"),),
) -> tuple[Desk, list[str]]:
    """An account, its token and agents through the API, and a fresh browser context."""
    admin = ApiClient(http, bridge.url, ADMIN)
    r = await admin.post(
        "/v1/accounts", {"id": "acme", "name": "Acme", "transfer_enabled": enabled}
    )
    assert r.status == 201, r.body
    token = (await admin.post("/v1/accounts/acme/tokens")).body["token"]
    api = admin.with_token(token)
    for agent_id, ext in agents:
        r = await api.put(
            f"/v1/agents/{agent_id}",
            {
                "name": "Ana" if agent_id == "a-7" else agent_id,
                "phone": {"sip_uri": f"sip:{ext}@pbx.example"},
            },
        )
        assert r.status == 201, r.body
    context = await browser.new_context(
        viewport={"width": 1100, "height": 900}, timezone_id="UTC", locale="en-GB"
    )
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and not HARMLESS_CONSOLE.search(msg.text)
            else None
        ),
    )
    return Desk(page, bridge, admin, api, token, name), problems


def file_stem(request: pytest.FixtureRequest) -> str:
    """The test's name, safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).removeprefix("test_").strip("_")


@pytest_asyncio.fixture(loop_scope="session")
async def desk(
    chromium: Browser,
    desk_bridge: RunningBridge,
    client: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Desk]:
    """Account `acme` with transfer switched on, agent a-7 and a fresh page; no script errors."""
    d, problems = await make_desk(chromium, desk_bridge, client, file_stem(request))
    try:
        yield d
    finally:
        await d.page.context.close()
    assert not problems, problems
