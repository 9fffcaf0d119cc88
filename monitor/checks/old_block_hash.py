"""Block hash agreement at a random older height, like block_hash at the confirmed height.

A node can agree near the head and still serve a wrong history (a bad snapshot, a corrupted
database, a proxy caching another chain). Each run picks one height uniformly in
``[confirmed - max_depth, confirmed - 1]`` (the same for every endpoint of the round, a new one
each run, unpredictable to operators) and votes on the hashes like block_hash; a differing hash
is ``wrong_old_hash``. Costs one call per endpoint per run, hence a cadence (default 60 s).
"""

from __future__ import annotations

import random

from pydantic import Field

from monitor.checks.base import ChainRound, Observation, ScheduledConfig, for_each, vote
from monitor.checks.block_hash import confirmed_height, hash_at

_random = random.SystemRandom()  # operators must not predict the height


class Config(ScheduledConfig):
    max_depth: int = Field(10_000, ge=1, le=1_000_000_000)


def pick_height(confirmed: int, max_depth: int) -> int | None:
    if confirmed < 1:
        return None
    return _random.randint(max(0, confirmed - max_depth), confirmed - 1)


async def check(round_: ChainRound, config: Config) -> None:
    confirmed = confirmed_height(round_)
    height = None if confirmed is None else pick_height(confirmed, config.max_depth)
    if height is None:
        return
    hashes: dict[int, str] = {}

    async def one(obs: Observation) -> None:
        if obs.head is None or obs.head < height:
            return
        hashes[obs.target.endpoint_id] = await hash_at(round_, obs, height)

    await for_each(round_, one)
    vote(round_, hashes, "wrong_old_hash")
