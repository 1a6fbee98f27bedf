"""Recorded-shape SIP messages from tests/fixtures/sip (stored with LF, sent with CRLF)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sip"


def load_sip(name: str, *, crlf: bool = True) -> bytes:
    """Return fixture ``name`` as wire bytes; Content-Length in the files counts CRLF endings."""
    text = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8")
    return (text.replace("\n", "\r\n") if crlf else text).encode()


@pytest.fixture
def wire() -> Callable[..., bytes]:
    """Load a SIP fixture by name: ``wire("refer_attended")``."""
    return load_sip
