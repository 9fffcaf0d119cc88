"""eth_getLogs over a small confirmed range, compared across endpoints by a digest of the answer.

RPC proxies and overloaded nodes are known to answer ``[]`` where there are logs (a range they
did not index, a timeout they swallowed): a "wrong empty" answer that looks valid. Every endpoint
at or above the confirmed height is asked for the logs of ``[confirmed - range_blocks + 1,
confirmed]`` (optionally of one ``address`` and ``topics``); each answer is reduced to a keccak
digest of its canonical form (the fields that identify a log, lower-cased, in answer order) and the
digests are voted on like block hashes: a differing answer is ``wrong_logs``. An answer over the
probe's size cap proves nothing and is left unjudged: on a busy chain give an ``address``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from eth_utils import keccak
from pydantic import Field, StringConstraints

from monitor.checks.base import ChainRound, Observation, ScheduledConfig, for_each, vote
from monitor.checks.block_hash import confirmed_height
from monitor.exceptions import RpcMalformed, RpcTooLarge
from monitor.rpc import parse_hash, parse_quantity

Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Topic = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
HexData = Annotated[str, StringConstraints(pattern=r"^0x([0-9a-fA-F]{2})*$")]


class Config(ScheduledConfig):
    range_blocks: int = Field(2, ge=1, le=100)
    address: Address | None = None
    topics: list[Topic | None] | None = Field(None, max_length=4)


def hex_data(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcMalformed(f"{what}: expected hex data")
    try:
        bytes.fromhex(value[2:] if len(value) % 2 == 0 else "0" + value[2:])
    except ValueError:
        raise RpcMalformed(f"{what}: expected hex data") from None
    return value.lower()


def logs_digest(logs: Any) -> str:
    """A digest of an eth_getLogs answer; RpcMalformed if it is not a list of logs."""
    if not isinstance(logs, list):
        raise RpcMalformed("eth_getLogs: expected a list of logs")
    canonical = []
    for i, log in enumerate(logs):
        where = f"eth_getLogs[{i}]"
        if not isinstance(log, dict) or not isinstance(log.get("topics"), list):
            raise RpcMalformed(f"{where}: expected a log object with topics")
        canonical.append(
            [
                parse_hash(log.get("blockHash"), f"{where}.blockHash"),
                parse_quantity(log.get("blockNumber"), f"{where}.blockNumber"),
                parse_hash(log.get("transactionHash"), f"{where}.transactionHash"),
                parse_quantity(log.get("logIndex"), f"{where}.logIndex"),
                hex_data(log.get("address"), f"{where}.address"),
                [parse_hash(t, f"{where}.topics") for t in log["topics"]],
                hex_data(log.get("data"), f"{where}.data"),
                bool(log.get("removed", False)),
            ]
        )
    return "0x" + keccak(text=json.dumps(canonical, separators=(",", ":"))).hex()


def log_filter(config: Config, start: int, end: int) -> dict[str, Any]:
    params: dict[str, Any] = {"fromBlock": hex(start), "toBlock": hex(end)}
    if config.address is not None:
        params["address"] = config.address
    if config.topics is not None:
        params["topics"] = config.topics
    return params


async def check(round_: ChainRound, config: Config) -> None:
    end = confirmed_height(round_)
    if end is None:
        return
    params = log_filter(config, max(0, end - config.range_blocks + 1), end)
    digests: dict[int, str] = {}

    async def one(obs: Observation) -> None:
        if obs.head is None or obs.head < end:
            return
        try:
            logs, _ = await round_.call(obs, "eth_getLogs", [params])
        except RpcTooLarge:
            return  # a big honest answer looks the same: no evidence either way
        digests[obs.target.endpoint_id] = logs_digest(logs)

    await for_each(round_, one)
    vote(round_, digests, "wrong_logs")
