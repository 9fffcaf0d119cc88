"""A read-only eth_call canary: a configured call at the confirmed height, compared by majority.

Catches endpoints that execute calls wrongly or serve another state (a broken client, a proxy
answering from a cache of another chain or block). The call is ``{to, data}`` at the confirmed
height, so every endpoint answers from the same settled state; the answer must be hex data and a
differing one is ``wrong_call``. Choose a pure view function whose answer changes rarely (a token's
``totalSupply()``, a registry's ``owner()``). A call that reverts everywhere judges nobody
(``base.judge_errors``). Every minute by default; only for chains that configure it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from monitor.checks.base import (
    Call,
    ChainRound,
    Observation,
    Replies,
    ScheduledConfig,
    judge_errors,
)
from monitor.checks.logs import Address, HexData, hex_data, settled_height

MAX_RESULT_BYTES = 64 * 1024  # a canary answers a few words; the response cap bounds it anyway


class Config(ScheduledConfig):
    every_s: float = Field(60.0, ge=0, le=86_400)
    to: Address
    data: HexData = "0x"
    block: Literal["confirmed"] = "confirmed"  # the check height; the only choice for now


DEFERS_RPC_ERRORS = True  # a canary that reverts everywhere judges nobody


def plan(round_: ChainRound, config: Config) -> tuple[int, dict[str, str]] | None:
    height = settled_height(round_)
    if height is None:
        return None
    return height, {"to": config.to, "data": config.data}


async def ask(call: Call, obs: Observation, plan: tuple[int, dict[str, str]]) -> str | None:
    height, request = plan
    if obs.head is None or obs.head < height:
        return None
    result = await call(obs, "eth_call", [request, hex(height)])
    return hex_data(result, "eth_call", max_bytes=MAX_RESULT_BYTES)


def judge(round_: ChainRound, config: Config, plan: object, replies: Replies) -> None:
    judge_errors(round_, replies, "wrong_call")
