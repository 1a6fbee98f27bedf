"""structlog set up once: JSON lines in production, a console renderer for humans.

Records from the standard library (aiohttp, asyncio) go through the same renderer, so a JSON log
stays one JSON object per line whatever wrote it.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Hashable, MutableMapping
from typing import Any

import structlog

SECRET_KEYS = frozenset({"token", "admin_token", "secret", "password", "authorization"})
# Secrets inside text (a library's message or traceback quoting a request): a bearer token, a
# device's `key=`, a `password=`/`secret=` pair. The value is replaced, the rest kept.
SECRET_TEXT = re.compile(r"(?i)(bearer[ \t]+|[?&;\s]key=|password=|secret=)[^\s&;'\"\\]+")


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in SECRET_KEYS & event.keys():
        event[key] = "***"
    return event


def scrub(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask secrets quoted inside any text of the record (runs after tracebacks are rendered)."""
    for key, value in event.items():
        if isinstance(value, str) and SECRET_TEXT.search(value):
            event[key] = SECRET_TEXT.sub(r"\1***", value)
    return event


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    """Route structlog and stdlib logging to stderr in one format."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, scrub, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                scrub,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RateLimited:
    """At most one log line per key every `every` seconds; the lines held back are counted.

    `allow(key)` answers None (hold this one back) or how many were held back since the last
    line for that key. At most `max_keys` keys are remembered (the table starts over when full),
    so a flood of distinct keys costs bounded memory, never unbounded log.
    """

    def __init__(
        self,
        every: float = 10.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self.max_keys = max_keys
        self._clock = clock
        self._keys: dict[Hashable, tuple[float, int]] = {}  # key -> (last line at, held back)

    def allow(self, key: Hashable) -> int | None:
        """Whether to write a line for `key` now (and how many were held back) or not (None)."""
        now = self._clock()
        seen = self._keys.get(key)
        if seen is not None and now - seen[0] < self.every:
            self._keys[key] = (seen[0], seen[1] + 1)
            return None
        if seen is None and len(self._keys) >= self.max_keys:
            self._keys.clear()
        self._keys[key] = (now, 0)
        return 0 if seen is None else seen[1]
