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

from monitor.checks.base import ChainRound, Observation, ScheduledConfig, for_each
from monitor.exceptions import RpcError, RpcMalformed
from monitor.rpc import parse_quantity


class Config(ScheduledConfig):
    every_s: float = Field(30.0, ge=0, le=86_400)
    tolerance_blocks: int = Field(2, ge=0, le=1_000_000)


async def check(round_: ChainRound, config: Config) -> None:
    verdicts = round_.memory.verdicts["syncing"] = {}

    async def one(obs: Observation) -> None:
        try:
            status, _ = await round_.call(obs, "eth_syncing", [])
        except RpcError as exc:
            if exc.kind == "rpc_error":
                return
            raise
        if status is False:
            return
        if not isinstance(status, dict):
            raise RpcMalformed("eth_syncing: expected false or a sync status object")
        current = parse_quantity(status.get("currentBlock"), "eth_syncing.currentBlock")
        highest = parse_quantity(status.get("highestBlock"), "eth_syncing.highestBlock")
        if highest - current > config.tolerance_blocks:
            verdicts[obs.target.endpoint_id] = "syncing"
            if obs.error is None:
                obs.error = "syncing"

    await for_each(round_, one)
