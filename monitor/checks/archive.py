"""Historical state from archive endpoints: balance (and a storage slot) of a configured address
at a configured old block, compared across the chain's archive endpoints by majority.

Only endpoints marked ``archive: true`` in the registry are asked, so full nodes that pruned the
block are not punished for it. A differing answer is ``wrong_state``. An archive endpoint that
answers a JSON-RPC error (typically "missing trie node") while a quorum of the others answered
alike is unavailable for that round: it claims to serve history and does not, which is not a lie
(``base.judge_errors``). Runs every 5 minutes by default (state at an old block is costly for the
operator); only for chains that configure it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from monitor.checks.base import (
    Call,
    ChainRound,
    Observation,
    Replies,
    ScheduledConfig,
    judge_errors,
)
from monitor.checks.logs import Address, settled_height, word


def _slot(value: str) -> str:
    """A storage slot as 32 bytes of lower-case hex, the form every client accepts."""
    digits = value[2:] if value.startswith("0x") else ""
    if not 1 <= len(digits) <= 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError("not a storage slot (0x followed by 1 to 64 hex digits)")
    return "0x" + digits.lower().rjust(64, "0")


Slot = Annotated[str, AfterValidator(_slot)]


class Config(ScheduledConfig):
    every_s: float = Field(300.0, ge=0, le=86_400)
    address: Address
    block: int = Field(ge=0, le=2**63 - 1)
    storage_slot: Slot | None = None


DEFERS_RPC_ERRORS = True  # "missing trie node": counts only where a quorum answered


def plan(round_: ChainRound, config: Config) -> Config | None:
    confirmed = settled_height(round_)
    if confirmed is None or config.block > confirmed:
        return None  # not settled yet (a block configured ahead of the chain): nothing to compare
    return config


async def ask(call: Call, obs: Observation, config: Config) -> tuple[int, int | None] | None:
    if not obs.target.archive or obs.head is None or obs.head < config.block:
        return None
    block = hex(config.block)
    balance = word(await call(obs, "eth_getBalance", [config.address, block]), "eth_getBalance")
    storage = None
    if config.storage_slot is not None:
        raw = await call(obs, "eth_getStorageAt", [config.address, config.storage_slot, block])
        storage = word(raw, "eth_getStorageAt")
    return balance, storage


def judge(round_: ChainRound, config: Config, plan: object, replies: Replies) -> None:
    judge_errors(round_, replies, "wrong_state")
