"""`/desktop/`: the reference Agent Desktop page, static files shipped with the package.

The files need no token: the page asks the agent for one and sends it as a bearer token on
every API call it makes. Only the files listed in `FILES` are served, from memory.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

routes = web.RouteTableDef()

FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "screens.js": "text/javascript",
    "style.css": "text/css",
}
HEADERS = {
    # Revalidate on every load so an upgraded bridge serves its own page at once.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Everything the page needs comes from the bridge itself: no CDN, no inline code.
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


@functools.cache
def _content(name: str) -> bytes:
    return resources.files("desktop_api").joinpath("static", "desktop", name).read_bytes()


def _file(name: str) -> web.Response:
    content_type = FILES.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=_content(name), content_type=content_type, charset="utf-8", headers=HEADERS
    )


@routes.get("/desktop")
async def desktop_redirect(request: web.Request) -> web.Response:
    """`/desktop` → `/desktop/`, so the page's relative links resolve."""
    return web.Response(status=301, headers={"Location": "/desktop/", **HEADERS})


@routes.get("/desktop/")
async def desktop_index(request: web.Request) -> web.Response:
    """The page."""
    return _file("index.html")


@routes.get("/desktop/{name}")
async def desktop_file(request: web.Request) -> web.Response:
    """The page's scripts and style sheet."""
    return _file(request.match_info["name"])
