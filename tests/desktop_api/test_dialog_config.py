"""`[[sources.dialog]]` in the configuration file: accepted keys, and errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from desktop_api.config import ConfigError, load_settings

GOOD = """
[[sources.dialog]]
name = "pbx-blf"
pbx = "127.0.0.1:5070"
listen = "127.0.0.1:0"
username = "watcher"
password = "p4ss"
domain = "pbx.example"
expires = 600
extensions = ["1001", "1002"]
"""


def load(tmp_path: Path, text: str) -> dict:  # type: ignore[type-arg]
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return load_settings(path, env={}).sources


def test_a_dialog_source_is_accepted(tmp_path: Path) -> None:
    (entry,) = load(tmp_path, GOOD)["dialog"]
    assert entry["pbx"] == "127.0.0.1:5070" and entry["extensions"] == ["1001", "1002"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('pbx = "127.0.0.1:5070"', 'pbx = "nowhere"'), "sources.dialog[0].pbx"),
        (('password = "p4ss"', ""), "sources.dialog[0].password"),
        (("expires = 600", "expires = 10"), "sources.dialog[0].expires"),
        (('"1002"]', '"10 02"]'), "sources.dialog[0].extensions"),
        (("expires = 600", 'expires = "600"'), "sources.dialog[0].expires"),
        (("expires = 600", "colour = 1"), "unknown key sources.dialog[0].colour"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path, GOOD.replace(*change))
