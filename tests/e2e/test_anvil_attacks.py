"""Operators that lie about the head, on REAL Ethereum nodes (anvil), judged end to end.

Three honest operators are three anvil nodes kept on one chain by the ``ChainDriver``. The liars
are a loopback JSON-RPC front (``LyingFront``) that forwards every call to one of those real
nodes and lies in exactly one way, so everything but the lie is real chain data:

- ``ahead``: claims a head 1000 blocks above the chain (far beyond the head_ahead allowance);
- ``phantom``: claims a head 3 blocks above the chain, within the allowance; the node it fronts
  has no such block, so asking it for the block it claims finds it out (``head_missing``);
- ``backwards``: honest for the first rounds, then reports a head 12 blocks lower than before;
- ``syncing``: an honest head, but ``eth_syncing`` says it is still syncing.

Three in-process probes check all seven endpoints, sign and deliver to the real collector;
scoring is driven by hand and read back from /v1/scores. What must hold: the reference head
every probe uses is the honest chain's head throughout (no lie moves it, up or down), the honest
operators share the weight evenly, and each liar is flagged with its own reason and gets no
weight (``backwards``: its lag is its own, excluded once beyond the lag limit).

SQLite only, like tests/e2e/test_anvil_scenarios.py, whose harness this reuses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from monitor.db.session import session_scope
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.serving import ServerThread
from monitor.settings import Settings
from tests.e2e.test_anvil_scenarios import (
    BLOCK_TIME_S,
    CHAIN_ID,
    CONFIRMATIONS,
    paced_rounds,
    probes,
    results_of,
    running,
)
from tests.support.anvil import (
    AnvilNode,
    ChainDriver,
    anvil_available,
    anvil_nodes,
    write_registry,
)

if not anvil_available():
    pytest.skip(
        "anvil is not installed at tools/node_modules (run `make test`, which installs it)",
        allow_module_level=True,
    )

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

HONEST = ("alpha", "bravo", "charlie")
LIES = ("ahead", "phantom", "backwards", "syncing")
AHEAD_BY = 1000
PHANTOM_BY = 3
BACKWARDS_BY = 12
HONEST_ROUNDS = 2
LYING_ROUNDS = 4


class LyingFront(ServerThread):
    """``POST /{lie}`` forwards to ``upstream`` (a real anvil node) and lies one way."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.backwards = False  # flipped by the test: from then on that endpoint goes back
        super().__init__(
            Starlette(routes=[Route("/{lie}", self._rpc, methods=["POST"])]), name="lying-front"
        )

    async def _rpc(self, request: Request) -> Response:
        lie = request.path_params["lie"]
        payload = json.loads(await request.body())
        async with httpx.AsyncClient(timeout=5.0) as client:
            answer = (await client.post(self.upstream, json=payload)).json()
        method = payload.get("method")
        # The head a probe reads: eth_blockNumber, or the number of the "latest" block.
        latest = method == "eth_getBlockByNumber" and payload.get("params", [])[:1] == ["latest"]
        if (method == "eth_blockNumber" or latest) and answer.get("result") is not None:
            head = int(answer["result"]["number"] if latest else answer["result"], 16)
            if lie == "ahead":
                head += AHEAD_BY
            elif lie == "phantom":
                head += PHANTOM_BY
            elif lie == "backwards" and self.backwards:
                head -= BACKWARDS_BY
            if latest:
                answer["result"]["number"] = hex(head)
            else:
                answer["result"] = hex(head)
        elif method == "eth_syncing" and lie == "syncing":
            answer = {
                "jsonrpc": "2.0",
                "id": payload.get("id"),
                "result": {"startingBlock": "0x0", "currentBlock": "0x10", "highestBlock": "0x99"},
            }
        return JSONResponse(answer)


@pytest.fixture
def chain() -> Iterator[tuple[list[AnvilNode], ChainDriver, LyingFront]]:
    with anvil_nodes(*(AnvilNode(n) for n in HONEST)) as nodes:
        driver = ChainDriver(nodes, block_time_s=BLOCK_TIME_S)
        with LyingFront(nodes[0].url) as front:
            assert isinstance(front, LyingFront)
            yield nodes, driver, front


def test_lying_heads_never_move_the_reference_and_get_no_weight(
    chain: tuple[list[AnvilNode], ChainDriver, LyingFront],
    engine: Engine,
    collector: ServerThread,
    settings: Settings,
    tmp_path: Path,
) -> None:
    nodes, driver, front = chain
    accounts = [Account.create() for _ in range(3)]
    operators = {node.name: node.url for node in nodes} | {
        lie: f"{front.url}/{lie}" for lie in LIES
    }
    registry = write_registry(
        tmp_path / "registry.yaml",
        operators,
        [a.address for a in accounts],
        chain_id=CHAIN_ID,
        block_time_s=BLOCK_TIME_S,
        confirmations=CONFIRMATIONS,
        chain_options={"checks": {"syncing": {"every_s": 0}}},
    )
    with session_scope(engine) as session:
        apply_registry(session, registry=load_registry(registry))

    async def scenario() -> dict[str, dict[str, Any]]:
        async with probes(
            accounts, engine=engine, settings=settings, collector=collector, tmp_path=tmp_path
        ) as harness:
            async for _ in paced_rounds(harness, driver, HONEST_ROUNDS):
                pass
            front.backwards = True
            async for _ in paced_rounds(harness, driver, LYING_ROUNDS):
                pass
            return harness.scores()

    with running(driver, warmup_blocks=CONFIRMATIONS + 2):
        scores = asyncio.run(scenario())

    # The reference held: in every batch (one probe, one round) it is at most the highest real
    # head reported in that round (the honest nodes', and the syncing front's, which is real).
    rows = {op: results_of(engine, op) for op in operators}
    real_heads: dict[int, list[int]] = {}
    for operator in (*HONEST, "syncing"):
        assert len(rows[operator]) == 3 * (HONEST_ROUNDS + LYING_ROUNDS)
        for r in rows[operator]:
            assert r.head is not None
            real_heads.setdefault(r.batch_id, []).append(r.head)
    for operator, results in rows.items():
        for r in results:
            highest = max(real_heads[r.batch_id])
            assert r.reference_head is not None and highest - 1 <= r.reference_head <= highest, (
                operator,
                r.reference_head,
                real_heads[r.batch_id],
            )
    for operator in HONEST:
        # A block can land between two endpoints' answers: lag 1 then, never more.
        seen = [(r.head, r.reference_head, r.lag_blocks, r.correct) for r in rows[operator]]
        assert all(r.lag_blocks in (0, 1) and r.correct is True for r in rows[operator]), seen

    weights = {op: s["weight"] for op, s in scores.items()}
    honest = [weights[op] for op in HONEST]
    # Honest operators share the weight, not exactly equally: a block landing between two
    # endpoints' answers gives the one asked first lag 1 in that round, and on a loaded machine
    # that can be 2 of its last 3 checks, the median the lag factor reads (seen once in CI:
    # 0.23 against 0.385). Every liar is at 0 (below).
    assert min(honest) > 0.5 * max(honest), weights
    assert sum(honest) == pytest.approx(1.0), weights  # every liar at 0
    for operator in HONEST:
        assert scores[operator]["status"] == "ok", scores[operator]

    assert {r.error for r in rows["ahead"]} == {"head_ahead"}
    assert "head_ahead" in scores["ahead"]["reasons"]
    assert {r.error for r in rows["phantom"]} == {"head_missing"}
    assert "head_missing" in scores["phantom"]["reasons"]
    for lie in ("ahead", "phantom"):
        assert scores[lie]["status"] == "excluded" and "incorrect" in scores[lie]["reasons"]

    back = rows["backwards"]
    assert {r.lag_blocks for r in back[-3 * LYING_ROUNDS :]} >= {BACKWARDS_BY}, back
    assert scores["backwards"]["status"] == "excluded", scores["backwards"]
    assert "lag_exceeded" in scores["backwards"]["reasons"]

    assert {r.error for r in rows["syncing"]} == {"syncing"}
    assert scores["syncing"]["status"] == "excluded", scores["syncing"]
    assert "syncing" in scores["syncing"]["reasons"]
