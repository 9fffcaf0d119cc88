"""The head_exists check: an endpoint claiming a head above the reference is asked for that block;
one that cannot produce it invented its head (head_missing) and never becomes the reference."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.checks.registry import CHECKS
from tests.checks.test_head import ChecksNet, Node, assert_consistent, checks_network, run_checks

FAKE_NODES = {
    # 3 blocks above the chain: inside the head_ahead allowance (a minute of blocks)
    "phantom": Node(head_lead=3, phantom=True),
    "phantom-b": Node(head_lead=3, phantom=True),
    # 2 blocks ahead and able to serve them: what an honest node a little ahead looks like
    "ahead": Node(head_lead=2),
    # 2 blocks behind: below the reference, never asked
    "low": Node(head_lead=-2),
    # 2 blocks ahead, and its blocks carry another number than the one asked for
    "misnumbered": Node(head_lead=2, block="wrong_number"),
}
HEAD_ONLY = {"head": CHECKS["head"], "head_exists": CHECKS["head_exists"]}


@pytest.fixture(scope="module")
def net() -> Iterator[ChecksNet]:
    with checks_network(FAKE_NODES, wait_blocks=2) as n:
        yield n


def test_a_head_without_its_block_is_head_missing(net: ChecksNet) -> None:
    target = net.target("healthy-a", "healthy-b", "phantom", "ahead")
    results = run_checks(target, HEAD_ONLY)
    phantom = results["phantom"]
    assert (phantom.ok, phantom.error, phantom.correct) == (True, "head_missing", False)
    assert results["ahead"].error is None and results["ahead"].correct is None
    for name in ("healthy-a", "healthy-b"):
        assert results[name].error is None and results[name].lag_blocks in (0, 1)


def test_two_colluding_phantoms_cannot_set_the_reference(net: ChecksNet) -> None:
    # Four endpoints: the quorum is two, so the two liars first set the reference (they "agree"
    # on a head); asking each for its block finds both out, the reference is computed again
    # without them, and the honest ones are judged at the height they all have.
    target = net.target("healthy-a", "healthy-b", "phantom", "phantom-b")
    results = run_checks(target)
    for name in ("phantom", "phantom-b"):
        assert (results[name].error, results[name].correct) == ("head_missing", False)
    for name in ("healthy-a", "healthy-b"):
        r = results[name]
        assert (r.ok, r.error, r.correct, r.lag_blocks) == (True, None, True, 0), name
        assert r.reference_head == r.head
        assert_consistent(r, target)


def test_honest_endpoints_are_never_flagged(net: ChecksNet) -> None:
    results = run_checks(net.target("healthy-a", "healthy-b", "slow", "ahead"), HEAD_ONLY)
    assert all(r.error is None for r in results.values())


def test_only_heads_above_the_reference_are_asked(net: ChecksNet) -> None:
    before = net.fake.calls.copy()
    target = net.target("healthy-a", "healthy-b", "slow", "low", "phantom")
    results = run_checks(target, HEAD_ONLY)
    asked = net.fake.calls - before
    assert asked["low", "eth_getBlockByNumber"] == 0
    # Asked, and once more a moment later before it is judged (load-balanced backends).
    assert asked["phantom", "eth_getBlockByNumber"] == 2
    assert (results["phantom"].error, results["phantom"].correct) == ("head_missing", False)
    low = results["low"]
    assert (low.ok, low.error, low.correct) == (True, None, None)
    assert low.lag_blocks is not None and 1 <= low.lag_blocks <= 3


def test_a_block_with_another_number_is_malformed(net: ChecksNet) -> None:
    target = net.target("healthy-a", "healthy-b", "slow", "misnumbered")
    results = run_checks(target, HEAD_ONLY)
    r = results["misnumbered"]
    assert (r.ok, r.error, r.correct) == (True, "malformed", False)
    assert all(results[n].error is None for n in ("healthy-a", "healthy-b", "slow"))
    # Found out before it could count towards the reference.
    assert r.reference_head is not None and r.head is not None and r.reference_head < r.head
