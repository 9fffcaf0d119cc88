"""eth_chainId: an endpoint serving another chain is incorrect, whatever else it answers.

Once a minute by default: an endpoint does not change chains often, and its verdict holds in the
rounds between (``ChainMemory.verdicts``); a node switched to another chain also fails the hash
checks of every round at once. A wrong-chain result reports no head: a height of another chain
says nothing of this one.
"""

from __future__ import annotations

from pydantic import Field

from monitor.checks.base import (
    Call,
    ChainRound,
    Observation,
    Replies,
    ScheduledConfig,
    every_round,
    own_verdicts,
)
from monitor.rpc import parse_quantity

plan = every_round
OWN_VERDICTS = True  # an endpoint's chain id is its own: no vote


class Config(ScheduledConfig):
    every_s: float = Field(60.0, ge=0, le=86_400)


async def ask(call: Call, obs: Observation, plan: object) -> int:
    return parse_quantity(await call(obs, "eth_chainId", []), "eth_chainId")


def judge(round_: ChainRound, config: Config, plan: object, replies: Replies) -> None:
    def verdict(answer: int | None) -> str | None:
        return "wrong_chain" if answer is not None and answer != round_.chain.chain_id else None

    for obs, kept in own_verdicts(round_, "chain_id", replies, verdict):
        obs.mark_incorrect(kept)
