"""Store implementations behind `bridge.store.Store`."""

from __future__ import annotations

from pathlib import Path

from bridge.store import Store
from desktop_api.storage.sqlite import SqliteStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def redacted_url(url: str) -> str:
    """A store URL fit for logs and errors: `scheme://user@host:port/path`, without the
    password and without the query (libpq also reads `?password=`). Never raises."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)"
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    userinfo, at, location = rest.rpartition("@")
    user = userinfo.split(":", 1)[0] + "@" if at else ""
    return f"{scheme}://{user}{location}"


def open_store(url: str) -> Store:
    """Open the store a `[store] url` names: `sqlite:///path` or `postgresql://...`."""
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url.removeprefix("sqlite:///")))
    if url.startswith(POSTGRES_SCHEMES):
        from desktop_api.storage.postgres import PostgresStore  # psycopg only when asked for

        return PostgresStore(url)
    raise ValueError("unsupported store url (expected sqlite:///PATH or postgresql://...)")
