"""A read-only eth_call canary: a configured call at the confirmed height, compared by majority.

Catches endpoints that execute calls wrongly or serve another state (a broken client, a proxy
answering from a cache of another chain or block). The call is ``{to, data}`` at the confirmed
height, so every endpoint answers from the same settled state; the answer must be hex data and a
differing one is ``wrong_call``. Choose a pure view function whose answer changes rarely (a token's
``totalSupply()``, a registry's ``owner()``). Every minute by default; only for chains that
configure it.
"""

from __future__ import annotations

from pydantic import Field

from monitor.checks.base import ChainRound, Observation, ScheduledConfig, for_each, vote
from monitor.checks.block_hash import confirmed_height
from monitor.checks.logs import Address, HexData, hex_data


class Config(ScheduledConfig):
    to: Address
    data: HexData = "0x"
    every_s: float = Field(60.0, ge=0, le=86_400)


async def check(round_: ChainRound, config: Config) -> None:
    height = confirmed_height(round_)
    if height is None:
        return
    answers: dict[int, str] = {}

    async def one(obs: Observation) -> None:
        if obs.head is None or obs.head < height:
            return
        result, _ = await round_.call(
            obs, "eth_call", [{"to": config.to, "data": config.data}, hex(height)]
        )
        answers[obs.target.endpoint_id] = hex_data(result, "eth_call")

    await for_each(round_, one)
    vote(round_, answers, "wrong_call")
