"""probe -> signed batch -> collector -> database -> scores and weights, over real loopback HTTP,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select

from monitor import simnet
from monitor.db.models import Batch, Result
from monitor.db.session import session_scope
from monitor.probe.agent import ProbeAgent
from monitor.probe.outbox import Outbox
from monitor.scoring.job import run_scoring
from monitor.serving import ServerThread
from monitor.settings import Settings
from tests.conftest import Network

ROUNDS = 4


async def probe_rounds(network: Network, settings: Settings, tmp_path: Path) -> list[int]:
    """Each probe runs ROUNDS rounds and delivers; returns the outbox depths afterwards."""
    agents = [
        ProbeAgent(
            settings=settings, account=account, outbox=Outbox(tmp_path / f"probe-{i}.outbox.sqlite")
        )
        for i, account in enumerate(network.probes)
    ]
    try:
        for _ in range(ROUNDS):
            await asyncio.gather(*(agent.round() for agent in agents))
            await asyncio.sleep(0.5)
        assert all([await agent.deliver_pending() for agent in agents])
        return [agent.outbox.depth() for agent in agents]
    finally:
        for agent in agents:
            await agent.aclose()
            agent.outbox.close()


def test_pipeline_ranks_operators(
    network: Network, collector: ServerThread, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"collector_urls": [collector.url]})
    depths = asyncio.run(probe_rounds(network, settings, tmp_path))
    assert depths == [0, 0, 0]

    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Batch)) == 3 * ROUNDS
        operators = len(simnet.DEMO_OPERATORS)
        assert session.scalar(select(func.count()).select_from(Result)) == 3 * ROUNDS * operators
    run_scoring(engine, settings)

    weights = httpx.get(f"{collector.url}/v1/weights", params={"chain_id": network.chain_id}).json()
    assert weights["total_bps"] == 10_000
    assert abs(sum(w["weight"] for w in weights["weights"]) - 1) < 1e-9
    by_operator = {w["operator_id"]: w["weight"] for w in weights["weights"]}
    assert by_operator["charlie"] == 0  # wrong fork
    assert by_operator["echo"] == 0  # invented head
    assert by_operator["alpha"] > by_operator["bravo"] > 0  # lagging
    assert by_operator["alpha"] > by_operator["delta"] > 0  # slow

    scores = httpx.get(f"{collector.url}/v1/scores", params={"chain_id": network.chain_id}).json()
    by_operator_scores = {s["operator_id"]: s for s in scores["scores"]}
    charlie = by_operator_scores["charlie"]
    assert charlie["status"] == "excluded"
    assert "incorrect" in charlie["reasons"] and "wrong_hash" in charlie["reasons"]
    echo = by_operator_scores["echo"]
    assert echo["status"] == "excluded" and "head_missing" in echo["reasons"]
    assert by_operator_scores["alpha"]["lag_blocks"] == 0  # echo's head never the reference
    assert by_operator_scores["bravo"]["lag_blocks"] >= 3
    assert by_operator_scores["delta"]["latency_p95_ms"] >= 300
    assert all(s["probes"] == 3 for s in scores["scores"])
    # No full URL (they carry API keys) on any public endpoint.
    for s in scores["scores"]:
        assert s["endpoint"] == network.sim.url
