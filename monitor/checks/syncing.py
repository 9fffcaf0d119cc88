"""eth_syncing: a node that says it is still syncing serves old state, whatever its head says.

``false`` is in sync. A sync status object more than ``tolerance_blocks`` behind its own
``highestBlock`` is ``syncing`` (stale: the result stays ``ok``, as for ``stalled``); some clients
report a status object while within a block or two of the tip, which is not worth flagging.
Anything else is malformed. A JSON-RPC error is left unjudged here: some providers disable
``eth_syncing``, and that says nothing about the data they serve. Every 30 s by default; the
verdict holds in the rounds between (``ChainMemory.verdicts``), so scoring sees it every round.
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
from monitor.exceptions import RpcError, RpcMalformed
from monitor.rpc import parse_quantity

plan = every_round
OWN_VERDICTS = True  # an endpoint's sync status is its own: no vote


class Config(ScheduledConfig):
    every_s: float = Field(30.0, ge=0, le=86_400)
    tolerance_blocks: int = Field(2, ge=0, le=1_000_000)


async def ask(call: Call, obs: Observation, plan: object) -> int | None:
    """Blocks behind its own highest block (0 in sync), or None: no answer to judge."""
    try:
        status = await call(obs, "eth_syncing", [])
    except RpcError as exc:
        if exc.kind == "rpc_error":
            return None
        raise
    if status is False:
        return 0
    if not isinstance(status, dict):
        raise RpcMalformed("eth_syncing: expected false or a sync status object")
    current = parse_quantity(status.get("currentBlock"), "eth_syncing.currentBlock")
    highest = parse_quantity(status.get("highestBlock"), "eth_syncing.highestBlock")
    return max(0, highest - current)


def judge(round_: ChainRound, config: Config, plan: object, replies: Replies) -> None:
    def verdict(behind: int | None) -> str | None:
        return "syncing" if behind is not None and behind > config.tolerance_blocks else None

    for obs, kept in own_verdicts(round_, "syncing", replies, verdict):
        if obs.error is None:
            obs.error = kept
