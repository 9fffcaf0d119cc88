"""The logs check on real anvil nodes: a "wrong empty" eth_getLogs answer and the logs of another
chain are wrong_logs, honest answers agree, an answer over the size cap is not judged, a JSON-RPC
error counts only against a majority, and too few agreeing answers are no verdict."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.checks.logs import Config, logs_digest
from monitor.checks.registry import CHECKS
from monitor.exceptions import RegistryError, RpcMalformed
from monitor.registry.schema import parse_registry
from tests.checks.anvil_state import (
    HONEST,
    RICH,
    STATE_BLOCK,
    StateNet,
    registry_yaml,
    state_network,
)
from tests.checks.test_head import assert_consistent, run_checks
from tests.support.anvil import anvil_available

pytestmark = pytest.mark.skipif(not anvil_available(), reason="anvil is not installed")

LOGS = {"logs": {"every_s": 0, "range_blocks": 2}}
ONLY_LOGS = {name: CHECKS[name] for name in ("chain_id", "head", "logs")}


@pytest.fixture(scope="module")
def net() -> Iterator[StateNet]:
    with state_network() as n:
        yield n


def test_wrong_empty_logs_are_found_out(net: StateNet) -> None:
    logs = net.nodes[0].rpc("eth_getLogs", {"fromBlock": hex(STATE_BLOCK), "toBlock": "0x1"})
    assert len(logs) == 1  # there is a log to miss
    target = net.target(*HONEST, "empty-logs", checks=LOGS)
    results = run_checks(target)
    assert (results["empty-logs"].error, results["empty-logs"].correct) == ("wrong_logs", False)
    for name in HONEST:
        r = results[name]
        assert (r.ok, r.error, r.correct, r.check_height) == (True, None, True, STATE_BLOCK)
    for r in results.values():
        assert_consistent(r, target)


def test_the_logs_of_another_chain_are_wrong_logs(net: StateNet) -> None:
    # delta's block 1 holds the same transaction and log, in a block with another hash
    target = net.target(*HONEST, "delta", checks=LOGS)
    results = run_checks(target, ONLY_LOGS)
    assert (results["delta"].error, results["delta"].correct) == ("wrong_logs", False)
    for name in HONEST:  # agreeing is not proof: only block_hash says "correct"
        r = results[name]
        assert (r.ok, r.error, r.correct, r.check_height) == (True, None, None, STATE_BLOCK)
    for r in results.values():
        assert_consistent(r, target)


def test_an_address_filter_narrows_the_query(net: StateNet) -> None:
    assert Config.model_validate({"address": net.emitter.lower()}).address == net.emitter
    emitter = {"logs": {"every_s": 0, "address": net.emitter, "topics": []}}
    results = run_checks(net.target(*HONEST, "empty-logs", checks=emitter), ONLY_LOGS)
    assert results["empty-logs"].error == "wrong_logs"
    assert all(results[name].error is None for name in HONEST)
    # where there are no logs, an empty answer is the truth: nothing to catch
    quiet = {"logs": {"every_s": 0, "address": RICH}}
    results = run_checks(net.target(*HONEST, "empty-logs", checks=quiet), ONLY_LOGS)
    assert all((r.ok, r.error) == (True, None) for r in results.values())


def test_an_oversized_answer_is_not_judged(net: StateNet) -> None:
    target = net.target("alpha", "bravo", "huge-logs", checks=LOGS)
    results = run_checks(target)
    r = results["huge-logs"]
    assert (r.ok, r.error, r.correct) == (True, None, True)  # the block hash still agrees
    for r in results.values():
        assert_consistent(r, target)


def test_too_few_agreeing_answers_are_unknown(net: StateNet) -> None:
    one_against_one = net.target("alpha", "empty-logs", checks=LOGS)
    alone = net.target("empty-logs", checks=LOGS)
    two_of_quorum_three = net.target("alpha", "bravo", "empty-logs", checks=LOGS, quorum=3)
    for target in (one_against_one, alone, two_of_quorum_three):
        results = run_checks(target, ONLY_LOGS)
        assert all((r.ok, r.error, r.correct) == (True, None, None) for r in results.values())


def test_an_error_answer_counts_only_against_a_majority(net: StateNet) -> None:
    target = net.target("alpha", "bravo", "logs-error", checks=LOGS)
    r = run_checks(target, ONLY_LOGS)["logs-error"]
    assert (r.ok, r.error, r.correct) == (False, "rpc_error", None)
    assert_consistent(r, target)
    # with no quorum answering, the question may be at fault: nobody is judged
    results = run_checks(net.target("alpha", "logs-error", checks=LOGS), ONLY_LOGS)
    assert all((r.ok, r.error) == (True, None) for r in results.values())


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"range_blocks": 0}, "logs.range_blocks"),
        ({"range_blocks": 101}, "logs.range_blocks"),
        ({"address": "0x00000000000000000000000000000000000A11ce"}, "EIP-55"),
        ({"address": "0x1234"}, "logs.address"),
        ({"topics": ["0x12"]}, "logs.topics"),
        ({"topics": [None] * 5}, "logs.topics"),
        ({"ranges": 2}, "logs.ranges"),
    ],
)
def test_registry_rejects_bad_options(section: dict[str, object], field: str) -> None:
    with pytest.raises(RegistryError, match=field):
        parse_registry(registry_yaml({"logs": section}), source="registry.yaml")


def test_registry_keeps_good_options() -> None:
    topic = "0x" + "ab" * 32
    section = {"range_blocks": 5, "topics": [topic, None, [topic, topic]]}
    registry = parse_registry(registry_yaml({"logs": section}), source="registry.yaml")
    stored = registry.chains[0].checks["logs"]
    assert (stored["range_blocks"], stored["topics"], stored["every_s"]) == (
        5,
        section["topics"],
        60,
    )


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
    lower = {**log, "blockHash": "0x" + "ab" * 32, "address": "0x" + "ef" * 20, "removed": False}
    second = {**log, "logIndex": "0x1", "data": "0x01"}
    assert logs_digest([log]) == logs_digest([lower])  # hex case and `removed` carry no meaning
    assert logs_digest([log, second]) == logs_digest([second, log])  # nor does the order
    assert logs_digest([]) != logs_digest([log])
    assert logs_digest([log]) != logs_digest([{**log, "data": "0x00"}])
    bad_logs = [
        {**log, "topics": "x"},
        {**log, "topics": ["0x" + "00" * 32] * 5},
        {**log, "data": "zz"},
        {**log, "data": "0x1"},
        {**log, "data": "0x00 "},
        {**log, "address": "0x1234"},
        {**log, "blockNumber": 1},
    ]
    for bad in ({}, [1], *([b] for b in bad_logs)):
        with pytest.raises(RpcMalformed):
            logs_digest(bad)
