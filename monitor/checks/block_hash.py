"""eth_getBlockByNumber at the round's check height: the hash a majority holds is canonical; a
different one is incorrect. An endpoint whose head is below the height cannot be judged
(unknown), and neither can anyone when no majority with ``quorum`` agreeing answers exists.

The check height is ``reference head - confirmations``, fixed when the round's questions are
planned (``ChainRound.basis``): in a one-shot round from the round's own heads, in a paced round
from the heads known when the round opened, so that every endpoint is asked for the same height
however its visit falls in the interval.
"""

from __future__ import annotations

from monitor.checks.base import Call, ChainRound, CheckConfig, Observation, Replies
from monitor.exceptions import RpcMalformed
from monitor.probe.consensus import canonical_hash
from monitor.rpc import parse_hash, parse_quantity


async def hash_at(call: Call, obs: Observation, height: int) -> str:
    """``obs``'s block hash at ``height`` (at or below its head); RpcMalformed if it has none."""
    block = await call(obs, "eth_getBlockByNumber", [hex(height), False])
    if not isinstance(block, dict):
        # null for a height at or below the head it just reported is a wrong answer too
        raise RpcMalformed(f"eth_getBlockByNumber({height}): expected a block object")
    if parse_quantity(block.get("number"), "block.number") != height:
        raise RpcMalformed(f"eth_getBlockByNumber({height}): block number differs")
    return parse_hash(block.get("hash"), "block.hash")


def confirmed_height(round_: ChainRound) -> int | None:
    """``basis - confirmations``: the height every check of settled data looks at."""
    if round_.basis is None:
        return None
    return max(0, round_.basis - round_.chain.confirmations)


def plan(round_: ChainRound, config: CheckConfig) -> int | None:
    height = confirmed_height(round_)
    if height is not None:
        round_.check_height = height
    return height


async def ask(call: Call, obs: Observation, height: int) -> str | None:
    if obs.head is None or obs.head < height:
        return None
    return await hash_at(call, obs, height)


def judge(round_: ChainRound, config: CheckConfig, height: int, replies: Replies) -> None:
    for obs in round_.observations:
        answer = replies.answers.get(obs.target.endpoint_id)
        if isinstance(answer, str):
            obs.block_hash = answer
    voters = [obs for obs in round_.usable() if obs.block_hash is not None]
    canonical = canonical_hash(
        [obs.block_hash for obs in voters if obs.block_hash is not None], round_.chain.quorum
    )
    if canonical is None:
        return
    for obs in voters:
        if obs.block_hash == canonical:
            obs.correct = True
        else:
            obs.mark_incorrect("wrong_hash")
