"""One TCP connection to Asterisk: its socket, its parser, and the bounded reads of a handshake."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

import structlog

from bridge.ami import NEED_DATA, AmiItem, AmiMessageTooLarge, AmiParser, AmiProtocolError
from phone_drivers.ami.stats import AmiStats, FailureReason

__all__ = ["READ_SIZE", "AmiConnection", "ConnectionFailure", "open_connection"]

log = structlog.get_logger("transfer_bridge.ami")

READ_SIZE = 64 * 1024
CLOSE_WAIT = 1.0  # seconds to let an aborted socket and the connection's tasks finish


class ConnectionFailure(Exception):
    """Why a connection attempt or an established connection ended."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def describe(exc: OSError) -> str:
    """A short text for a socket error (``Connection refused``)."""
    if exc.errno:
        return os.strerror(exc.errno)  # asyncio's own text ("Connect call failed") hides it
    return str(exc) or type(exc).__name__


async def open_connection(
    host: str, port: int, within: float, *, source: str, stats: AmiStats, max_message_size: int
) -> AmiConnection:
    """Connect within ``within`` seconds or raise ``ConnectionFailure(UNREACHABLE)``."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        detail = f"no TCP connection within {within:g} s"
        raise ConnectionFailure(FailureReason.UNREACHABLE, detail) from None
    except OSError as exc:
        raise ConnectionFailure(FailureReason.UNREACHABLE, describe(exc)) from None
    return AmiConnection(reader, writer, source=source, stats=stats, limit=max_message_size)


class AmiConnection:
    """A connected socket and everything that lives exactly as long as it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        source: str,
        stats: AmiStats,
        limit: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = AmiParser(max_message_size=limit)
        self.source = source
        self.stats = stats
        self.eof = False
        self.up_since: float | None = None  # loop time of the successful login
        self.received_at = 0.0  # clock time of the last read, given to the sink with each event
        self.failure: ConnectionFailure | None = None  # set by whoever aborted the socket
        self.tasks: list[asyncio.Future[None]] = []  # keep-alive, on_connected hook

    def send(self, data: bytes) -> None:
        """Queue bytes for Asterisk (the caller drains when it must wait for room)."""
        self.writer.write(data)
        self.stats.actions += 1
        self.stats.bytes_sent += len(data)

    def receive(self, data: bytes) -> None:
        """Feed what was read; ``b""`` is the end of the stream."""
        self.stats.bytes_received += len(data)
        if not data:
            self.eof = True
        self.parser.receive_data(data)

    def next_item(self) -> AmiItem:
        """The next buffered item or NEED_DATA; malformed messages are counted and skipped.

        A fatal framing error raises ``ConnectionFailure``.
        """
        while True:
            try:
                return self.parser.next_event()
            except AmiMessageTooLarge as exc:
                raise ConnectionFailure(FailureReason.MESSAGE_TOO_LARGE, str(exc)) from None
            except AmiProtocolError as exc:
                if exc.recoverable:
                    self.stats.malformed += 1
                    log.warning("ami_message_malformed", source=self.source, error=str(exc))
                    continue
                if self.eof:  # the only fatal error found at the end: a cut-off message
                    detail = "closed in the middle of a message"
                    raise ConnectionFailure(FailureReason.DISCONNECTED, detail) from None
                raise ConnectionFailure(FailureReason.PROTOCOL_ERROR, str(exc)) from None

    async def read_item(
        self,
        deadline: float,
        reason: FailureReason,
        detail: str,
        clock: Callable[[], float],
    ) -> AmiItem:
        """The next item before ``deadline`` (loop time), reading as needed.

        Raises ``ConnectionFailure(reason, detail)`` when the deadline passes first.
        """
        loop = asyncio.get_running_loop()
        while True:
            item = self.next_item()
            if item is not NEED_DATA:
                return item
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                raise ConnectionFailure(reason, detail) from None
            self.received_at = clock()
            self.receive(data)

    def abort(self, failure: ConnectionFailure) -> None:
        """Drop the socket now; ``failure`` is why (the first reason given wins)."""
        if self.failure is None:
            self.failure = failure
        self.writer.transport.abort()

    async def close(self) -> None:
        """Stop the connection's tasks and release the socket (bounded)."""
        for task in self.tasks:
            task.cancel()
        self.writer.transport.abort()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=CLOSE_WAIT)
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_WAIT):
                await self.writer.wait_closed()
