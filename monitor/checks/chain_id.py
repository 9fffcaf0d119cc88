"""eth_chainId: an endpoint serving another chain is incorrect, whatever else it answers."""

from __future__ import annotations

from monitor.checks.base import ChainRound, CheckConfig, Observation, for_each
from monitor.rpc import parse_quantity


async def check(round_: ChainRound, config: CheckConfig) -> None:
    async def one(obs: Observation) -> None:
        result, _ = await round_.call(obs, "eth_chainId", [])
        if parse_quantity(result, "eth_chainId") != round_.chain.chain_id:
            obs.mark_incorrect("wrong_chain")

    await for_each(round_, one)
