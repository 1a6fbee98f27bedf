"""Health, metrics, the document route, and an unexpected failure, as the document says."""

from __future__ import annotations

from typing import Any

import pytest

from desktop_api.testing import ApiClient, RunningBridge
from tests.desktop_api.openapi.checker import Checker, assert_covers
from tests.desktop_api.openapi.coverage import COVERS


async def failing(*args: Any) -> None:
    raise RuntimeError("store down (test)")


async def test_health_is_200_then_503_while_the_store_fails(
    bridge: RunningBridge, anon: ApiClient, checker: Checker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await checker.call(anon, "GET", "/healthz", expect=200)
    monkeypatch.setattr(bridge.service, "ping_store", failing)
    r = await checker.call(anon, "GET", "/healthz", expect=503)
    assert r.body["store"] == "failing"
    assert_covers(checker, COVERS["health"])


async def test_metrics(anon: ApiClient, checker: Checker) -> None:
    metrics = await checker.call(anon, "GET", "/metrics", expect=200)
    assert b"# TYPE" in metrics.raw
    assert_covers(checker, COVERS["metrics"])


async def test_the_document_route(anon: ApiClient, checker: Checker) -> None:
    await checker.call(anon, "GET", "/openapi.json", expect=200)
    assert_covers(checker, COVERS["document"])


async def test_an_unexpected_error_is_a_documented_500(
    bridge: RunningBridge, acme: ApiClient, checker: Checker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bridge.service, "list_sessions", failing)
    await checker.call(acme, "GET", "/v1/sessions", expect=500, code="internal_error")
    assert_covers(checker, COVERS["internal_error"])
