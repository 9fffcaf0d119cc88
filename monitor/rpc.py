"""JSON-RPC over httpx, for probing operators: a hard time limit, a response size cap, and one
classification of every failure — unavailable (timeout, transport, HTTP status, JSON-RPC error) or
malformed (anything that is not a valid answer). See monitor.exceptions.

The probe's client (:func:`operator_client`) keeps httpx's API on aiohttp's connection pool
(httpx-aiohttp): httpcore's pool scans every connection for every request, which with thousands
of endpoints (one origin each) costs more than the checks themselves (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from monitor.exceptions import RpcMalformed, RpcTooLarge, RpcUnavailable
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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def operator_client(*, concurrency: int, timeout_s: float) -> httpx.AsyncClient:
    """The shared client for operators' endpoints: at most ``concurrency`` connections, kept
    alive between calls, no redirects followed."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits), timeout=timeout_s, follow_redirects=False
    )


def _is_timeout(exc: httpx.TimeoutException) -> bool:
    """httpx-aiohttp maps every aiohttp connection error (refused, reset, closed early) to
    ``httpx.ConnectTimeout``; only a real time limit is a timeout here."""
    cause = exc.__cause__
    return not isinstance(cause, aiohttp.ClientError) or isinstance(cause, TimeoutError)


class RpcClient:
    """Calls one JSON-RPC method at a time over a shared ``httpx.AsyncClient``."""

    def __init__(
        self, client: httpx.AsyncClient, *, timeout_s: float, max_response_bytes: int
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._max_bytes = max_response_bytes

    async def call(self, url: str, method: str, params: list[Any]) -> tuple[Any, int]:
        """Returns (result, latency in microseconds) or raises RpcUnavailable / RpcMalformed.

        Latency spans sending the request to reading the whole body, on a monotonic clock.
        """
        request_id = next(_ids)
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        started = time.perf_counter_ns()
        try:
            # asyncio.timeout bounds the whole exchange; httpx's own timeouts are per phase, so a
            # server that trickles bytes could otherwise hold a check for ever.
            async with asyncio.timeout(self._timeout_s):
                body, status = await self._post(url, payload)
        except TimeoutError:
            raise RpcUnavailable(
                f"{method}: no answer within {self._timeout_s:g} s", kind="timeout"
            ) from None
        except httpx.TimeoutException as exc:
            if not _is_timeout(exc):
                raise RpcUnavailable(
                    f"{method}: {type(exc.__cause__).__name__}: {exc}", kind="transport"
                ) from None
            raise RpcUnavailable(f"{method}: timed out", kind="timeout") from None
        except httpx.HTTPError as exc:
            raise RpcUnavailable(
                f"{method}: {type(exc).__name__}: {exc}", kind="transport"
            ) from None
        latency_us = (time.perf_counter_ns() - started) // 1000
        if status != 200:
            raise RpcUnavailable(f"{method}: HTTP {status}", kind="http_status")
        return _decode(body, method, request_id), latency_us

    async def _post(self, url: str, payload: dict[str, Any]) -> tuple[bytes, int]:
        async with self._client.stream("POST", url, json=payload) as response:
            chunks = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise RpcTooLarge(f"answer larger than {self._max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks), response.status_code


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
