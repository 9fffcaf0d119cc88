"""The stalled check: a head that stops moving while the chain moves on is flagged after the
allowance, from the probe's memory of earlier rounds; moving again clears it at once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from monitor.checks import stalled
from monitor.checks.base import ChainMemory, ChainRound, Observation, Replies
from monitor.checks.registry import CHECKS
from monitor.probe.targets import ChainTarget, EndpointTarget
from tests.checks.test_head import BLOCK_TIME_S, ChecksNet, Node, checks_network, run_rounds

NO_REPLIES = Replies(answers={}, refused={}, asked=frozenset())
FAKE_NODES = {
    "frozen": Node(frozen=True),
    "frozen-b": Node(frozen=True),
    "moving": Node(),  # stands in for "frozen" once its operator has fixed it
}
CHECKS_USED = {"head": CHECKS["head"], "stalled": CHECKS["stalled"]}
ONE_BLOCK_TIME = {"stalled": {"block_times": 1, "min_s": 0}}  # allowance: 0.5 s
PAUSE_S = 2 * BLOCK_TIME_S  # beyond the allowance above, far within the default one (30 s)


@pytest.fixture(scope="module")
def net() -> Iterator[ChecksNet]:
    with checks_network(FAKE_NODES, wait_blocks=1) as n:
        yield n


def with_allowance(target: ChainTarget) -> ChainTarget:
    return target.model_copy(update={"checks": ONE_BLOCK_TIME})


def test_frozen_head_is_stalled_after_the_allowance_and_clear_once_it_moves(
    net: ChecksNet,
) -> None:
    frozen = with_allowance(net.target("healthy-a", "healthy-b", "frozen"))
    # The same endpoint (id 3) in the third round, now following the chain again.
    fixed = with_allowance(net.target("healthy-a", "healthy-b", "moving"))
    first, second, third = run_rounds([frozen, frozen, fixed], CHECKS_USED, pause_s=PAUSE_S)
    assert first["frozen"].error is None  # first sight: nothing to compare with yet
    assert second["frozen"].error == "stalled"
    assert second["frozen"].ok is True and second["frozen"].correct is None  # stale, not wrong
    assert second["frozen"].lag_blocks is not None and second["frozen"].lag_blocks >= 2
    assert all(second[n].error is None for n in ("healthy-a", "healthy-b"))
    moving = third["moving"]
    assert (moving.endpoint_id, moving.error, moving.lag_blocks) == (3, None, 0)


def test_not_stalled_within_the_allowance(net: ChecksNet) -> None:
    target = net.target("healthy-a", "healthy-b", "frozen")  # defaults: at least 30 s
    started = time.monotonic()
    results = run_rounds([target, target], CHECKS_USED, pause_s=PAUSE_S)
    assert time.monotonic() - started < 30
    assert all(r["frozen"].error is None for r in results)


def test_a_halted_chain_flags_no_one(net: ChecksNet) -> None:
    # Every endpoint frozen at the same height: the reference is not above anyone's head.
    target = with_allowance(net.target("frozen", "frozen-b"))
    results = run_rounds([target, target], CHECKS_USED, pause_s=PAUSE_S)
    for r in results[1].values():
        assert (r.ok, r.error, r.lag_blocks) == (True, None, 0)


def test_endpoints_no_longer_listed_are_forgotten(net: ChecksNet) -> None:
    memory = ChainMemory()
    three = net.target("healthy-a", "healthy-b", "frozen")
    run_rounds([three, net.target("healthy-a", "healthy-b")], CHECKS_USED, memory=memory)
    assert set(memory.heads) == {1, 2}


def test_an_earlier_error_is_kept_and_an_unreachable_endpoint_keeps_its_history() -> None:
    # No network needed: the check makes no calls, it reads the observations and its memory.
    target = ChainTarget(
        chain_id=1,
        name="c",
        block_time_s=1.0,
        confirmations=1,
        endpoints=[
            EndpointTarget(endpoint_id=i, operator_id=f"op{i}", url="http://127.0.0.1:9/")
            for i in (1, 2)
        ],
    )
    long_ago = time.monotonic() - 3600
    memory = ChainMemory(heads={1: (50, long_ago), 2: (50, long_ago)})
    syncing = Observation(
        target=target.endpoints[0], observed_at_ms=1, head=50, error="syncing", reference_head=100
    )
    down = Observation(target=target.endpoints[1], observed_at_ms=1, ok=False, error="timeout")
    round_ = ChainRound(chain=target, observations=[syncing, down], memory=memory)
    stalled.judge(round_, stalled.Config(), True, NO_REPLIES)
    assert (syncing.error, down.error) == ("syncing", "timeout")
    assert memory.heads == {1: (50, long_ago), 2: (50, long_ago)}
