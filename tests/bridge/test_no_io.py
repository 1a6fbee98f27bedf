"""`bridge/` is the pure core: parsing, tracking and deciding, with no I/O of its own.

Every module under it must import without pulling in an event loop, a socket, a
thread, a subprocess, HTTP or a database, and must not reach into the layers that
do I/O (`desktop_api`, `phone_drivers`). These tests walk the whole package, so a
new module is covered the day it is added.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "bridge"

# Standard-library and third-party modules that mean I/O or concurrency.
IO_MODULES = frozenset(
    {
        "asyncio",
        "aiohttp",
        "socket",
        "selectors",
        "ssl",
        "subprocess",
        "threading",
        "http",
        "urllib.request",
        "sqlite3",
    }
)
# The layers around the core; the core must never depend on them.
OUTER_PACKAGES = frozenset({"desktop_api", "phone_drivers"})

# Run in a fresh interpreter: import every module pkgutil finds under bridge/,
# then report what was imported and which I/O modules came along.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import bridge
names = sorted(m.name for m in pkgutil.walk_packages(bridge.__path__, "bridge."))
for name in names:
    importlib.import_module(name)
banned = json.loads(sys.argv[1])
print(json.dumps({"walked": names, "loaded": sorted(set(banned) & set(sys.modules))}))
"""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _bridge_files() -> list[Path]:
    return sorted(BRIDGE.rglob("*.py"))


def _forbidden(imported: str) -> bool:
    """True if `imported` (a dotted module name) is, or is inside, an I/O or outer module."""
    return any(
        imported == name or imported.startswith(name + ".") for name in IO_MODULES | OUTER_PACKAGES
    )


def _imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Every absolute module a file imports, with its line (`from x import y` gives x and x.y)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def test_importing_every_bridge_module_loads_no_io_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, json.dumps(sorted(IO_MODULES))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(result.stdout)
    # The walk really covered the package: every .py file under bridge/ was imported.
    assert set(report["walked"]) | {"bridge"} == {_module_name(p) for p in _bridge_files()}
    assert report["loaded"] == []


@pytest.mark.parametrize("path", _bridge_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_bridge_module_source_imports_no_io_or_outer_layer(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    offending = [f"line {line}: {name}" for line, name in _imports(tree) if _forbidden(name)]
    assert offending == []


def test_the_static_check_catches_each_forbidden_import() -> None:
    """The ast check above must see every spelling of a forbidden import, or it proves nothing."""
    for source in (
        "import asyncio",
        "import asyncio.events",
        "import urllib.request",
        "from urllib import request",
        "from http.client import HTTPConnection",
        "import desktop_api.app",
        "from phone_drivers import ami",
        "def f():\n    import sqlite3",
    ):
        names = [name for _, name in _imports(ast.parse(source))]
        assert any(_forbidden(n) for n in names), source
    for source in ("import urllib.parse", "from html import escape", "from .sip import x"):
        names = [name for _, name in _imports(ast.parse(source))]
        assert not any(_forbidden(n) for n in names), source
