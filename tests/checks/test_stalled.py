"""The stalled check: a head that stops moving while the chain moves on is flagged after the
allowance, from the probe's memory of earlier rounds; moving again clears it at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from monitor.checks.base import ChainMemory
from monitor.checks.registry import CHECKS
from monitor.ingest.schemas import ProbeResult
from monitor.probe.rounds import run_chain
from monitor.probe.targets import ChainTarget
from monitor.rpc import RpcClient
from tests.checks.test_head import BLOCK_TIME_S, ChecksNet, Node, checks_network

FAKE_NODES = {"frozen": Node(frozen=True)}
CHECKS_USED = {"head": CHECKS["head"], "stalled": CHECKS["stalled"]}


@pytest.fixture(scope="module")
def net() -> Iterator[ChecksNet]:
    with checks_network(FAKE_NODES, wait_blocks=1) as n:
        yield n


def rounds(target: ChainTarget, count: int, pause_s: float) -> list[dict[str, ProbeResult]]:
    """``count`` rounds sharing one ChainMemory, ``pause_s`` apart."""

    async def run() -> list[dict[str, ProbeResult]]:
        memory = ChainMemory()
        out = []
        async with httpx.AsyncClient(timeout=10.0) as client:
            rpc = RpcClient(client, timeout_s=2.0, max_response_bytes=1 << 20)
            for i in range(count):
                if i:
                    await asyncio.sleep(pause_s)
                results = await run_chain(
                    target,
                    rpc=rpc,
                    semaphore=asyncio.Semaphore(8),
                    checks=CHECKS_USED,
                    memory=memory,
                )
                out.append({r.operator_id: r for r in results})
        return out

    return asyncio.run(run())


def test_frozen_head_is_stalled_after_the_allowance(net: ChecksNet) -> None:
    allowance = {"stalled": {"block_times": 1, "min_s": 0}}  # one block time: 0.5 s
    target = net.target("healthy-a", "healthy-b", "frozen").model_copy(update={"checks": allowance})
    first, second = rounds(target, 2, pause_s=3 * BLOCK_TIME_S)
    assert first["frozen"].error is None  # first sight: nothing to compare with yet
    assert second["frozen"].error == "stalled"
    assert second["frozen"].ok is True and second["frozen"].correct is None  # stale, not wrong
    assert second["frozen"].lag_blocks is not None and second["frozen"].lag_blocks >= 2
    assert all(second[n].error is None for n in ("healthy-a", "healthy-b"))


def test_not_stalled_within_the_allowance(net: ChecksNet) -> None:
    target = net.target("healthy-a", "healthy-b", "frozen")  # defaults: at least 30 s
    started = time.monotonic()
    results = rounds(target, 2, pause_s=2 * BLOCK_TIME_S)
    assert time.monotonic() - started < 30
    assert all(r["frozen"].error is None for r in results)
