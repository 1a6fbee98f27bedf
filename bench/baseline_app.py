"""The bare baseline: one aiohttp route answering a fixed session JSON, nothing else.

It serves the bytes `bench/http_get_session.py` fetched from a real bridge, with the same
`Content-Type` and `ETag`, on the same route pattern (`/v1/sessions/{session_id}`), started the
way the bridge is (aiohttp's runner, no access log; the bridge's own runner adds only its
connection limits and error shape). No middleware, no auth, no lookup.

    python bench/baseline_app.py --port 8081 --body session.json \
        --content-type 'application/json; charset=utf-8' --etag '"1"' [--serialize] [--uvloop]

`--serialize` answers with `web.json_response(dict)` per request instead of fixed bytes, as the
bridge does, to show what JSON encoding alone costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from aiohttp import web


def build_app(body: bytes, content_type: str, etag: str, serialize: bool) -> web.Application:
    """The one-route app."""
    if serialize:
        data = json.loads(body)

        async def handler(request: web.Request) -> web.Response:
            resp = web.json_response(data)
            resp.headers["ETag"] = etag
            return resp

    else:
        headers = {"Content-Type": content_type, "ETag": etag}

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/v1/sessions/{session_id}", handler)
    return app


def main() -> None:
    """Parse arguments and serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True, help="file with the JSON bytes")
    parser.add_argument("--content-type", default="application/json; charset=utf-8")
    parser.add_argument("--etag", default='"1"')
    parser.add_argument("--serialize", action="store_true", help="json_response per request")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = build_app(args.body.read_bytes(), args.content_type, args.etag, args.serialize)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
