"""Store implementations behind `bridge.store.Store`."""

from __future__ import annotations

from pathlib import Path

from bridge.store import Store
from desktop_api.storage.sqlite import SqliteStore


def open_store(url: str) -> Store:
    """Open the store a `[store] url` names (only `sqlite:///path` for now)."""
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url.removeprefix("sqlite:///")))
    raise ValueError(f"unsupported store url {url!r} (expected sqlite:///PATH)")
