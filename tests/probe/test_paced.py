"""Paced rounds (monitor.probe.paced) driven by hand: samples in, judged rounds out.

The checks' calls go to a stand-in (``Node``): pure logic under test, with the time passed in.
The paced probe end to end, against real nodes and a real collector, is tests/e2e/test_precision.py
and the e2e tests that run ``monitor probe``."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from monitor.checks.base import Observation
from monitor.ingest.schemas import ProbeResult
from monitor.probe.paced import PacedRounds, RoundHeads
from monitor.probe.pulse import MISSED, HeadSample
from monitor.probe.rounds import CheckOutcomes
from monitor.probe.schedule import Schedule
from monitor.probe.targets import ChainTarget, EndpointTarget, Targets

INTERVAL_S = 1.0
SCHEDULE = Schedule(INTERVAL_S, bytes.fromhex("ab" * 20))
CHAIN = 7
HASH = "0x" + "11" * 32
OTHER = "0x" + "22" * 32


class Node:
    """What every endpoint answers: blocks with one hash at every height (``forks``: another),
    the chain id (``chains``: endpoint -> another), and a log of the calls."""

    def __init__(self) -> None:
        self.forks: set[int] = set()
        self.chains: dict[int, int] = {}
        self.hang: set[int] = set()
        self.calls: Counter[tuple[int, str]] = Counter()

    async def call(self, obs: Observation, method: str, params: list[Any]) -> Any:
        endpoint_id = obs.target.endpoint_id
        self.calls[(endpoint_id, method)] += 1
        if endpoint_id in self.hang:
            await asyncio.sleep(3600)
        if method == "eth_chainId":
            return hex(self.chains.get(endpoint_id, CHAIN))
        if method == "eth_getBlockByNumber":
            block_hash = OTHER if endpoint_id in self.forks else HASH
            return {"number": params[0], "hash": block_hash}
        if method == "eth_syncing":
            return False
        if method == "eth_getLogs":
            return []
        raise AssertionError(method)


def targets(n: int, checks: dict[str, Any] | None = None) -> Targets:
    endpoints = [
        EndpointTarget(endpoint_id=i, operator_id=f"op{i}", url=f"http://127.0.0.1:9/{i}")
        for i in range(1, n + 1)
    ]
    chain = ChainTarget(
        chain_id=CHAIN,
        name="c",
        block_time_s=1.0,
        confirmations=1,
        endpoints=endpoints,
        checks=checks or {},
    )
    return Targets(chains=[chain])


class Harness:
    def __init__(self, n: int = 4, checks: dict[str, Any] | None = None) -> None:
        self.node = Node()
        self.rounds: list[tuple[int, list[ProbeResult], CheckOutcomes, int]] = []
        self.paced = PacedRounds(
            schedule=SCHEDULE,
            call=self.node.call,
            concurrency=16,
            grace_s=2.0,
            on_round=lambda *r: self.rounds.append(r),
        )
        self.n = n
        self.paced.set_targets(targets(n, checks))

    async def visit_round(self, number: int, head: int, *, missed: tuple[int, ...] = ()) -> None:
        """Every endpoint's head call of round ``number`` at its slot, then a moment for the
        questions."""
        for at, endpoint_id in SCHEDULE.slots(number, range(1, self.n + 1)):
            if endpoint_id in missed:
                self.paced.take(HeadSample(number, endpoint_id, 0, None, MISSED, None, None))
            else:
                sent_ms = int(at * 1000)
                self.paced.take(HeadSample(number, endpoint_id, sent_ms, 900, None, None, head))
        await asyncio.sleep(0.01)

    def by_endpoint(self, i: int) -> dict[int, ProbeResult]:
        return {r.endpoint_id: r for r in self.rounds[i][1]}


def test_a_whole_round_is_judged_once_its_window_is_over() -> None:
    async def scenario() -> Harness:
        h = Harness()
        await h.visit_round(100, head=50)
        assert h.paced.close_due(SCHEDULE.start(100) + 0.5) == 0  # window still open
        assert h.paced.close_due(SCHEDULE.start(101)) == 1  # all in: at once
        # The first round has no reference yet: no check height asked, no scheduled check.
        assert {m for _, m in h.node.calls} <= {"eth_getBlockByNumber"}
        await h.visit_round(101, head=51)
        assert h.paced.close_due(SCHEDULE.start(102)) == 1
        return h

    h = asyncio.run(scenario())
    assert [n for n, *_ in h.rounds] == [100, 101]
    first, second = h.by_endpoint(0), h.by_endpoint(1)
    assert len(first) == len(second) == 4
    assert all(r.correct is None and r.check_height is None for r in first.values())
    assert all(r.latency_us == 900 for r in first.values())
    # Round 101 asked the block at the height the round opened with: 50 - 1 confirmation.
    assert {r.check_height for r in second.values()} == {49}
    assert all((r.correct, r.lag_blocks, r.error) == (True, 0, None) for r in second.values())


def test_missed_visits_are_counted_not_reported_and_do_not_hold_the_round() -> None:
    async def scenario() -> Harness:
        h = Harness()
        await h.visit_round(100, head=50, missed=(2,))
        assert h.paced.close_due(SCHEDULE.start(101)) == 1
        return h

    h = asyncio.run(scenario())
    number, results, _, missed = h.rounds[0]
    assert (number, missed) == (100, 1)
    assert sorted(r.endpoint_id for r in results) == [1, 3, 4]


def test_a_hung_question_holds_its_round_until_the_deadline_not_the_next_one() -> None:
    async def scenario() -> Harness:
        h = Harness()
        await h.visit_round(100, head=50)
        h.paced.close_due(SCHEDULE.start(101))
        h.node.hang.add(3)
        await h.visit_round(101, head=51)
        h.node.hang.clear()
        await h.visit_round(102, head=52)
        # 101 waits for endpoint 3's question; 102, complete, closes before it.
        assert h.paced.close_due(SCHEDULE.start(103)) == 1
        assert [n for n, *_ in h.rounds] == [100, 102]
        assert h.paced.close_due(SCHEDULE.start(102) + 2.0) == 1  # 101's deadline
        # A late sample of a judged round changes nothing.
        h.paced.take(HeadSample(101, 3, 0, 900, None, None, 51))
        assert h.paced.close_due(SCHEDULE.start(110)) == 0
        return h

    h = asyncio.run(scenario())
    assert [n for n, *_ in h.rounds] == [100, 102, 101]
    late = h.by_endpoint(2)
    assert late[3].correct is None  # its question never answered: unknown, not wrong
    assert all(late[i].correct is True for i in (1, 2, 4))


def test_a_fork_is_voted_wrong_and_a_wrong_chain_keeps_its_verdict_between_turns() -> None:
    async def scenario() -> Harness:
        h = Harness(n=5, checks={"chain_id": {"every_s": 2}})  # every other round
        h.node.forks.add(4)
        h.node.chains[5] = CHAIN + 1
        for number in range(100, 100 + 8):
            await h.visit_round(number, head=50 + number - 100)
            h.paced.close_due(SCHEDULE.start(number + 1))
        return h

    h = asyncio.run(scenario())
    assert len(h.rounds) == 8
    for i in range(1, 8):
        results = h.by_endpoint(i)
        assert (results[4].error, results[4].correct) == ("wrong_hash", False)
    # chain_id asks each endpoint every other round, at its own turn; its verdict holds in the
    # rounds between, in which the endpoint is asked nothing at all.
    assert 3 <= h.node.calls[(5, "eth_chainId")] <= 4
    verdicts = [h.by_endpoint(i)[5].error for i in range(1, 8)]
    first = verdicts.index("wrong_chain")
    assert first <= 1 and verdicts[first:] == ["wrong_chain"] * (7 - first)
    assert all(h.by_endpoint(i)[5].head is None for i in range(1 + first, 8))
    blocks = h.node.calls[(5, "eth_getBlockByNumber")]
    assert blocks < h.node.calls[(1, "eth_getBlockByNumber")] - 2


def test_each_endpoint_is_judged_against_the_heads_seen_up_to_its_own_visit() -> None:
    heads = RoundHeads(block_time_s=1.0, before={1: (0, 100), 2: (0, 100), 3: (0, 100)})
    # A block lands at 0.5 s: endpoint 1 is visited before it (100), 2 and 3 after it (101).
    heads.seen = [(400, 1, 100), (600, 2, 101), (800, 3, 101)]
    assert heads.references(frozenset()) == {1: 100, 2: 100, 3: 101}
    # Endpoint 1 was not behind when it answered; 2 was judged before a quorum had the block.
    without_3 = heads.references(frozenset({3}))
    assert (without_3[1], without_3[2]) == (100, 100)
