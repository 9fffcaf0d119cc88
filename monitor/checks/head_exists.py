"""Ask the endpoints whose head nobody (or only a minority) confirms for the block they claim.

A head far above the reference is ``head_ahead`` already (head.py); one a few blocks above may be
an honest node a block ahead of its peers or a node inventing blocks. An honest node can always
return the block at the head it just reported; a node that answers ``null`` (after one retry, for
load-balanced operators whose backends differ by a block) claimed a head that does not exist:
incorrect (``head_missing``). Asked: every endpoint above the reference; and when the reference
itself is held by no more than half of the answering endpoints (a few colluding endpoints
inventing the same head can form the quorum that sets it), every endpoint at it too. The
reference is then computed again without the endpoints found out, so an invented head never
sets it. In a healthy round (most endpoints at the tip) only the few above it are asked. In a
paced round the question is put right after the endpoint's own head call, against the heads
known at that moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from monitor.checks.base import Call, ChainRound, CheckConfig, Observation, Replies
from monitor.exceptions import RpcMalformed
from monitor.rpc import parse_quantity

RETRY_AFTER_BLOCKS = 0.25  # of the chain's block time, capped at a second


class Config(CheckConfig):
    pass


@dataclass(frozen=True)
class Plan:
    retry_s: float
    claims_unconfirmed: Callable[[Observation], bool]


def _unconfirmed(head: int, reference: int, contested: bool) -> bool:
    return head >= reference if contested else head > reference


def plan(round_: ChainRound, config: Config) -> Plan | None:
    retry_s = min(1.0, RETRY_AFTER_BLOCKS * round_.chain.block_time_s)
    over_time = round_.over_time
    if over_time is not None:

        def live(obs: Observation) -> bool:
            reference, contested = over_time.live(obs.target.endpoint_id)
            return obs.head is not None and (
                reference is None or _unconfirmed(obs.head, reference, contested)
            )

        return Plan(retry_s, live)
    reference = round_.reference_head
    if reference is None:
        return None
    heads = [obs.head for obs in round_.usable() if obs.head is not None]
    contested = 2 * sum(1 for h in heads if h >= reference) <= len(heads)
    return Plan(
        retry_s, lambda obs: obs.head is not None and _unconfirmed(obs.head, reference, contested)
    )


async def _block_exists(call: Call, obs: Observation, height: int) -> bool:
    block = await call(obs, "eth_getBlockByNumber", [hex(height), False])
    if block is None:
        return False
    if not isinstance(block, dict):
        raise RpcMalformed(f"eth_getBlockByNumber({height}): expected a block object or null")
    if parse_quantity(block.get("number"), "block.number") != height:
        raise RpcMalformed(f"eth_getBlockByNumber({height}): block number differs")
    return True


async def ask(call: Call, obs: Observation, plan: Plan) -> bool | None:
    """True: the claimed block exists; False: it does not (twice); None: not asked."""
    claimed = obs.head
    if claimed is None or not plan.claims_unconfirmed(obs):
        return None
    if await _block_exists(call, obs, claimed):
        return True
    await asyncio.sleep(plan.retry_s)
    return await _block_exists(call, obs, claimed)


def judge(round_: ChainRound, config: Config, plan: Plan, replies: Replies) -> None:
    for obs in round_.usable():
        if replies.answers.get(obs.target.endpoint_id) is False:
            obs.mark_incorrect("head_missing")
    round_.set_references()
