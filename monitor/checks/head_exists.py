"""Ask the endpoints whose head nobody (or only a minority) confirms for the block they claim.

A head far above the reference is ``head_ahead`` already (head.py); one a few blocks above may be
an honest node a block ahead of its peers or a node inventing blocks. An honest node can always
return the block at the head it just reported; a node that answers ``null`` (after one retry, for
load-balanced operators whose backends differ by a block) claimed a head that does not exist:
incorrect (``head_missing``). Asked: every endpoint above the reference; and when the reference
itself is held by no more than half of the answering endpoints (a few colluding endpoints
inventing the same head can form the quorum that sets it), every endpoint at it too. The
reference is then computed again without the endpoints found out, so an invented head never
sets it. In a healthy round (most endpoints at the tip) only the few above it are asked.
"""

from __future__ import annotations

import asyncio

from monitor.checks.base import ChainRound, CheckConfig, Observation, for_each
from monitor.exceptions import RpcMalformed
from monitor.probe.consensus import reference_head
from monitor.rpc import parse_quantity

RETRY_AFTER_BLOCKS = 0.25  # of the chain's block time, capped at a second


class Config(CheckConfig):
    pass


async def _block_exists(round_: ChainRound, obs: Observation, height: int) -> bool:
    block, _ = await round_.call(obs, "eth_getBlockByNumber", [hex(height), False])
    if block is None:
        return False
    if not isinstance(block, dict):
        raise RpcMalformed(f"eth_getBlockByNumber({height}): expected a block object or null")
    if parse_quantity(block.get("number"), "block.number") != height:
        raise RpcMalformed(f"eth_getBlockByNumber({height}): block number differs")
    return True


async def check(round_: ChainRound, config: Config) -> None:
    reference = round_.reference_head
    if reference is None:
        return
    retry_s = min(1.0, RETRY_AFTER_BLOCKS * round_.chain.block_time_s)
    heads = [obs.head for obs in round_.usable() if obs.head is not None]
    contested = 2 * sum(1 for h in heads if h >= reference) <= len(heads)
    lowest_asked = reference if contested else reference + 1

    async def one(obs: Observation) -> None:
        claimed = obs.head
        if claimed is None or claimed < lowest_asked:
            return
        if await _block_exists(round_, obs, claimed):
            return
        await asyncio.sleep(retry_s)
        if not await _block_exists(round_, obs, claimed):
            obs.mark_incorrect("head_missing")

    await for_each(round_, one)
    round_.reference_head = reference_head(
        [obs.head for obs in round_.usable() if obs.head is not None]
    )
