"""Rounds: what a chain's observations go through, and the one-shot round.

The pieces both kinds of round share: which checks are due (:func:`due_config`), a head call's
sample made an ``Observation``, a check's judgement in its turn with its verdicts tallied
(:func:`judge_in_turn`), verdicts carried between a scheduled check's runs, and the result each
observation becomes.

A **one-shot round** (:func:`run_chain`, :func:`run_round`; ``ProbeAgent.round``) makes every
endpoint's head call at once, then each check in registry order asks every endpoint and judges:
a round on demand, as tests and a first look at a network need. ``monitor probe`` runs **paced
rounds** instead (monitor.probe.paced): the same checks and verdicts, with every call spread
over the interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping

from pydantic import ValidationError

from monitor.checks.base import (
    Call,
    ChainMemory,
    ChainRound,
    Check,
    CheckConfig,
    Observation,
    Plan,
    ask_one,
    judge_check,
)
from monitor.checks.registry import CHECKS
from monitor.exceptions import RpcError
from monitor.ingest.schemas import INCORRECT_ERRORS, ProbeResult
from monitor.probe.pulse import HeadSample, measure_head
from monitor.probe.targets import ChainTarget, EndpointTarget, Targets
from monitor.rpc import MAX_QUANTITY, RpcClient

log = logging.getLogger("monitor.probe")


def chain_config(name: str, check: Check, chain: ChainTarget) -> CheckConfig | None:
    """The check's configuration for this chain, or None where it does not run at all."""
    section = chain.checks.get(name)
    if section is None and not check.default_on:
        return None
    try:
        return check.config.model_validate(section or {})
    except ValidationError as exc:  # the collector validated it; a newer one may know more
        log.warning("chain %s: check %s skipped, bad configuration: %s", chain.chain_id, name, exc)
        return None


def due_config(
    name: str, check: Check, chain: ChainTarget, memory: ChainMemory, now_s: float
) -> CheckConfig | None:
    """The check's configuration for this chain if it is to run this round, else None."""
    config = chain_config(name, check, chain)
    if config is None:
        return None
    every_s = getattr(config, "every_s", 0)
    last = memory.last_run_s.get(name)
    if every_s and last is not None and now_s - last < every_s:
        return None
    memory.last_run_s[name] = now_s
    return config


def plan_if_due(
    name: str, check: Check, round_: ChainRound, now_s: float
) -> tuple[CheckConfig | None, Plan | None]:
    """(config, plan): config None when the check is not due this round; plan None when it is
    but has nothing to ask (no reference yet): then its cadence is left as it was, so that it
    runs as soon as it can."""
    memory = round_.memory
    before = memory.last_run_s.get(name)
    config = due_config(name, check, round_.chain, memory, now_s)
    if config is None:
        return None, None
    plan = check.plan(round_, config)
    if plan is None:
        if before is None:
            memory.last_run_s.pop(name, None)
        else:
            memory.last_run_s[name] = before
    return config, plan


def carry_verdicts(round_: ChainRound, verdicts: dict[int, str]) -> None:
    """A scheduled check that did not run this round: its last verdicts still hold (a stale
    error on an endpoint with none, an incorrect one on an endpoint still usable)."""
    for obs in round_.observations:
        verdict = verdicts.get(obs.target.endpoint_id)
        if verdict is None:
            continue
        if verdict in INCORRECT_ERRORS:
            if obs.usable:
                obs.mark_incorrect(verdict)
        elif obs.ok and obs.error is None:
            obs.error = verdict


def observation(sample: HeadSample, target: EndpointTarget) -> Observation:
    """What a head call found: the endpoint's head, or why there is none."""
    obs = Observation(target=target, observed_at_ms=sample.sent_ms)
    if sample.kind is not None:
        obs.fail(RpcError(sample.message or sample.kind, kind=sample.kind))
    else:
        obs.latency_us, obs.head = sample.latency_us, sample.head
    return obs


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


def judge_in_turn(
    name: str,
    check: Check,
    round_: ChainRound,
    config: CheckConfig,
    plan: Plan,
    outcomes: CheckOutcomes | None,
) -> None:
    """The check's verdicts; with ``outcomes``, tallied on each endpoint it could examine."""
    examined = [(obs, obs.error) for obs in round_.usable()]
    judge_check(name, check, round_, config, plan)
    if outcomes is not None:
        for obs, error_before in examined:
            outcomes[(name, check_outcome(obs, error_before))] += 1


def rpc_call(rpc: RpcClient, semaphore: asyncio.Semaphore) -> Call:
    """The checks' (untimed) calls: through ``rpc``, at most ``semaphore``'s worth at once."""

    async def call(obs: Observation, method: str, params: list[object]) -> object:
        async with semaphore:
            result, _ = await rpc.call(obs.target.url, method, list(params))
        return result

    return call


async def run_chain(
    chain: ChainTarget,
    *,
    rpc: RpcClient,
    semaphore: asyncio.Semaphore,
    checks: Mapping[str, Check] = CHECKS,
    memory: ChainMemory | None = None,
    outcomes: CheckOutcomes | None = None,
) -> list[ProbeResult]:
    """One one-shot round of ``chain``: every head at once, then each check in turn."""

    async def head(target: EndpointTarget) -> Observation:
        if "head" not in checks:  # the timed head call is the head check's question
            return Observation(target=target, observed_at_ms=time.time_ns() // 1_000_000)
        async with semaphore:
            return observation(await measure_head(rpc, target.url, target.endpoint_id, 0), target)

    round_ = ChainRound(
        chain=chain,
        observations=list(await asyncio.gather(*(head(t) for t in chain.endpoints))),
        memory=memory if memory is not None else ChainMemory(),
    )
    call = rpc_call(rpc, semaphore)
    now_s = time.monotonic()
    for name, check in checks.items():
        round_.basis = round_.reference_head  # this round's own, as the checks before made it
        config, plan = plan_if_due(name, check, round_, now_s)
        if config is None:
            carry_verdicts(round_, round_.memory.verdicts.get(name, {}))
            continue
        if plan is None:
            continue
        await asyncio.gather(
            *(ask_one(name, check, round_, plan, call, obs) for obs in round_.usable())
        )
        judge_in_turn(name, check, round_, config, plan, outcomes)
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
    ``outcomes``, when given, tallies each check's verdicts (see :func:`judge_in_turn`)."""
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
    # An endpoint of another chain: its head and latency say nothing of this one.
    other_chain = obs.error == "wrong_chain"
    head = None if other_chain else obs.head
    reference = obs.reference_head
    lag_blocks = None
    if obs.ok and head is not None and reference is not None:
        lag_blocks = max(0, reference - head)
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
        latency_us=obs.latency_us if obs.ok and not other_chain else None,
        head=head,
        reference_head=reference,
        lag_blocks=lag_blocks,
        lag_ms=lag_ms,
        check_height=round_.check_height,
        block_hash=obs.block_hash,
        correct=obs.correct if obs.ok else None,
    )
