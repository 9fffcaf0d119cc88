"""The old_block_hash check: hashes at one random older height are voted on like block_hash; an
endpoint with a rewritten history is wrong_old_hash, with no quorum nothing is judged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.checks import old_block_hash
from monitor.checks.registry import CHECKS
from tests.checks.test_head import (
    CONFIRMATIONS,
    ChecksNet,
    Node,
    assert_consistent,
    checks_network,
    run_checks,
)

FAKE_NODES = {"rewritten": Node(history="rewritten")}
OLD_HEIGHT = 10  # far below the height the nodes started at, where "rewritten" differs


@pytest.fixture(scope="module")
def net() -> Iterator[ChecksNet]:
    with checks_network(FAKE_NODES, wait_blocks=CONFIRMATIONS + 2) as n:
        yield n


@pytest.fixture
def old_height(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(old_block_hash, "pick_height", lambda confirmed, depth: OLD_HEIGHT)
    return OLD_HEIGHT


def test_rewritten_history_is_wrong_old_hash(net: ChecksNet, old_height: int) -> None:
    target = net.target("healthy-a", "healthy-b", "slow", "rewritten")
    results = run_checks(target)
    r = results["rewritten"]
    # Near the head it agrees (block_hash said correct), far back it does not.
    assert (r.ok, r.error, r.correct) == (True, "wrong_old_hash", False)
    for name in ("healthy-a", "healthy-b", "slow"):
        assert (results[name].error, results[name].correct) == (None, True), name
    for result in results.values():
        assert_consistent(result, target)


def test_one_against_one_is_no_majority(net: ChecksNet, old_height: int) -> None:
    checks = {name: CHECKS[name] for name in ("head", "old_block_hash")}
    results = run_checks(net.target("healthy-a", "rewritten"), checks)
    assert all(r.error is None and r.correct is None for r in results.values())


def test_heights_are_older_than_the_confirmed_one() -> None:
    heights = {old_block_hash.pick_height(100, 5) for _ in range(200)}
    assert heights <= set(range(95, 100)) and len(heights) > 1
    assert old_block_hash.pick_height(0, 5) is None
    assert {old_block_hash.pick_height(3, 10_000) for _ in range(50)} <= {0, 1, 2}
