"""Historical state from archive endpoints: balance (and a storage slot) of a configured address
at a configured old block, compared across the chain's archive endpoints by majority.

Only endpoints marked ``archive: true`` in the registry are asked, so full nodes that pruned the
block are not punished for it. An archive endpoint that answers a JSON-RPC error (typically
"missing trie node") is counted unavailable for that round, like any error answer: it claims to
serve history and does not. A differing answer is ``wrong_state``. Runs every 5 minutes by default
(state at an old block is costly for the operator); only for chains that configure it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from monitor.checks.base import ChainRound, Observation, ScheduledConfig, for_each, vote
from monitor.checks.block_hash import confirmed_height
from monitor.checks.logs import Address, hex_data
from monitor.exceptions import RpcMalformed

Slot = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{1,64}$")]


class Config(ScheduledConfig):
    every_s: float = Field(300.0, ge=0, le=86_400)
    address: Address
    block: int = Field(ge=0, le=2**63 - 1)
    storage_slot: Slot | None = None


async def check(round_: ChainRound, config: Config) -> None:
    confirmed = confirmed_height(round_)
    if confirmed is None or config.block > confirmed:
        return
    block = hex(config.block)
    answers: dict[int, tuple[int, str | None]] = {}

    async def one(obs: Observation) -> None:
        if not obs.target.archive:
            return
        balance, _ = await round_.call(obs, "eth_getBalance", [config.address, block])
        storage = None
        if config.storage_slot is not None:
            raw, _ = await round_.call(
                obs, "eth_getStorageAt", [config.address, config.storage_slot, block]
            )
            storage = hex_data(raw, "eth_getStorageAt")
        answers[obs.target.endpoint_id] = (_quantity(balance), storage)

    await for_each(round_, one)
    vote(round_, answers, "wrong_state")


def _quantity(value: object) -> int:
    # A balance can exceed 2**63 - 1 (parse_quantity's limit for heights): any 256-bit quantity.
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > 66:
        raise RpcMalformed("eth_getBalance: expected a hex quantity")
    try:
        return int(value, 16)
    except ValueError:
        raise RpcMalformed("eth_getBalance: expected a hex quantity") from None
