"""JSON-RPC for probing operators: a hard time limit, a response size cap, and one
classification of every failure — unavailable (timeout, transport, HTTP status, JSON-RPC error) or
malformed (anything that is not a valid answer). See monitor.exceptions. The transport is
monitor.http1 (why not httpx: its docstring and docs/performance.md).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from typing import Any

from monitor.exceptions import RpcMalformed, RpcTooLarge, RpcUnavailable
from monitor.http1 import Answer, Http1Client
from monitor.safejson import json_depth

_HEX_QUANTITY = re.compile(r"0x(0|[1-9a-fA-F][0-9a-fA-F]*)")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
MAX_JSON_DEPTH = 64  # JSON-RPC answers we read nest a few levels; deeper is an attack
MAX_QUANTITY = 2**63 - 1  # what the database and the signed results hold
_ids = itertools.count(1)


def parse_quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or not _HEX_QUANTITY.fullmatch(value):
        raise RpcMalformed(f"{what}: expected a hex quantity, got {_short(value)}")
    number = int(value, 16)
    if number > MAX_QUANTITY:
        raise RpcMalformed(f"{what}: {_short(value)} is beyond 2**63 - 1")
    return number


def parse_hash(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise RpcMalformed(f"{what}: expected a 32-byte hex hash, got {_short(value)}")
    return value.lower()


# The round's timed call: one answer gives the head and its hash (docs/checks.md).
HEAD_METHOD = "eth_getBlockByNumber"
HEAD_PARAMS: list[Any] = ["latest", False]


def parse_head_block(block: Any) -> tuple[int, str]:
    """(height, hash) of the block an endpoint answered ``eth_getBlockByNumber("latest")``
    with; RpcMalformed for anything else (a node always has a latest block)."""
    if not isinstance(block, dict):
        raise RpcMalformed("eth_getBlockByNumber(latest): expected a block object")
    return parse_quantity(block.get("number"), "block.number"), parse_hash(
        block.get("hash"), "block.hash"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def request(method: str, params: list[Any]) -> tuple[int, bytes]:
    """A JSON-RPC request: its id and its body."""
    request_id = next(_ids)
    payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return request_id, json.dumps(payload).encode()


def result_of(method: str, request_id: int, status: int, body: bytes) -> Any:
    """The ``result`` of an HTTP answer to a JSON-RPC request, or RpcUnavailable / RpcMalformed."""
    if status != 200:
        raise RpcUnavailable(f"{method}: HTTP {status}", kind="http_status")
    return _decode(body, method, request_id)


class RpcClient:
    """Calls one JSON-RPC method at a time on operators' endpoints (monitor.http1's client)."""

    def __init__(self, *, timeout_s: float, max_response_bytes: int) -> None:
        self._http = Http1Client(max_response_bytes=max_response_bytes)
        self._timeout_s = timeout_s

    async def exchange(self, url: str, what: str, body: bytes) -> Answer:
        """POST ``body`` to ``url``, the whole exchange (connecting included) bounded by the
        timeout, so that a server that trickles bytes cannot hold a check for ever; failures
        named after ``what`` (the method)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._http.post(url, body)
        except TimeoutError:
            raise RpcUnavailable(
                f"{what}: no answer within {self._timeout_s:g} s", kind="timeout"
            ) from None
        except RpcUnavailable as exc:
            raise RpcUnavailable(f"{what}: {exc}", kind=exc.kind) from None
        except RpcTooLarge as exc:
            raise RpcTooLarge(f"{what}: {exc}") from None

    async def call(self, url: str, method: str, params: list[Any]) -> tuple[Any, int]:
        """Returns (result, latency in microseconds) or raises RpcUnavailable / RpcMalformed.

        Latency spans writing the request on an established connection to the arrival of the
        answer's last byte (monitor.http1), on a monotonic clock.
        """
        request_id, body = request(method, params)
        answer = await self.exchange(url, method, body)
        return result_of(method, request_id, answer.status, answer.body), answer.latency_us

    async def aclose(self) -> None:
        await self._http.aclose()


def _decode(body: bytes, method: str, request_id: int) -> Any:
    # json.loads recurses in C: a deeply nested answer would exhaust the stack (and crash the
    # process where a library has raised the recursion limit), so refuse it before parsing.
    if json_depth(body) > MAX_JSON_DEPTH:
        raise RpcMalformed(f"{method}: answer nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RpcMalformed(f"{method}: answer is not JSON") from None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise RpcMalformed(f"{method}: answer is not a JSON-RPC 2.0 object")
    if message.get("id") != request_id:
        raise RpcMalformed(f"{method}: answer id {_short(message.get('id'))} != {request_id}")
    if "error" in message:
        error = message["error"]
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            raise RpcMalformed(f"{method}: malformed error object")
        raise RpcUnavailable(
            f"{method}: JSON-RPC error {error['code']}: {_short(error.get('message'))}",
            kind="rpc_error",
        )
    if "result" not in message:
        raise RpcMalformed(f"{method}: answer has neither result nor error")
    return message["result"]
