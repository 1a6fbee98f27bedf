"""A running bridge standing in for the rig's HEP collector: Kamailio's siptrace sends straight
to the bridge's own `[[sources.hep]]` listener, and the rig waits on its counters."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from desktop_api.config import Settings
from desktop_api.keys import SOURCES
from desktop_api.testing import RunningBridge, settings_for

HEP_KEY = "rig-hep-secret"  # the auth key the rig's Kamailio is configured with


def settings_with_hep(directory: Path, admin_token: str) -> Settings:
    """A test bridge's settings with one HEP listener (any free port) for the rig's Kamailio."""
    source = {"name": "kamailio", "listen": "127.0.0.1:0", "password": HEP_KEY, "match_user": True}
    return dataclasses.replace(settings_for(directory, admin_token), sources={"hep": [source]})


class BridgeAsCollector:
    """Lets the rig point Kamailio's HEP straight at the bridge's listener."""

    def __init__(self, bridge: RunningBridge) -> None:
        self.listener = bridge.app[SOURCES].hep[0].listener
        self.port = self.listener.address[1]
        self.packets: list[Any] = []

    def clear(self) -> None:
        """Nothing to clear: the bridge keeps counters, not packets."""

    async def settle(self, quiet: float, time_limit: float) -> list[Any]:
        """Wait until no datagram arrived for `quiet` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_limit
        last, since = -1, loop.time()
        while loop.time() < deadline:
            seen = self.listener.stats.received
            if seen != last:
                last, since = seen, loop.time()
            elif loop.time() - since >= quiet:
                break
            await asyncio.sleep(0.05)
        return self.packets
