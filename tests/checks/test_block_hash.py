"""The block_hash check through run_chain: the majority hash at reference - confirmations is
canonical; a fork is wrong_hash; an endpoint below the height, or a vote without a majority of
at least two, is unknown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from monitor.checks.registry import CHECKS
from tests.checks.test_head import (
    CONFIRMATIONS,
    LEAD,
    MIX,
    ChecksNet,
    Node,
    assert_consistent,
    checks_network,
    run_checks,
)

FAKE_NODES = {
    "liar": Node(head_lead=LEAD),
    "null-block": Node(block="null"),
    "wrong-number": Node(block="wrong_number"),
    "bad-hash": Node(block="bad_hash"),
    "newline-hash": Node(block="newline_hash"),
}


@pytest.fixture(scope="module")
def net() -> Iterator[ChecksNet]:
    with checks_network(FAKE_NODES, wait_blocks=CONFIRMATIONS + 2) as n:
        yield n


@pytest.fixture(scope="module")
def mix(net: ChecksNet) -> tuple[Any, dict[str, Any]]:
    target = net.target(*MIX)
    return target, run_checks(target)


def test_check_height_and_canonical_hash(net: ChecksNet, mix: Any) -> None:
    target, results = mix
    reference = results["healthy-a"].reference_head
    height = reference - CONFIRMATIONS
    assert height > net.start_height  # the fork has diverged here
    canonical = net.chain.block_hash(height)
    for r in results.values():
        assert (r.reference_head, r.check_height) == (reference, height)
        assert_consistent(r, target)
    for name in ("healthy-a", "healthy-b", "slow"):
        r = results[name]
        assert (r.ok, r.error, r.correct, r.block_hash) == (True, None, True, canonical), name


def test_fork_is_wrong_hash(mix: Any) -> None:
    _, results = mix
    fork = results["fork"]
    assert (fork.ok, fork.error, fork.correct) == (True, "wrong_hash", False)
    assert fork.block_hash is not None and fork.block_hash != results["healthy-a"].block_hash
    assert fork.lag_blocks is not None and fork.lag_blocks <= 1  # on time, just wrong


def test_lagging_below_check_height_is_unknown(mix: Any) -> None:
    _, results = mix
    lagging = results["lagging"]
    assert lagging.head is not None and lagging.head < lagging.check_height
    assert (lagging.ok, lagging.error, lagging.correct, lagging.block_hash) == (
        True,
        None,
        None,
        None,
    )


def test_excluded_endpoints_have_no_hash(mix: Any) -> None:
    _, results = mix
    expected = {
        "wrongchain": (True, "wrong_chain", False),
        "malformed": (True, "malformed", False),
        "liar": (True, "head_ahead", False),
        "down": (False, "http_status", None),
    }
    for name, (ok, error, correct) in expected.items():
        r = results[name]
        assert (r.ok, r.error, r.correct, r.block_hash) == (ok, error, correct, None), name


def test_no_majority_is_unknown(net: ChecksNet) -> None:
    results = run_checks(net.target("healthy-a", "fork"))
    for r in results.values():
        assert r.block_hash is not None
        assert (r.error, r.correct) == (None, None)


def test_one_answer_is_never_correct(net: ChecksNet) -> None:
    # Only healthy-a answers a head, so only it is asked for the block: one hash is no majority.
    results = run_checks(net.target("healthy-a", "malformed", "down"))
    healthy = results["healthy-a"]
    assert healthy.reference_head == healthy.head
    assert healthy.check_height == healthy.head - CONFIRMATIONS
    assert healthy.block_hash == net.chain.block_hash(healthy.check_height)
    assert (healthy.error, healthy.correct) == (None, None)


def test_hash_check_needs_a_reference(net: ChecksNet) -> None:
    # Without the head check there is no reference head: nothing is asked, nothing judged.
    results = run_checks(net.target("healthy-a", "healthy-b"), {"block_hash": CHECKS["block_hash"]})
    for r in results.values():
        assert (r.check_height, r.block_hash, r.correct) == (None, None, None)


def test_head_then_hash_without_chain_id(net: ChecksNet) -> None:
    checks = {"head": CHECKS["head"], "block_hash": CHECKS["block_hash"]}
    results = run_checks(net.target("healthy-a", "healthy-b", "fork"), checks)
    assert results["healthy-a"].correct is True
    assert results["fork"].error == "wrong_hash"


@pytest.mark.parametrize(
    ("name", "error"),
    [
        # null for a height below the head it reported (at the tip, so head_exists left it)
        ("null-block", "malformed"),
        ("wrong-number", "malformed"),
        ("bad-hash", "malformed"),
    ],
)
def test_bad_block_answers_are_incorrect(net: ChecksNet, name: str, error: str) -> None:
    results = run_checks(net.target("healthy-a", "healthy-b", name))
    r = results[name]
    assert (r.ok, r.error, r.correct, r.block_hash) == (True, error, False, None)
    assert r.head is not None  # its head was fine
    assert results["healthy-a"].correct is True and results["healthy-b"].correct is True


def test_hash_with_trailing_newline_does_not_break_the_round(net: ChecksNet) -> None:
    results = run_checks(net.target("healthy-a", "healthy-b", "newline-hash"))
    assert results["newline-hash"].correct is False
    assert results["healthy-a"].correct is True
