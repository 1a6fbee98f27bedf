"""`/desktop/` serves the page's own files without a token, and nothing else."""

from __future__ import annotations

import aiohttp

from desktop_api.testing import RunningBridge

PAGE_FILES = {
    "": "text/html",
    "app.js": "text/javascript",
    "screens.js": "text/javascript",
    "style.css": "text/css",
}


async def test_page_files_need_no_token(bridge: RunningBridge, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{bridge.url}/desktop", allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == (301, "/desktop/")
    for name, content_type in PAGE_FILES.items():
        async with http.get(f"{bridge.url}/desktop/{name}") as resp:
            assert resp.status == 200, name
            assert resp.content_type == content_type
            assert resp.charset == "utf-8"
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            body = await resp.text()
            assert "http://" not in body and "https://" not in body, name  # works offline
    async with http.get(f"{bridge.url}/desktop/") as resp:
        assert '<script type="module" src="app.js">' in await resp.text()


async def test_only_the_page_files_are_served(
    bridge: RunningBridge, http: aiohttp.ClientSession
) -> None:
    for path in ("/desktop/nope.js", "/desktop/..%2Fopenapi.yaml", "/desktop/%2E%2E/app.py"):
        async with http.get(bridge.url + path) as resp:
            assert resp.status == 404, path
            assert (await resp.json())["error"]["code"] == "not_found"
    # The API behind the page still wants the token.
    async with http.get(f"{bridge.url}/v1/sessions") as resp:
        assert resp.status == 401
