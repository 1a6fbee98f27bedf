"""`transfer-bridge serve [--config PATH]` and `transfer-bridge qa SCENARIO ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog
from aiohttp import web

from desktop_api import qa
from desktop_api.app import create_app
from desktop_api.config import ConfigError, load_settings
from desktop_api.logs import configure_logging

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
    # run_app handles SIGINT and SIGTERM: in-flight requests finish, cleanup_ctx closes the store.
    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=None,
            print=None,
            shutdown_timeout=10.0,
        )
    except OSError as exc:
        print(
            f"transfer-bridge: http.listen: cannot listen on {settings.host}:{settings.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
