"""The archive check on real anvil nodes: historical balance and storage of a configured address
are voted on across the archive endpoints only; a differing answer is wrong_state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.checks.registry import CHECKS
from tests.checks.anvil_state import CANARY, SLOT, STATE_BLOCK, StateNet, state_network
from tests.checks.test_head import assert_consistent, run_checks
from tests.support.anvil import anvil_available

pytestmark = pytest.mark.skipif(not anvil_available(), reason="anvil is not installed")

ARCHIVE = {"archive": {"every_s": 0, "address": CANARY, "block": STATE_BLOCK, "storage_slot": SLOT}}
RICH_ONLY = {
    "archive": {
        "every_s": 0,
        "address": "0x00000000000000000000000000000000000a11ce",
        "block": STATE_BLOCK,
    }
}
CHECKS_USED = {name: CHECKS[name] for name in ("chain_id", "head", "block_hash", "archive")}


@pytest.fixture(scope="module")
def net() -> Iterator[StateNet]:
    with state_network() as n:
        yield n


def test_a_different_historical_balance_is_wrong_state(net: StateNet) -> None:
    names = ("alpha", "bravo", "charlie", "rich-liar")
    target = net.target(*names, checks=RICH_ONLY, archive=("alpha", "bravo", "rich-liar"))
    results = run_checks(target, CHECKS_USED)
    assert (results["rich-liar"].error, results["rich-liar"].correct) == ("wrong_state", False)
    for name in ("alpha", "bravo", "charlie"):  # charlie is no archive node: never asked
        assert (results[name].ok, results[name].error) == (True, None), name
    for r in results.values():
        assert_consistent(r, target)


def test_storage_slot_and_balance_agree_on_honest_nodes(net: StateNet) -> None:
    target = net.target(
        "alpha", "bravo", "charlie", checks=ARCHIVE, archive=("alpha", "bravo", "charlie")
    )
    results = run_checks(target, CHECKS_USED)
    assert all((r.ok, r.error) == (True, None) for r in results.values())


def test_an_archive_node_without_the_state_is_unavailable_that_round(net: StateNet) -> None:
    target = net.target(
        "alpha",
        "bravo",
        "missing-trie",
        checks=RICH_ONLY,
        archive=("alpha", "bravo", "missing-trie"),
    )
    results = run_checks(target, CHECKS_USED)
    r = results["missing-trie"]
    assert (r.ok, r.error, r.correct) == (False, "rpc_error", None)


def test_not_run_without_configuration(net: StateNet) -> None:
    target = net.target("alpha", "rich-liar", checks={}, archive=("alpha", "rich-liar"))
    results = run_checks(target, CHECKS_USED)
    assert all(r.error is None for r in results.values())
