"""The syncing check: a node whose eth_syncing says it is far behind is stale (syncing), one in
sync is clean, garbage is malformed, and a provider that disables the method is not judged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from monitor.checks.base import ChainMemory
from monitor.checks.registry import CHECKS
from monitor.probe.rounds import run_chain
from monitor.rpc import RpcClient
from tests.checks.test_head import ChecksNet, Node, assert_consistent, checks_network, run_checks

FAKE_NODES = {
    "behind": Node(syncing="behind"),
    "garbage": Node(syncing="garbage"),
    "unsupported": Node(syncing="unsupported"),
}


@pytest.fixture(scope="module")
def net() -> Iterator[ChecksNet]:
    with checks_network(FAKE_NODES, wait_blocks=1) as n:
        yield n


def test_syncing_states(net: ChecksNet) -> None:
    target = net.target("healthy-a", "healthy-b", "behind", "garbage", "unsupported")
    results = run_checks(target)
    behind = results["behind"]
    assert (behind.ok, behind.error) == (True, "syncing")
    assert behind.correct is not False  # stale, not wrong: its blocks still agree
    assert (results["garbage"].error, results["garbage"].correct) == ("malformed", False)
    for name in ("healthy-a", "healthy-b", "unsupported"):
        r = results[name]
        assert (r.ok, r.error, r.correct) == (True, None, True), name
    for r in results.values():
        assert_consistent(r, target)


def test_tolerance_and_cadence_come_from_the_registry(net: ChecksNet) -> None:
    lenient = {"syncing": {"tolerance_blocks": 1000}}
    target = net.target("healthy-a", "behind").model_copy(update={"checks": lenient})
    results = run_checks(target, {"head": CHECKS["head"], "syncing": CHECKS["syncing"]})
    assert results["behind"].error is None


def test_the_verdict_holds_between_runs(net: ChecksNet) -> None:
    target = net.target("healthy-a", "behind")  # every 30 s by default: once in two rounds
    checks = {"head": CHECKS["head"], "syncing": CHECKS["syncing"]}

    async def two_rounds() -> list[dict[str, str | None]]:
        memory = ChainMemory()
        out = []
        async with httpx.AsyncClient(timeout=10.0) as client:
            rpc = RpcClient(client, timeout_s=2.0, max_response_bytes=1 << 20)
            for _ in range(2):
                results = await run_chain(
                    target, rpc=rpc, semaphore=asyncio.Semaphore(4), checks=checks, memory=memory
                )
                out.append({r.operator_id: r.error for r in results})
        return out

    first, second = asyncio.run(two_rounds())
    assert first == second == {"healthy-a": None, "behind": "syncing"}
