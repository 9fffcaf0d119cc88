"""eth_getLogs over a small confirmed range, compared across endpoints by a digest of the answer.

RPC proxies and overloaded nodes are known to answer ``[]`` where there are logs (a range they
did not index, a timeout they swallowed): a "wrong empty" answer that looks valid. Every endpoint
at or above the confirmed height is asked for the logs of ``[confirmed - range_blocks + 1,
confirmed]`` (optionally of one ``address`` and ``topics``); each answer is reduced to a keccak
digest of its canonical form (the fields that identify a log, lower-cased, sorted) and the digests
are voted on like block hashes: a differing answer is ``wrong_logs``. An answer over the probe's
size cap proves nothing and is left unjudged: on a busy chain give an ``address``.

The helpers shared by the state checks (archive, call) live here too: the address option and
strict hex parsing; JSON-RPC error answers are judged by ``base.judge_errors``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from eth_utils import is_checksum_address, keccak, to_checksum_address
from pydantic import AfterValidator, Field, StringConstraints

from monitor.checks.base import (
    Call,
    ChainRound,
    Observation,
    Replies,
    ScheduledConfig,
    judge_errors,
)
from monitor.checks.block_hash import confirmed_height
from monitor.exceptions import RpcMalformed, RpcTooLarge
from monitor.rpc import parse_hash, parse_quantity

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_WORD = re.compile(r"0x[0-9a-fA-F]{1,64}")


def _address(value: str) -> str:
    if not _ADDRESS.fullmatch(value):
        raise ValueError("not an Ethereum address (0x followed by 40 hex digits)")
    mixed_case = value[2:] not in (value[2:].lower(), value[2:].upper())
    if mixed_case and not is_checksum_address(value):
        # a typo in a checksummed address would silently watch another account
        raise ValueError("EIP-55 checksum does not match: check the address for a typo")
    return str(to_checksum_address(value))


Address = Annotated[str, AfterValidator(_address)]
Topic = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
HexData = Annotated[str, StringConstraints(pattern=r"^0x([0-9a-fA-F]{2})*$", max_length=65_538)]


class Config(ScheduledConfig):
    range_blocks: int = Field(2, ge=1, le=100)
    address: Address | None = None
    # per position: one topic, any of several, or null (any); at most 4 positions (LOG0..LOG4)
    topics: list[Topic | list[Topic] | None] | None = Field(None, max_length=4)


def hex_data(value: Any, what: str, *, max_bytes: int | None = None) -> str:
    """``value`` as lower-case 0x-prefixed whole bytes; RpcMalformed otherwise."""
    if not isinstance(value, str) or not _DATA.fullmatch(value):
        raise RpcMalformed(f"{what}: expected 0x-prefixed hex bytes")
    if max_bytes is not None and len(value) > 2 + 2 * max_bytes:
        raise RpcMalformed(f"{what}: longer than {max_bytes} bytes")
    return value.lower()


def word(value: Any, what: str) -> int:
    """A 256-bit value (a balance, a storage word) as an int; leading zeros carry no meaning."""
    if not isinstance(value, str) or not _WORD.fullmatch(value):
        raise RpcMalformed(f"{what}: expected a hex value of at most 32 bytes")
    return int(value, 16)


def settled_height(round_: ChainRound) -> int | None:
    """The confirmed height (block_hash's ``check_height``), recorded on the round for the
    results even when block_hash did not run."""
    height = confirmed_height(round_)
    if height is not None:
        round_.check_height = height
    return height


def logs_digest(logs: Any) -> str:
    """A digest of an eth_getLogs answer; RpcMalformed if it is not a list of logs.

    Each log is reduced to (blockNumber, logIndex, blockHash, transactionHash, address, topics,
    data), hex lower-cased; the list is sorted, so the order an endpoint lists them in does not
    matter. ``removed`` is left out: in a confirmed range it is false (or absent) everywhere.
    """
    if not isinstance(logs, list):
        raise RpcMalformed("eth_getLogs: expected a list of logs")
    canonical = []
    for i, log in enumerate(logs):
        where = f"eth_getLogs[{i}]"
        if not isinstance(log, dict):
            raise RpcMalformed(f"{where}: expected a log object")
        topics = log.get("topics")
        if not isinstance(topics, list) or len(topics) > 4:
            raise RpcMalformed(f"{where}.topics: expected a list of at most 4 topics")
        address = log.get("address")
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            raise RpcMalformed(f"{where}.address: expected a 20-byte address")
        canonical.append(
            (
                parse_quantity(log.get("blockNumber"), f"{where}.blockNumber"),
                parse_quantity(log.get("logIndex"), f"{where}.logIndex"),
                parse_hash(log.get("blockHash"), f"{where}.blockHash"),
                parse_hash(log.get("transactionHash"), f"{where}.transactionHash"),
                address.lower(),
                [parse_hash(t, f"{where}.topics") for t in topics],
                hex_data(log.get("data"), f"{where}.data"),
            )
        )
    canonical.sort()
    return "0x" + keccak(text=json.dumps(canonical, separators=(",", ":"))).hex()


def log_filter(config: Config, start: int, end: int) -> dict[str, Any]:
    params: dict[str, Any] = {"fromBlock": hex(start), "toBlock": hex(end)}
    if config.address is not None:
        params["address"] = config.address
    if config.topics is not None:
        params["topics"] = config.topics
    return params


DEFERS_RPC_ERRORS = True  # judge_errors: an error counts only where a quorum answered


def plan(round_: ChainRound, config: Config) -> tuple[int, dict[str, Any]] | None:
    end = settled_height(round_)
    if end is None:
        return None
    return end, log_filter(config, max(0, end - config.range_blocks + 1), end)


async def ask(call: Call, obs: Observation, plan: tuple[int, dict[str, Any]]) -> str | None:
    end, params = plan
    if obs.head is None or obs.head < end:
        return None  # cannot have the range yet: unknown, not wrong
    try:
        logs = await call(obs, "eth_getLogs", [params])
    except RpcTooLarge:
        return None  # a big honest answer looks the same: no evidence either way
    return logs_digest(logs)


def judge(round_: ChainRound, config: Config, plan: object, replies: Replies) -> None:
    judge_errors(round_, replies, "wrong_logs")
