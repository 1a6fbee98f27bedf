"""Changes reach streams in cursor order with no gap, whichever instance wrote them."""

from __future__ import annotations

from bridge.model import Customer, Session
from desktop_api.cluster.feed_order import FeedOrder


def session(account: str = "acme", version: int = 1) -> Session:
    return Session(
        account, "s-1", "a-1", Customer("+34900000001"), "2026-01-01T00:00:00Z", version=version
    )


def test_in_order_changes_pass_at_once() -> None:
    passed: list[int] = []
    order = FeedOrder(lambda seq, s: passed.append(seq))
    assert not order.offer(1, session(version=1))
    assert not order.offer(2, session(version=2))
    assert passed == [1, 2] and order.last("acme") == 2


def test_a_change_ahead_of_a_missing_one_waits_for_it() -> None:
    passed: list[int] = []
    order = FeedOrder(lambda seq, s: passed.append(seq))
    order.start_at({"acme": 10})
    assert order.offer(12, session(version=3))  # 11 (another instance's) not seen yet
    assert passed == [] and order.waiting() == ["acme"]
    assert not order.offer(11, session(version=2))  # read from the stored feed
    assert passed == [11, 12] and order.waiting() == [] and order.last("acme") == 12


def test_a_change_seen_twice_passes_once() -> None:
    passed: list[int] = []
    order = FeedOrder(lambda seq, s: passed.append(seq))
    order.offer(1, session())
    order.offer(1, session())  # our own commit, read back from the feed
    assert passed == [1]


def test_accounts_do_not_wait_for_each_other() -> None:
    passed: list[tuple[str, int]] = []
    order = FeedOrder(lambda seq, s: passed.append((s.account_id, seq)))
    assert order.offer(2, session("acme"))
    assert not order.offer(1, session("globex"))
    assert passed == [("globex", 1)] and order.waiting() == ["acme"]
