"""`transfer-bridge serve [--config PATH]` and `transfer-bridge qa SCENARIO ...`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

import structlog
from aiohttp import web

from bridge.store import StoreUnavailable
from desktop_api import qa
from desktop_api.app import create_app
from desktop_api.config import ConfigError, Settings, load_settings
from desktop_api.logs import configure_logging
from desktop_api.server import BACKLOG, BridgeRunner

log = structlog.get_logger("transfer_bridge.cli")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(
        prog="transfer-bridge",
        description="See and confirm call transfers made on agents' own SIP phones.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API and the configured sources")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    qa.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "qa":
        return qa.main(args)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"transfer-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if not settings.admin_token:
        log.warning(
            "no_admin_token",
            hint="set TRANSFER_BRIDGE_ADMIN_TOKEN; admin endpoints refuse every request",
        )
    # SIGINT and SIGTERM end serve(): in-flight requests finish, cleanup_ctx closes the store.
    try:
        run(settings)
    except StoreUnavailable as exc:
        print(f"transfer-bridge: store.url: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        print(
            f"transfer-bridge: http.listen: cannot listen on {settings.host}:{settings.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    return 0


async def serve(settings: Settings) -> None:
    """Serve until cancelled or signalled (`web.run_app`, with the project's own server)."""
    runner = BridgeRunner(
        create_app(settings),
        idle_timeout=settings.idle_timeout,
        max_connections=settings.max_connections,
        access_log=None,
        handle_signals=True,
        shutdown_timeout=10.0,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port, backlog=BACKLOG).start()
        await asyncio.Event().wait()  # until cancelled (a signal raises GracefulExit)
    finally:
        await runner.cleanup()


def run(settings: Settings) -> None:
    """Run `serve` on a new loop until SIGINT or SIGTERM, then shut down cleanly."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main_task = loop.create_task(serve(settings))
    try:
        loop.run_until_complete(main_task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main_task.done():
                main_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main_task)
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


if __name__ == "__main__":
    sys.exit(main())
