"""Faults of real Ethereum nodes (anvil), seen through the whole pipeline: three probes
(``ProbeAgent`` in-process, each with its own key) -> the real collector over loopback -> scoring
(``run_scoring``) -> ``/v1/scores`` and ``/v1/weights``.

The honest nodes are kept on one chain by ``ChainDriver`` (identical blocks, one a second). The
registry is written by hand: chain 31337, 1 s blocks, 3 confirmations, SLA p95 250 ms and 2 blocks
of lag, one operator per node or proxy.

- A hung operator (SIGSTOP) is unavailable (``timeout``) and costs the probe's round one
  timeout, not more, and nothing to the others' latencies; after SIGCONT it is back to ok results
  and a weight near the others'.
- An operator behind a 300 ms delay proxy, in front of the same node as a direct operator (so
  both are equally fresh by construction), ranks below it, and the latency measured is the
  injected 300 ms within 10 %.

SQLite only: what is under test is the probe's behaviour against real nodes and what scoring
makes of it, which the database does not change; the pipeline on PostgreSQL is covered by
tests/e2e/test_pipeline.py, and a second run of these scenarios would double their ~15 s of wall
clock, which is mostly rounds waiting for blocks and timeouts.

The collector's windows are ``3s`` (the default one, which /v1/weights serves) and ``5m``: scoring
with ``as_of`` at the end of a phase that lasted longer than 3 s scores that phase alone.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select

from monitor.db.models import Batch, Result
from monitor.db.session import session_scope
from monitor.probe.agent import ProbeAgent
from monitor.probe.outbox import Outbox
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.scoring.job import run_scoring
from monitor.serving import ServerThread
from monitor.settings import Settings
from tests.conftest import make_settings
from tests.support.anvil import (
    AnvilNode,
    ChainDriver,
    anvil_available,
    anvil_nodes,
    write_registry,
)
from tests.support.proxy import FaultProxy

if not anvil_available():
    pytest.skip(
        "anvil is not installed in tools/node_modules (`make test` installs it with npm ci)",
        allow_module_level=True,
    )

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

CHAIN_ID = 31337
RPC_TIMEOUT_S = 1.0
WINDOW_S = 3  # the short window: one phase of a scenario
PHASE_S = WINDOW_S + 0.3  # a phase lasts at least this long, so a window holds only that phase
MAX_PHASE_ROUNDS = 12  # bound on any phase's loop
DELAY_S = 0.3
RECOVERY_S = 2.0  # the ramp back after an exclusion, shorter than a phase
WARMUP_BLOCKS = 8  # above the 3 confirmations, so block hashes are judged from the first round


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Overrides conftest's: a 1 s RPC timeout, and a 3 s window next to 5 min."""
    return make_settings(
        database_url, interval_s=1.0, rpc_timeout_s=RPC_TIMEOUT_S, windows=[f"{WINDOW_S}s", "5m"]
    )


def apply_hand_registry(
    engine: Engine, path: Path, operators: dict[str, str], probes: list[LocalAccount]
) -> None:
    # Recovery after an exclusion ramps over recovery_s (60 s by default): one short phase here.
    write_registry(
        path,
        operators,
        [a.address for a in probes],
        chain_id=CHAIN_ID,
        chain_options={"scoring": {"recovery_s": RECOVERY_S}},
    )
    with session_scope(engine) as session:
        apply_registry(session, registry=load_registry(path))


class Probes:
    """Three in-process probes, each with its own key and outbox."""

    def __init__(self, settings: Settings, tmp_path: Path, accounts: list[LocalAccount]) -> None:
        self.agents = [
            ProbeAgent(
                settings=settings,
                account=account,
                outbox=Outbox(tmp_path / f"probe-{i}.outbox.sqlite"),
            )
            for i, account in enumerate(accounts)
        ]

    async def start(self) -> None:
        assert all(await asyncio.gather(*(a.refresh_targets() for a in self.agents)))

    async def round(self) -> list[tuple[str, float]]:
        """One round of every probe at once: (batch id, seconds the round took) per probe."""

        async def timed(agent: ProbeAgent) -> tuple[str, float]:
            started = time.perf_counter()
            batch_id = await agent.round()
            assert batch_id is not None
            return batch_id, time.perf_counter() - started

        return list(await asyncio.gather(*(timed(a) for a in self.agents)))

    async def phase(self, *, min_s: float, pause_s: float = 0.4) -> list[tuple[str, float]]:
        """Rounds (with a pause between) until ``min_s`` has passed, at most MAX_PHASE_ROUNDS."""
        started = time.monotonic()
        rounds: list[tuple[str, float]] = []
        for _ in range(MAX_PHASE_ROUNDS):
            rounds += await self.round()
            if time.monotonic() - started >= min_s:
                return rounds
            await asyncio.sleep(pause_s)
        raise AssertionError(f"a phase of {min_s} s took more than {MAX_PHASE_ROUNDS} rounds")

    async def deliver(self) -> None:
        assert all([await a.deliver_pending() for a in self.agents])
        assert [a.outbox.depth() for a in self.agents] == [0, 0, 0]

    async def aclose(self) -> None:
        for agent in self.agents:
            await agent.aclose()
            agent.outbox.close()


def results_of(engine: Engine, rounds: list[tuple[str, float]]) -> list[dict[str, Any]]:
    batch_ids = [batch_id for batch_id, _ in rounds]
    with session_scope(engine) as session:
        rows = session.execute(
            select(Result.operator_id, Result.ok, Result.error, Result.latency_ms, Result.correct)
            .join(Batch, Result.batch_id == Batch.id)
            .where(Batch.batch_id.in_(batch_ids))
        ).all()
    assert rows, "no results stored for these rounds"
    return [row._asdict() for row in rows]


def of(results: list[dict[str, Any]], operator: str) -> list[dict[str, Any]]:
    return [r for r in results if r["operator_id"] == operator]


def scores(
    engine: Engine, settings: Settings, collector: ServerThread, *, as_of: float, window: str
) -> dict[str, dict[str, Any]]:
    """Score every window as of ``as_of`` (epoch seconds) and read /v1/scores for ``window``,
    checking that /v1/weights agrees with it when ``window`` is the default one."""
    run_scoring(engine, settings, as_of=datetime.fromtimestamp(as_of, UTC))
    params: dict[str, Any] = {"chain_id": CHAIN_ID, "window": window}
    body = httpx.get(f"{collector.url}/v1/scores", params=params, timeout=10).json()
    by_operator = {s["operator_id"]: s for s in body["scores"]}
    if window == settings.windows[0]:
        weights = httpx.get(
            f"{collector.url}/v1/weights", params={"chain_id": CHAIN_ID}, timeout=10
        ).json()
        assert {w["operator_id"]: w["weight"] for w in weights["weights"]} == {
            op: s["weight"] for op, s in by_operator.items()
        }
    return by_operator


def wait_answering(node: AnvilNode, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            node.rpc("eth_chainId", timeout=0.5)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- Scenario 4: a hung operator ---------------------------------------------------------------


def test_hung_operator_is_unavailable_costs_one_timeout_and_recovers(
    collector: ServerThread, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"collector_urls": [collector.url]})
    accounts = [Account.create() for _ in range(3)]
    nodes = [AnvilNode(name, log_dir=tmp_path) for name in ("alpha", "bravo", "hung")]
    with anvil_nodes(*nodes) as (alpha, bravo, hung):
        driver = ChainDriver([alpha, bravo, hung], block_time_s=1.0).start(
            warmup_blocks=WARMUP_BLOCKS
        )
        try:
            apply_hand_registry(
                engine,
                tmp_path / "registry.yaml",
                {"alpha": alpha.url, "bravo": bravo.url, "hung": hung.url},
                accounts,
            )
            asyncio.run(
                _hung_scenario(settings, collector, engine, tmp_path, accounts, hung, driver)
            )
        finally:
            driver.stop()


async def _hung_scenario(
    settings: Settings,
    collector: ServerThread,
    engine: Engine,
    tmp_path: Path,
    accounts: list[LocalAccount],
    hung: AnvilNode,
    driver: ChainDriver,
) -> None:
    probes = Probes(settings, tmp_path, accounts)
    try:
        await probes.start()
        # Healthy: every operator ok, rounds quick.
        healthy = [await probes.round() for _ in range(2)]
        healthy_rounds = [r for rounds in healthy for r in rounds]
        assert max(seconds for _, seconds in healthy_rounds) < 0.5
        await probes.deliver()
        assert all(r["ok"] and r["correct"] for r in results_of(engine, healthy_rounds))

        # Hung: SIGSTOP. The kernel still accepts connections, nothing answers.
        hung.pause()
        hung_rounds = await probes.phase(min_s=PHASE_S)
        hung_end = time.time()
        await probes.deliver()
        round_times = [seconds for _, seconds in hung_rounds]
        # One timeout per round (eth_chainId), then the hung endpoint is skipped: never more.
        assert min(round_times) >= RPC_TIMEOUT_S * 0.95, round_times
        assert max(round_times) < RPC_TIMEOUT_S + 0.5, round_times
        results = results_of(engine, hung_rounds)
        assert len(of(results, "hung")) == len(hung_rounds)  # one per probe and round
        assert all(
            (r["ok"], r["error"], r["latency_ms"]) == (False, "timeout", None)
            for r in of(results, "hung")
        )
        others = of(results, "alpha") + of(results, "bravo")
        assert all(r["ok"] and r["correct"] and r["error"] is None for r in others)
        assert max(r["latency_ms"] for r in others) < 100, [r["latency_ms"] for r in others]

        during = scores(engine, settings, collector, as_of=hung_end, window=f"{WINDOW_S}s")
        assert during["hung"]["status"] == "excluded"
        assert during["hung"]["availability"] == 0
        assert during["hung"]["reasons"][:1] == ["unavailable"]
        assert "timeout" in during["hung"]["reasons"]
        assert during["hung"]["weight"] == 0 and during["hung"]["weight_bps"] == 0
        assert during["alpha"]["status"] == during["bravo"]["status"] == "ok"
        assert during["alpha"]["weight"] == pytest.approx(0.5, abs=0.05)

        # Recovered: SIGCONT, then the driver catches the node up if it stopped following it
        # (its mining call to the hung node times out after 5 s; SIGCONT before that lets the
        # call through and the driver never lets go).
        hung.resume_process()
        wait_answering(hung)
        if not driver.following[hung.name]:
            driver.resume(hung)
        recovered_rounds = await probes.phase(min_s=PHASE_S)
        await probes.deliver()
        assert driver.following[hung.name]
        assert max(seconds for _, seconds in recovered_rounds) < 0.5
        results = results_of(engine, recovered_rounds)
        assert all(r["ok"] and r["error"] is None for r in results), results
        assert all(r["correct"] for r in of(results, "hung"))  # same chain, same hashes
        assert max(r["latency_ms"] for r in results) < 100

        # First the ramp (hysteresis after an exclusion), then its full weight.
        after = scores(engine, settings, collector, as_of=time.time(), window=f"{WINDOW_S}s")
        assert after["hung"]["status"] == "recovering" and after["hung"]["weight"] == 0
        assert after["alpha"]["status"] == after["bravo"]["status"] == "ok"
        await probes.phase(min_s=RECOVERY_S + 0.5)
        await probes.deliver()
        after = scores(engine, settings, collector, as_of=time.time(), window=f"{WINDOW_S}s")
        assert {s["status"] for s in after.values()} == {"ok"}
        assert after["hung"]["availability"] == 1
        weights = {op: s["weight"] for op, s in after.items()}
        # Its share, within the factor 2 a block landing between answers can cost anyone on a
        # loaded machine (lag 1 in 2 of the last 3 checks; test_anvil_scenarios says more).
        assert weights["hung"] >= 0.5 * max(weights["alpha"], weights["bravo"]), weights

        # Over five minutes the hang is remembered: the hung operator ranks last.
        whole = scores(engine, settings, collector, as_of=time.time(), window="5m")
        assert whole["hung"]["errors"] == {"timeout": len(hung_rounds)}
        assert 0 < whole["hung"]["weight"] < min(whole["alpha"]["weight"], whole["bravo"]["weight"])
    finally:
        await probes.aclose()


# -- Scenario 5: a slow operator ---------------------------------------------------------------


def test_slow_operator_ranks_below_equally_fresh_fast_one(
    collector: ServerThread, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"collector_urls": [collector.url]})
    accounts = [Account.create() for _ in range(3)]
    with anvil_nodes(AnvilNode("node", log_dir=tmp_path)) as (node,):
        driver = ChainDriver([node], block_time_s=1.0).start(warmup_blocks=WARMUP_BLOCKS)
        try:
            with FaultProxy(node.url, delay_s=DELAY_S, name="slow-proxy") as proxy:
                # One node behind both operators: equally fresh by construction.
                apply_hand_registry(
                    engine,
                    tmp_path / "registry.yaml",
                    {"fast": node.url, "slow": proxy.url},
                    accounts,
                )
                rounds = asyncio.run(_slow_rounds(settings, tmp_path, accounts, n=4))
                assert proxy.stats.dropped == 0
                # Every call of every round to "slow" went through the proxy: 2 per round
                # (the head block, the confirmed block), in each probe's first round the
                # scheduled checks (chain id, syncing, an old block, logs) once, and its head
                # block when a block landed between the two heads and it was the one ahead.
                expected = 2 * len(rounds) + 4 * len(accounts)
                assert expected <= proxy.stats.forwarded <= expected + len(rounds)
        finally:
            driver.stop()

    # The checks run one after another, each waiting for the slow node: 2 delays a round, 6 in
    # a probe's first (the scheduled checks run then too), one more when a block lands between
    # the two heads and the slow node is the one ahead (head_exists asks it for its block).
    assert all(2 * DELAY_S <= seconds < 7 * DELAY_S + 0.3 for _, seconds in rounds), rounds
    results = results_of(engine, rounds)
    slow_latencies = [r["latency_ms"] for r in of(results, "slow")]
    fast_latencies = [r["latency_ms"] for r in of(results, "fast")]
    assert len(slow_latencies) == len(fast_latencies) == len(rounds)
    low, high = 0.9 * DELAY_S * 1000, 1.1 * DELAY_S * 1000  # within 10 % of the delay
    # Never under the delay (it is slept before forwarding); over it by the node's millisecond
    # and the proxy's hop. The median is within 10 %; single samples may carry a scheduling
    # hiccup of the host (seen: 3 of 12 at 331-351 ms on a shared 2-core machine during a full
    # CI run), which is not what is under test: the probe measures the delay, not the host.
    assert min(slow_latencies) >= low, slow_latencies
    assert low <= statistics.median(slow_latencies) <= high, slow_latencies
    assert sum(low <= ms <= 1.25 * high for ms in slow_latencies) >= 0.9 * len(slow_latencies), (
        slow_latencies
    )
    assert statistics.median(fast_latencies) < 30 and max(fast_latencies) < 100, fast_latencies
    assert all(r["ok"] and r["correct"] for r in results)

    by_operator = scores(engine, settings, collector, as_of=time.time(), window="5m")
    slow, fast = by_operator["slow"], by_operator["fast"]
    assert low <= slow["latency_p50_ms"] <= high, slow
    assert slow["latency_p95_ms"] >= low, slow
    assert fast["latency_p50_ms"] < 30, fast
    # Equally fresh and correct: latency is the only difference, and it decides the rank.
    assert slow["lag_blocks"] == fast["lag_blocks"] == 0
    assert slow["availability"] == fast["availability"] == 1
    assert slow["correctness"] == fast["correctness"] == 1
    assert slow["status"] == fast["status"] == "ok"
    assert slow["score"] == pytest.approx(250 / (250 + slow["latency_p95_ms"]), rel=1e-3)
    assert fast["score"] == pytest.approx(250 / (250 + fast["latency_p95_ms"]), rel=1e-3)
    assert fast["weight"] > slow["weight"] > 0
    assert fast["weight_bps"] + slow["weight_bps"] == 10_000
    assert slow["weight"] == pytest.approx(0.31, abs=0.03)  # 0.45 / (0.45 + 0.99)


async def _slow_rounds(
    settings: Settings, tmp_path: Path, accounts: list[LocalAccount], *, n: int
) -> list[tuple[str, float]]:
    probes = Probes(settings, tmp_path, accounts)
    try:
        await probes.start()
        rounds: list[tuple[str, float]] = []
        for _ in range(n):
            rounds += await probes.round()
            await asyncio.sleep(0.1)
        await probes.deliver()
        return rounds
    finally:
        await probes.aclose()
