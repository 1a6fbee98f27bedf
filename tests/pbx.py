"""One real Asterisk for the whole pytest session, shared by every test that needs it.

Asterisk takes fixed ports (SIP 5070, AMI 5038) and one chroot, so a machine runs one at a time:
every test module asks for the `pbx` fixture instead of starting its own. It runs
`tests.rig.asterisk.running_asterisk` in a thread with its own event loop, so that tests on any
loop (pytest-asyncio gives each test its own) can use it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rig.asterisk import AsteriskSettings, RunningAsterisk, running_asterisk

REQUIRED_ENV = "TRANSFER_BRIDGE_RIG_REQUIRED"


def rig_required() -> bool:
    return os.environ.get(REQUIRED_ENV, "").strip() not in ("", "0", "false", "no")


def missing() -> str | None:
    """Why the Asterisk rig cannot run here, or None."""
    if os.geteuid() != 0:
        return "the Asterisk rig needs root (chroot)"
    for tool in ("chroot", "sipp"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/rig/install.sh)"
    try:
        import pjsua2  # noqa: F401
    except ImportError:
        return "pjsua2 is not installed (scripts/rig/install.sh)"
    return None


class _PbxThread(threading.Thread):
    """Holds `running_asterisk` open on its own loop until told to stop."""

    def __init__(self, settings: AsteriskSettings, workdir: Path) -> None:
        super().__init__(name="asterisk-rig", daemon=True)
        self.settings = settings
        self.workdir = workdir
        self.ready = threading.Event()
        self.pbx: RunningAsterisk | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._halt: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._halt = asyncio.Event()
        try:
            async with running_asterisk(self.settings, self.workdir) as pbx:
                self.pbx = pbx
                self.ready.set()
                await self._halt.wait()
        except BaseException as exc:  # reported to the fixture
            self.error = exc
        finally:
            self.ready.set()

    def stop(self) -> None:
        if self._loop is not None and self._halt is not None:
            self._loop.call_soon_threadsafe(self._halt.set)
        self.join(60)


@pytest.fixture(scope="session")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAsterisk]:
    """A running Asterisk 22 (started once; its log is kept in the session's temp folder)."""
    reason = missing()
    if reason is not None:
        if rig_required():
            pytest.fail(f"Asterisk rig required but unavailable: {reason}")
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("asterisk")
    thread = _PbxThread(AsteriskSettings.fresh(), workdir)
    thread.start()
    thread.ready.wait(900)
    if thread.pbx is None:
        thread.stop()
        raise RuntimeError(f"Asterisk did not start: {thread.error!r}") from thread.error
    try:
        yield thread.pbx
    finally:
        thread.stop()
