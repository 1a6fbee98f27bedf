"""The one thread that runs every blocking store call, so the event loop never waits on disk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from bridge.store import Store

T = TypeVar("T")


class StoreRunner:
    """Runs calls on `store` one at a time, in the order they were asked for, off the loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="store")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the store thread; one thread keeps writes in order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def ping(self) -> None:
        """Raise if the store cannot answer."""
        await self.run(self.store.ping)

    async def close(self) -> None:
        """Finish queued calls, close the store and stop the thread."""
        await self.run(self.store.close)
        self._executor.shutdown(wait=True)
