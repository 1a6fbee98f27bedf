"""docs/configuration.md names every key the configuration loader accepts, and its variable.

An operator reads the page, not `desktop_api/config.py`: a key added to the loader but not to
the page (its table and its list of environment variables) is a setting nobody can find.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from desktop_api.config import DEFAULTS, SOURCE_KINDS

PAGE = Path(__file__).resolve().parents[1].joinpath("docs/configuration.md").read_text()
KEYS = [(section, key) for section, values in DEFAULTS.items() for key in values]


@pytest.mark.parametrize("section,key", KEYS, ids=[f"{s}.{k}" for s, k in KEYS])
def test_every_key_is_in_the_table_and_the_environment_list(section: str, key: str) -> None:
    rows = [line for line in PAGE.splitlines() if line.startswith("| `")]
    assert any(f"`{section}.{key}`" in row for row in rows), "not in the table of keys"
    assert f"`TRANSFER_BRIDGE_{section.upper()}_{key.upper()}`" in PAGE


@pytest.mark.parametrize("kind", sorted(SOURCE_KINDS))
def test_every_source_key_is_documented(kind: str) -> None:
    table = PAGE[PAGE.index(f"### `[[sources.{kind}]]`") :]
    table = table[: table.index("\n### ")] if "\n### " in table else table
    for key in SOURCE_KINDS[kind]:
        assert f"`{key}`" in table, f"sources.{kind}.{key}"
