"""monitor.probe.rounds: turning observations into results, and one chain's failure contained."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from monitor.checks import old_block_hash
from monitor.checks.base import (
    ChainMemory,
    ChainRound,
    Check,
    CheckConfig,
    Observation,
    every_round,
)
from monitor.probe import rounds
from monitor.probe.targets import ChainTarget, EndpointTarget, Targets
from monitor.rpc import MAX_QUANTITY, RpcClient


def chain(chain_id: int, block_time_s: float = 12.0) -> ChainTarget:
    endpoint = EndpointTarget(endpoint_id=chain_id, operator_id="op", url="http://127.0.0.1:9/")
    return ChainTarget(
        chain_id=chain_id,
        name=f"c{chain_id}",
        block_time_s=block_time_s,
        confirmations=6,
        endpoints=[endpoint],
    )


def test_absurd_lag_keeps_blocks_and_drops_milliseconds() -> None:
    """Two endpoints claiming block 2**63-1 and one at 100: the lag in milliseconds would not fit
    a result; the result must still be valid, or the whole round would be lost."""
    target = chain(1)
    round_ = ChainRound(chain=target, observations=[])
    obs = Observation(
        target=target.endpoints[0],
        observed_at_ms=1,
        latency_us=5,
        head=100,
        reference_head=MAX_QUANTITY,
    )
    result = rounds.to_result(obs, round_)
    assert result.lag_blocks == MAX_QUANTITY - 100
    assert result.lag_ms is None


def test_a_failing_chain_does_not_cost_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    def checks_fail_on_chain_2(round_: ChainRound, config: CheckConfig, plan: Any, _: Any) -> None:
        if round_.chain.chain_id == 2:
            raise RuntimeError("a bug this chain's answers trigger")

    async def scenario() -> list[int]:
        rpc = RpcClient(timeout_s=1, max_response_bytes=1024)
        try:
            results = await rounds.run_round(
                Targets(chains=[chain(1), chain(2), chain(3)]),
                rpc=rpc,
                semaphore=asyncio.Semaphore(4),
                checks={"boom": Check(plan=every_round, judge=checks_fail_on_chain_2)},
            )
        finally:
            await rpc.aclose()
        return sorted(r.chain_id for r in results)

    assert asyncio.run(scenario()) == [1, 3]


def test_scheduled_checks_run_on_their_own_cadence() -> None:
    every_minute = Check(every_round, judges_nothing, config=old_block_hash.Config)
    target = chain(1).model_copy(update={"checks": {"every-minute": {"every_s": 60}}})
    memory = ChainMemory()
    due = [
        rounds.due_config("every-minute", every_minute, target, memory, now_s=t) is not None
        for t in (1000.0, 1010.0, 1059.0, 1060.5, 1070.0)
    ]
    assert due == [True, False, False, True, False]
    # Another chain (another memory) keeps its own schedule.
    assert rounds.due_config("every-minute", every_minute, target, ChainMemory(), 1010.0)


def test_checks_that_need_configuration_run_only_where_configured() -> None:
    needs_config = Check(every_round, judges_nothing, default_on=False)
    plain = chain(1)
    configured = plain.model_copy(update={"checks": {"opt-in": {}}})
    assert rounds.due_config("opt-in", needs_config, plain, ChainMemory(), 0.0) is None
    assert rounds.due_config("opt-in", needs_config, configured, ChainMemory(), 0.0) is not None


def test_an_opt_in_check_keeps_its_cadence_and_is_not_scheduled_where_absent() -> None:
    scheduled_opt_in = Check(
        every_round, judges_nothing, config=old_block_hash.Config, default_on=False
    )
    memory = ChainMemory()
    assert rounds.due_config("opt-in", scheduled_opt_in, chain(1), memory, 0.0) is None
    assert "opt-in" not in memory.last_run_s  # never ran: a later section runs at once
    configured = chain(1).model_copy(update={"checks": {"opt-in": {"every_s": 60}}})
    due = [
        rounds.due_config("opt-in", scheduled_opt_in, configured, memory, now_s=t)
        for t in (100.0, 130.0, 161.0)
    ]
    assert [config is not None for config in due] == [True, False, True]
    assert isinstance(due[0], old_block_hash.Config) and due[0].every_s == 60


def test_a_configuration_the_probe_cannot_read_skips_only_that_check() -> None:
    target = chain(1).model_copy(update={"checks": {"x": {"every_s": "often"}}})
    check = Check(every_round, judges_nothing, config=old_block_hash.Config)
    assert rounds.due_config("x", check, target, ChainMemory(), 0.0) is None


def judges_nothing(round_: ChainRound, config: CheckConfig, plan: Any, replies: Any) -> None:
    return None
