"""Registers the rig's ``kamailio`` marker until pyproject.toml lists it (harmless after)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kamailio: runs real Kamailio and SIPp processes (scripts/rig/install.sh)"
    )
