"""eth_getBlockByNumber at ``reference head - confirmations``: the hash a majority holds is
canonical; a different one is incorrect. An endpoint whose head is below the height cannot be
judged (unknown), and neither can anyone when no majority with ``quorum`` agreeing answers
exists."""

from __future__ import annotations

from monitor.checks.base import ChainRound, CheckConfig, Observation, for_each
from monitor.exceptions import RpcMalformed
from monitor.probe.consensus import canonical_hash
from monitor.rpc import parse_hash, parse_quantity


async def hash_at(round_: ChainRound, obs: Observation, height: int) -> str:
    """``obs``'s block hash at ``height`` (at or below its head); RpcMalformed if it has none."""
    block, _ = await round_.call(obs, "eth_getBlockByNumber", [hex(height), False])
    if not isinstance(block, dict):
        # null for a height at or below the head it just reported is a wrong answer too
        raise RpcMalformed(f"eth_getBlockByNumber({height}): expected a block object")
    if parse_quantity(block.get("number"), "block.number") != height:
        raise RpcMalformed(f"eth_getBlockByNumber({height}): block number differs")
    return parse_hash(block.get("hash"), "block.hash")


def confirmed_height(round_: ChainRound) -> int | None:
    """``reference head - confirmations``: the height every check of settled data looks at."""
    if round_.reference_head is None:
        return None
    return max(0, round_.reference_head - round_.chain.confirmations)


async def check(round_: ChainRound, config: CheckConfig) -> None:
    height = confirmed_height(round_)
    if height is None:
        return
    round_.check_height = height

    async def one(obs: Observation) -> None:
        if obs.head is None or obs.head < height:
            return
        obs.block_hash = await hash_at(round_, obs, height)

    await for_each(round_, one)
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
