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
)
from monitor.rpc import parse_quantity

plan = every_round
OWN_VERDICTS = True  # an endpoint's chain id is its own: no vote


class Config(ScheduledConfig):
    every_s: float = Field(60.0, ge=0, le=86_400)


async def ask(call: Call, obs: Observation, plan: object) -> int:
    return parse_quantity(await call(obs, "eth_chainId", []), "eth_chainId")


def judge(round_: ChainRound, config: Config, plan: object, replies: Replies) -> None:
    verdicts = round_.memory.verdicts.setdefault("chain_id", {})
    for obs in round_.usable():
        endpoint_id = obs.target.endpoint_id
        if endpoint_id in replies.asked:  # asked now: this answer's verdict from now on
            answer = replies.answers.get(endpoint_id)
            if answer is not None and answer != round_.chain.chain_id:
                verdicts[endpoint_id] = "wrong_chain"
            else:
                verdicts.pop(endpoint_id, None)
        if verdicts.get(endpoint_id) == "wrong_chain":  # asked now or at its last turn
            obs.mark_incorrect("wrong_chain")
