"""The eth_call canary on real anvil nodes: the same call at the confirmed height must give the
same answer everywhere; a differing answer is wrong_call, a non-hex one malformed, an error one
unavailable (when the others answered); a call that reverts everywhere judges nobody."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.checks.registry import CHECKS
from monitor.exceptions import RegistryError
from monitor.registry.schema import parse_registry
from tests.checks.anvil_state import (
    CANARY,
    HONEST,
    REVERTER,
    STATE_BLOCK,
    StateNet,
    registry_yaml,
    state_network,
)
from tests.checks.test_head import assert_consistent, run_checks
from tests.support.anvil import anvil_available

pytestmark = pytest.mark.skipif(not anvil_available(), reason="anvil is not installed")

CALL = {"call": {"every_s": 0, "to": CANARY, "data": "0x"}}
WITH_HASH = {name: CHECKS[name] for name in ("chain_id", "head", "block_hash", "call")}
ONLY_CALL = {name: CHECKS[name] for name in ("chain_id", "head", "call")}


@pytest.fixture(scope="module")
def net() -> Iterator[StateNet]:
    with state_network() as n:
        yield n


def test_the_canary_answers_42_and_a_liar_is_wrong_call(net: StateNet) -> None:
    assert int(net.nodes[0].rpc("eth_call", {"to": CANARY, "data": "0x"}, "latest"), 16) == 42
    names = (*HONEST, "call-liar", "call-garbage")
    target = net.target(*names, checks=CALL)
    results = run_checks(target, WITH_HASH)
    assert (results["call-liar"].error, results["call-liar"].correct) == ("wrong_call", False)
    assert (results["call-garbage"].error, results["call-garbage"].correct) == ("malformed", False)
    for name in HONEST:
        assert (results[name].ok, results[name].error, results[name].correct) == (True, None, True)
    for r in results.values():
        assert_consistent(r, target)


def test_another_contract_state_is_wrong_call(net: StateNet) -> None:
    # delta's canary has answered 43 since block 1
    target = net.target(*HONEST, "delta", checks=CALL)
    results = run_checks(target, ONLY_CALL)
    assert (results["delta"].error, results["delta"].correct) == ("wrong_call", False)
    for name in HONEST:
        r = results[name]
        assert (r.ok, r.error, r.correct, r.check_height) == (True, None, None, STATE_BLOCK)
    for r in results.values():
        assert_consistent(r, target)


def test_too_few_agreeing_answers_are_unknown(net: StateNet) -> None:
    for target in (
        net.target("alpha", "call-liar", checks=CALL),
        net.target("alpha", "bravo", "call-liar", checks=CALL, quorum=3),
    ):
        results = run_checks(target, ONLY_CALL)
        assert all((r.ok, r.error, r.correct) == (True, None, None) for r in results.values())


def test_an_error_answer_counts_only_against_a_majority(net: StateNet) -> None:
    target = net.target("alpha", "bravo", "call-error", checks=CALL)
    r = run_checks(target, ONLY_CALL)["call-error"]
    assert (r.ok, r.error, r.correct) == (False, "rpc_error", None)
    assert_consistent(r, target)


def test_a_canary_that_reverts_everywhere_judges_nobody(net: StateNet) -> None:
    reverting = {"call": {"every_s": 0, "to": REVERTER}}
    results = run_checks(net.target(*HONEST, checks=reverting), WITH_HASH)
    assert all((r.ok, r.error, r.correct) == (True, None, True) for r in results.values())


def test_not_run_without_configuration(net: StateNet) -> None:
    results = run_checks(net.target("alpha", "bravo", "call-liar", checks={}), ONLY_CALL)
    assert all(r.error is None for r in results.values())


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"data": "0x"}, "call.to: Field required"),
        ({"to": "0x00000000000000000000000000000000000000C0DE"}, "call.to"),
        ({"to": CANARY, "data": "0x123"}, "call.data"),
        ({"to": CANARY, "data": "18160ddd"}, "call.data"),
        ({"to": CANARY, "block": "latest"}, "call.block"),
    ],
)
def test_registry_rejects_bad_options(section: dict[str, object], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry(registry_yaml({"call": section}), source="registry.yaml")


def test_registry_keeps_good_options() -> None:
    section = {"to": CANARY, "data": "0x18160ddd"}
    registry = parse_registry(registry_yaml({"call": section}), source="registry.yaml")
    stored = registry.chains[0].checks["call"]
    assert (stored["data"], stored["block"], stored["every_s"]) == ("0x18160ddd", "confirmed", 60)
