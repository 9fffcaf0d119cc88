"""One round: every chain's endpoints through every check, then one result per endpoint."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping

from pydantic import ValidationError

from monitor.checks.base import ChainMemory, ChainRound, Check, CheckConfig, Observation
from monitor.checks.registry import CHECKS
from monitor.ingest.schemas import ProbeResult
from monitor.probe.targets import ChainTarget, Targets
from monitor.rpc import MAX_QUANTITY, RpcClient

log = logging.getLogger("monitor.probe")


def due_config(
    name: str, check: Check, chain: ChainTarget, memory: ChainMemory, now_s: float
) -> CheckConfig | None:
    """The check's configuration for this chain if it is to run this round, else None."""
    section = chain.checks.get(name)
    if section is None and not check.default_on:
        return None
    try:
        config = check.config.model_validate(section or {})
    except ValidationError as exc:  # the collector validated it; a newer one may know more
        log.warning("chain %s: check %s skipped, bad configuration: %s", chain.chain_id, name, exc)
        return None
    every_s = getattr(config, "every_s", 0)
    last = memory.last_run_s.get(name)
    if every_s and last is not None and now_s - last < every_s:
        return None
    memory.last_run_s[name] = now_s
    return config


def carry_verdicts(round_: ChainRound, verdicts: dict[int, str]) -> None:
    """A scheduled check that did not run this round: its last stale verdicts still hold."""
    for obs in round_.observations:
        verdict = verdicts.get(obs.target.endpoint_id)
        if verdict is not None and obs.ok and obs.error is None:
            obs.error = verdict


# What one check run made of an endpoint it examined (monitor_probe_checks_total's outcome).
CHECK_OUTCOMES = ("ok", "unavailable", "incorrect", "stale")
CheckOutcomes = Counter[tuple[str, str]]  # (check name, outcome) -> endpoints


def check_outcome(obs: Observation, error_before: str | None) -> str:
    """The verdict of the check that just ran on an endpoint that was usable before it."""
    if not obs.ok:
        return "unavailable"
    if obs.correct is False:
        return "incorrect"
    if obs.error != error_before:  # a stale verdict: syncing, stalled
        return "stale"
    return "ok"


async def run_check(
    name: str,
    check: Check,
    config: CheckConfig,
    round_: ChainRound,
    outcomes: CheckOutcomes | None,
) -> None:
    """Run one check; with ``outcomes``, tally its verdict on each endpoint it could examine."""
    examined = [(obs, obs.error) for obs in round_.usable()]
    await check.fn(round_, config)
    if outcomes is not None:
        for obs, error_before in examined:
            outcomes[(name, check_outcome(obs, error_before))] += 1


async def run_chain(
    chain: ChainTarget,
    *,
    rpc: RpcClient,
    semaphore: asyncio.Semaphore,
    checks: Mapping[str, Check] = CHECKS,
    memory: ChainMemory | None = None,
    outcomes: CheckOutcomes | None = None,
) -> list[ProbeResult]:
    started_ms = time.time_ns() // 1_000_000
    round_ = ChainRound(
        chain=chain,
        rpc=rpc,
        semaphore=semaphore,
        observations=[Observation(target=t, observed_at_ms=started_ms) for t in chain.endpoints],
        memory=memory if memory is not None else ChainMemory(),
    )
    now_s = time.monotonic()
    for name, check in checks.items():
        config = due_config(name, check, chain, round_.memory, now_s)
        if config is not None:
            await run_check(name, check, config, round_, outcomes)
        else:
            carry_verdicts(round_, round_.memory.verdicts.get(name, {}))
    round_.memory.reference_head = round_.reference_head
    return [to_result(obs, round_) for obs in round_.observations]


async def run_round(
    targets: Targets,
    *,
    rpc: RpcClient,
    semaphore: asyncio.Semaphore,
    checks: Mapping[str, Check] = CHECKS,
    memory: dict[int, ChainMemory] | None = None,
    outcomes: CheckOutcomes | None = None,
) -> list[ProbeResult]:
    """``memory`` (chain id -> ChainMemory) carries cadence and head history across rounds;
    ``outcomes``, when given, tallies each check's verdicts (see :func:`run_check`)."""
    memory = memory if memory is not None else {}
    per_chain = await asyncio.gather(
        *(
            run_chain(
                chain,
                rpc=rpc,
                semaphore=semaphore,
                checks=checks,
                memory=memory.setdefault(chain.chain_id, ChainMemory()),
                outcomes=outcomes,
            )
            for chain in targets.chains
        ),
        return_exceptions=True,
    )
    results: list[ProbeResult] = []
    for chain, outcome in zip(targets.chains, per_chain, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):  # cancellation and the like: not ours
                raise outcome
            # A bug one chain's answers trigger must not cost every other chain its round.
            log.error("chain %s: round failed", chain.chain_id, exc_info=outcome)
            continue
        results.extend(outcome)
    return results


def to_result(obs: Observation, round_: ChainRound) -> ProbeResult:
    reference = round_.reference_head
    lag_blocks = None
    if obs.ok and obs.head is not None and reference is not None:
        lag_blocks = max(0, reference - obs.head)
    lag_ms = None if lag_blocks is None else round(lag_blocks * round_.chain.block_time_s * 1000)
    if lag_ms is not None and lag_ms > MAX_QUANTITY:  # an absurd head: lag in blocks still says it
        lag_ms = None
    return ProbeResult(
        endpoint_id=obs.target.endpoint_id,
        operator_id=obs.target.operator_id,
        chain_id=round_.chain.chain_id,
        observed_at_ms=obs.observed_at_ms,
        ok=obs.ok,
        error=obs.error,  # type: ignore[arg-type]
        latency_us=obs.latency_us if obs.ok else None,
        head=obs.head,
        reference_head=reference,
        lag_blocks=lag_blocks,
        lag_ms=lag_ms,
        check_height=round_.check_height,
        block_hash=obs.block_hash,
        correct=obs.correct if obs.ok else None,
    )
