"""The archive check on real anvil nodes: historical balance and storage of a configured address
are voted on across the archive endpoints only; a differing answer is wrong_state, a "missing trie
node" error is unavailability (when the others answered), too few agreeing answers no verdict."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.checks.logs import word
from monitor.checks.registry import CHECKS
from monitor.exceptions import RegistryError, RpcMalformed
from monitor.registry.schema import parse_registry
from tests.checks.anvil_state import (
    CANARY,
    HONEST,
    RICH,
    SLOT,
    STATE_BLOCK,
    StateNet,
    registry_yaml,
    state_network,
)
from tests.checks.test_head import assert_consistent, run_checks
from tests.support.anvil import anvil_available

pytestmark = pytest.mark.skipif(not anvil_available(), reason="anvil is not installed")

STORAGE = {"archive": {"every_s": 0, "address": CANARY, "block": STATE_BLOCK, "storage_slot": SLOT}}
BALANCE = {"archive": {"every_s": 0, "address": RICH, "block": STATE_BLOCK}}
WITH_HASH = {name: CHECKS[name] for name in ("chain_id", "head", "block_hash", "archive")}
ONLY_ARCHIVE = {name: CHECKS[name] for name in ("chain_id", "head", "archive")}


@pytest.fixture(scope="module")
def net() -> Iterator[StateNet]:
    with state_network() as n:
        yield n


def test_a_different_historical_balance_is_wrong_state(net: StateNet) -> None:
    # the front agrees on every block hash and lies about one balance
    names = (*HONEST, "rich-liar")
    target = net.target(*names, checks=BALANCE, archive=("alpha", "bravo", "rich-liar"))
    results = run_checks(target, WITH_HASH)
    assert (results["rich-liar"].error, results["rich-liar"].correct) == ("wrong_state", False)
    for name in HONEST:  # charlie is no archive node: never asked, judged by its hash alone
        assert (results[name].ok, results[name].error, results[name].correct) == (True, None, True)
    for r in results.values():
        assert_consistent(r, target)


def test_a_different_storage_word_is_wrong_state(net: StateNet) -> None:
    # delta's slot 0 of the canary held 8 where everyone else's held 7, since block 1
    assert int(net.nodes[3].rpc("eth_getStorageAt", CANARY, SLOT, hex(STATE_BLOCK)), 16) == 8
    target = net.target(*HONEST, "delta", checks=STORAGE, archive=(*HONEST, "delta"))
    results = run_checks(target, ONLY_ARCHIVE)
    assert (results["delta"].error, results["delta"].correct) == ("wrong_state", False)
    for name in HONEST:
        r = results[name]
        assert (r.ok, r.error, r.correct, r.check_height) == (True, None, None, STATE_BLOCK)
    for r in results.values():
        assert_consistent(r, target)


def test_an_archive_node_without_the_state_is_unavailable_that_round(net: StateNet) -> None:
    archive = ("alpha", "bravo", "missing-trie")
    target = net.target(*archive, checks=BALANCE, archive=archive)
    r = run_checks(target, WITH_HASH)["missing-trie"]
    assert (r.ok, r.error, r.correct) == (False, "rpc_error", None)
    assert_consistent(r, target)
    # no quorum answered (the block may be older than anyone keeps): nobody is judged
    target = net.target("alpha", "missing-trie", checks=BALANCE, archive=("alpha", "missing-trie"))
    results = run_checks(target, ONLY_ARCHIVE)
    assert all((r.ok, r.error) == (True, None) for r in results.values())


def test_one_against_one_is_unknown(net: StateNet) -> None:
    target = net.target("alpha", "rich-liar", checks=BALANCE, archive=("alpha", "rich-liar"))
    results = run_checks(target, ONLY_ARCHIVE)
    assert all((r.ok, r.error, r.correct) == (True, None, None) for r in results.values())


def test_full_nodes_are_not_asked(net: StateNet) -> None:
    # the liar is not marked archive: its lie is never asked for
    target = net.target(*HONEST, "rich-liar", checks=BALANCE, archive=HONEST)
    results = run_checks(target, ONLY_ARCHIVE)
    assert all((r.ok, r.error) == (True, None) for r in results.values())


def test_a_block_above_the_confirmed_height_is_skipped(net: StateNet) -> None:
    future = {"archive": {**BALANCE["archive"], "block": 10**6}}
    everyone = (*HONEST, "rich-liar")
    results = run_checks(net.target(*everyone, checks=future, archive=everyone), ONLY_ARCHIVE)
    assert all((r.ok, r.error) == (True, None) for r in results.values())


def test_not_run_without_configuration(net: StateNet) -> None:
    target = net.target("alpha", "rich-liar", checks={}, archive=("alpha", "rich-liar"))
    results = run_checks(target, WITH_HASH)
    assert all(r.error is None for r in results.values())


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"block": 1}, "archive.address: Field required"),
        ({"address": RICH}, "archive.block: Field required"),
        ({"address": RICH, "block": -1}, "archive.block"),
        ({"address": "0x00000000000000000000000000000000000A11ce", "block": 1}, "EIP-55"),
        ({"address": RICH, "block": 1, "storage_slot": "0x" + "0" * 65}, "archive.storage_slot"),
        ({"address": RICH, "block": 1, "storage_slot": "7"}, "archive.storage_slot"),
    ],
)
def test_registry_rejects_bad_options(section: dict[str, object], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry(registry_yaml({"archive": section}), source="registry.yaml")


def test_registry_keeps_good_options() -> None:
    section = {"address": RICH, "block": 12, "storage_slot": "0xA"}
    registry = parse_registry(registry_yaml({"archive": section}), source="registry.yaml")
    stored = registry.chains[0].checks["archive"]
    assert stored["storage_slot"] == "0x" + "0" * 63 + "a"  # 32 bytes: every client takes it
    assert stored["address"] == "0x00000000000000000000000000000000000A11cE"  # EIP-55
    assert (stored["block"], stored["every_s"]) == (12, 300)


def test_words_are_strict_256_bit_hex() -> None:
    assert word("0x" + "ff" * 32, "w") == 2**256 - 1
    assert word("0x0007", "w") == word("0x7", "w") == 7
    for bad in ("0x", "0x1_0", "0x1 ", " 0x1", "0x" + "1" * 65, "7", 7, None):
        with pytest.raises(RpcMalformed):
            word(bad, "w")
