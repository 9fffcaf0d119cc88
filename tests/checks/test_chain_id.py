"""The chain_id check through run_chain: an endpoint on another chain is incorrect and takes no
part in the head or hash votes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.checks.registry import CHECKS
from tests.checks.test_head import (
    CONFIRMATIONS,
    LEAD,
    ChecksNet,
    Node,
    assert_consistent,
    checks_network,
    run_checks,
)

FAKE_NODES = {
    # Other chains that claim a head far ahead: if they voted, they would set the reference.
    "other-liar-a": Node(chain_id_offset=7, head_lead=LEAD),
    "other-liar-b": Node(chain_id_offset=7, head_lead=LEAD),
    "hung": Node(hang=True),
}


@pytest.fixture(scope="module")
def net() -> Iterator[ChecksNet]:
    # Let the fork diverge at the check height, for the hash-vote test.
    with checks_network(FAKE_NODES, wait_blocks=CONFIRMATIONS + 2) as n:
        yield n


def test_chain_id_check_alone(net: ChecksNet) -> None:
    target = net.target("healthy-a", "slow", "wrongchain", "other-liar-a", "malformed", "down")
    results = run_checks(target, {"chain_id": CHECKS["chain_id"]})
    for name in ("healthy-a", "slow"):
        r = results[name]
        # A right chain id is necessary, not sufficient: correctness stays unknown.
        assert (r.ok, r.error, r.correct) == (True, None, None), name
    for name in ("wrongchain", "other-liar-a"):
        r = results[name]
        assert (r.ok, r.error, r.correct) == (True, "wrong_chain", False), name
    malformed = results["malformed"]  # not JSON at all for eth_chainId
    assert (malformed.ok, malformed.error, malformed.correct) == (True, "malformed", False)
    down = results["down"]
    assert (down.ok, down.error, down.correct) == (False, "http_status", None)
    for r in results.values():
        assert (r.head, r.reference_head, r.check_height, r.block_hash) == (None, None, None, None)
        assert_consistent(r, target)


def test_wrong_chain_is_excluded_from_head_vote(net: ChecksNet) -> None:
    target = net.target("healthy-a", "healthy-b", "other-liar-a", "other-liar-b", "wrongchain")
    before = net.chain.height()
    results = run_checks(target)
    after = net.chain.height()
    for name in ("other-liar-a", "other-liar-b", "wrongchain"):
        r = results[name]
        assert (r.ok, r.error, r.correct) == (True, "wrong_chain", False), name
        assert (r.head, r.block_hash, r.lag_blocks, r.latency_us) == (None, None, None, None)
    reference = results["healthy-a"].reference_head
    assert reference is not None and before <= reference <= after
    for name in ("healthy-a", "healthy-b"):
        assert (results[name].error, results[name].correct) == (None, True), name
    for r in results.values():
        assert_consistent(r, target)


def test_wrong_chain_is_excluded_from_hash_vote(net: ChecksNet) -> None:
    # wrongchain (simnet) serves the canonical hashes: were it counted, healthy-a + wrongchain
    # would outvote the fork. Without it, one against one: nothing is canonical.
    target = net.target("healthy-a", "fork", "wrongchain")
    results = run_checks(target)
    assert results["wrongchain"].error == "wrong_chain"
    healthy, fork = results["healthy-a"], results["fork"]
    assert healthy.check_height is not None and healthy.check_height > net.start_height
    assert healthy.block_hash is not None and fork.block_hash is not None
    assert healthy.block_hash != fork.block_hash
    assert (healthy.correct, healthy.error) == (None, None)
    assert (fork.correct, fork.error) == (None, None)


def test_hung_endpoint_times_out_at_chain_id(net: ChecksNet) -> None:
    results = run_checks(net.target("healthy-a", "healthy-b", "hung"), timeout_s=0.3)
    hung = results["hung"]
    assert (hung.ok, hung.error, hung.correct, hung.head) == (False, "timeout", None, None)
    assert results["healthy-a"].correct is True and results["healthy-b"].correct is True
