"""eth_blockNumber: each endpoint's head and latency, then the round's reference head.

The reference is a height enough endpoints reach (monitor.probe.consensus), so one operator that
claims a huge head cannot make the honest ones look lagging; such a head is incorrect.
"""

from __future__ import annotations

from monitor.checks.base import ChainRound, CheckConfig, Observation, for_each
from monitor.probe.consensus import head_ahead_tolerance, reference_head
from monitor.rpc import parse_quantity


async def check(round_: ChainRound, config: CheckConfig) -> None:
    async def one(obs: Observation) -> None:
        try:
            result, latency_us = await round_.call(obs, "eth_blockNumber", [])
        finally:  # also when it failed: the observation is of that moment
            obs.observed_at_ms = obs.sent_at_ms or obs.observed_at_ms
        obs.latency_us = latency_us
        obs.head = parse_quantity(result, "eth_blockNumber")

    await for_each(round_, one)
    answered = [obs for obs in round_.usable() if obs.head is not None]
    reference = reference_head([obs.head for obs in answered if obs.head is not None])
    round_.reference_head = reference
    if reference is None:
        return
    tolerance = head_ahead_tolerance(round_.chain.confirmations, round_.chain.block_time_s)
    for obs in answered:
        if obs.head is not None and obs.head > reference + tolerance:
            obs.mark_incorrect("head_ahead")
