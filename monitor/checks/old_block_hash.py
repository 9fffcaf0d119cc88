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

from monitor.checks.base import ChainRound, Replies, ScheduledConfig, vote
from monitor.checks.block_hash import ask, confirmed_height

_random = random.SystemRandom()  # operators must not predict the height

__all__ = ["Config", "ask", "judge", "pick_height", "plan"]


class Config(ScheduledConfig):
    max_depth: int = Field(10_000, ge=1, le=1_000_000_000)


def pick_height(confirmed: int, max_depth: int) -> int | None:
    if confirmed < 1:
        return None
    return _random.randint(max(0, confirmed - max_depth), confirmed - 1)


def plan(round_: ChainRound, config: Config) -> int | None:
    confirmed = confirmed_height(round_)
    return None if confirmed is None else pick_height(confirmed, config.max_depth)


def judge(round_: ChainRound, config: Config, height: int, replies: Replies) -> None:
    vote(round_, replies.answers, "wrong_old_hash")
