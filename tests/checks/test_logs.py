"""The logs check on real anvil nodes: a "wrong empty" eth_getLogs answer is wrong_logs, honest
ones agree, an answer over the size cap is not judged, and two answers are no majority."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.checks.logs import logs_digest
from monitor.checks.registry import CHECKS
from monitor.exceptions import RpcMalformed
from tests.checks.anvil_state import STATE_BLOCK, StateNet, state_network
from tests.checks.test_head import assert_consistent, run_checks
from tests.support.anvil import anvil_available

pytestmark = pytest.mark.skipif(not anvil_available(), reason="anvil is not installed")

LOGS = {"logs": {"every_s": 0, "range_blocks": 2}}


@pytest.fixture(scope="module")
def net() -> Iterator[StateNet]:
    with state_network() as n:
        yield n


def test_wrong_empty_logs_are_found_out(net: StateNet) -> None:
    logs = net.nodes[0].rpc("eth_getLogs", {"fromBlock": hex(STATE_BLOCK), "toBlock": "0x1"})
    assert len(logs) == 1  # there is a log to miss
    target = net.target("alpha", "bravo", "charlie", "empty-logs", checks=LOGS)
    results = run_checks(target)
    assert (results["empty-logs"].error, results["empty-logs"].correct) == ("wrong_logs", False)
    for name in ("alpha", "bravo", "charlie"):
        r = results[name]
        assert (r.ok, r.error, r.correct, r.check_height) == (True, None, True, STATE_BLOCK)
    for r in results.values():
        assert_consistent(r, target)


def test_an_oversized_answer_is_not_judged(net: StateNet) -> None:
    results = run_checks(net.target("alpha", "bravo", "huge-logs", checks=LOGS))
    assert (results["huge-logs"].ok, results["huge-logs"].error) == (True, None)
    assert results["huge-logs"].correct is True  # the block hash still agrees


def test_one_against_one_is_unknown(net: StateNet) -> None:
    checks = {name: CHECKS[name] for name in ("head", "logs")}
    results = run_checks(net.target("alpha", "empty-logs", checks=LOGS), checks)
    assert all(r.error is None and r.correct is None for r in results.values())


def test_digest_is_canonical_and_strict() -> None:
    log = {
        "blockHash": "0x" + "AB" * 32,
        "blockNumber": "0x1",
        "transactionHash": "0x" + "cd" * 32,
        "logIndex": "0x0",
        "address": "0x" + "EF" * 20,
        "topics": [],
        "data": "0x",
    }
    lower = {**log, "blockHash": "0x" + "ab" * 32, "address": "0x" + "ef" * 20}
    assert logs_digest([log]) == logs_digest([lower])  # hex case carries no meaning
    assert logs_digest([]) != logs_digest([log])
    for bad in ({}, [1], [{**log, "topics": "x"}], [{**log, "data": "zz"}]):
        with pytest.raises(RpcMalformed):
            logs_digest(bad)
