"""The eth_call canary on real anvil nodes: the same call at the confirmed height must give the
same answer everywhere; a differing answer is wrong_call, a non-hex one malformed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.checks.registry import CHECKS
from tests.checks.anvil_state import CANARY, StateNet, state_network
from tests.checks.test_head import assert_consistent, run_checks
from tests.support.anvil import anvil_available

pytestmark = pytest.mark.skipif(not anvil_available(), reason="anvil is not installed")

CALL = {"call": {"every_s": 0, "to": CANARY, "data": "0x"}}
CHECKS_USED = {name: CHECKS[name] for name in ("chain_id", "head", "block_hash", "call")}


@pytest.fixture(scope="module")
def net() -> Iterator[StateNet]:
    with state_network() as n:
        yield n


def test_the_canary_answers_42_and_a_liar_is_wrong_call(net: StateNet) -> None:
    assert int(net.nodes[0].rpc("eth_call", {"to": CANARY, "data": "0x"}, "latest"), 16) == 42
    names = ("alpha", "bravo", "charlie", "call-liar", "call-garbage")
    target = net.target(*names, checks=CALL)
    results = run_checks(target, CHECKS_USED)
    assert (results["call-liar"].error, results["call-liar"].correct) == ("wrong_call", False)
    assert (results["call-garbage"].error, results["call-garbage"].correct) == ("malformed", False)
    for name in ("alpha", "bravo", "charlie"):
        assert (results[name].ok, results[name].error) == (True, None), name
    for r in results.values():
        assert_consistent(r, target)
