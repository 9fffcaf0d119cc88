"""Simulated network of JSON-RPC node operators on loopback, for demos and integration tests.

One Starlette app serves every operator at ``POST /{operator_id}``; ``/_control`` lets tests
change an operator's behaviour while the server runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from eth_utils import keccak
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from monitor.serving import ServerThread, uvicorn_config

BEHAVIOURS = (
    "healthy",
    "lagging",
    "fork",
    "slow",
    "wrong_chain",
    "malformed",
    "down",
    "stalled",
    "lying_head",  # claims a head lag_blocks ahead of the chain that it cannot serve
)
DEFAULT_LAG_BLOCKS = 5
DEFAULT_DELAY_S = 0.3
DEMO_CHAIN_ID = 1337
DEMO_BLOCK_TIME_S = 1.0
_OPERATOR_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SimChain:
    """Deterministic chain whose height is a pure function of wall-clock time."""

    def __init__(self, chain_id: int, block_time_s: float, genesis_time: float | None = None):
        if block_time_s <= 0:
            raise ValueError("block_time_s must be positive")
        self.chain_id = chain_id
        self.block_time_s = block_time_s
        # Start 1000 blocks in so lagging/forked heights never go negative.
        self.genesis_time = (
            time.time() - 1000 * block_time_s if genesis_time is None else genesis_time
        )

    def height(self, t: float | None = None) -> int:
        """Canonical head height at time ``t`` (default: now)."""
        now = time.time() if t is None else t
        return max(0, math.floor((now - self.genesis_time) / self.block_time_s))

    def block_hash(self, height: int, fork: str = "main") -> str:
        return "0x" + keccak(text=f"{self.chain_id}:{fork}:{height}").hex()

    def timestamp(self, height: int) -> int:
        return int(self.genesis_time + height * self.block_time_s)


@dataclass
class SimOperator:
    """One simulated operator: an id, a behaviour and the chain it serves."""

    operator_id: str
    behaviour: str
    chain_id: int
    delay_s: float = 0
    lag_blocks: int = 0

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {self.behaviour!r}; expected one of {BEHAVIOURS}")
        if not _OPERATOR_ID_RE.match(self.operator_id):
            raise ValueError(f"invalid operator id {self.operator_id!r}")
        if self.delay_s < 0 or self.lag_blocks < 0:
            raise ValueError("delay_s and lag_blocks must be non-negative")

    @property
    def effective_lag(self) -> int:
        """Blocks behind for ``lagging``; blocks of invented lead for ``lying_head``."""
        return self.lag_blocks or DEFAULT_LAG_BLOCKS

    @property
    def effective_delay(self) -> float:
        return self.delay_s or DEFAULT_DELAY_S


DEMO_OPERATORS: list[SimOperator] = [
    SimOperator("alpha", "healthy", DEMO_CHAIN_ID),
    SimOperator("bravo", "lagging", DEMO_CHAIN_ID, lag_blocks=4),
    SimOperator("charlie", "fork", DEMO_CHAIN_ID),
    SimOperator("delta", "slow", DEMO_CHAIN_ID, delay_s=0.3),
    # Claims 10 blocks more than the chain has: within the head_ahead allowance (a minute of
    # blocks), so it is caught by asking it for the block it claims (head_missing).
    SimOperator("echo", "lying_head", DEMO_CHAIN_ID, lag_blocks=10),
]


def demo_chains() -> dict[int, SimChain]:
    """Fresh demo chains (a function because genesis is relative to now)."""
    return {DEMO_CHAIN_ID: SimChain(DEMO_CHAIN_ID, DEMO_BLOCK_TIME_S)}


class _RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class _SimState:
    """Mutable simnet state shared by the RPC and control handlers."""

    def __init__(self, operators: list[SimOperator], chains: dict[int, SimChain]):
        self.chains = chains
        self.operators: dict[str, SimOperator] = {}
        for op in operators:
            if op.operator_id in self.operators:
                raise ValueError(f"duplicate operator id {op.operator_id!r}")
            if op.chain_id not in chains:
                raise ValueError(f"operator {op.operator_id!r} uses unknown chain {op.chain_id}")
            # Copy so live control changes never leak into shared lists like DEMO_OPERATORS.
            self.operators[op.operator_id] = dataclasses.replace(op)
        # Forks diverge after, and stalled nodes freeze at, the height when the simnet started.
        self.start_heights = {cid: c.height() for cid, c in chains.items()}
        self.frozen: dict[str, int] = {}

    def set_behaviour(self, op: SimOperator, changes: dict[str, Any]) -> None:
        new = dataclasses.replace(
            op,
            behaviour=str(changes.get("behaviour", op.behaviour)),
            delay_s=float(changes.get("delay_s", op.delay_s)),
            lag_blocks=int(changes.get("lag_blocks", op.lag_blocks)),
        )
        self.operators[op.operator_id] = new
        # A node told to stall at runtime freezes where it is now, not at simnet start.
        if new.behaviour == "stalled":
            self.frozen[op.operator_id] = self.chains[op.chain_id].height()
        else:
            self.frozen.pop(op.operator_id, None)

    def head(self, op: SimOperator) -> int:
        chain = self.chains[op.chain_id]
        if op.behaviour == "lagging":
            return max(0, chain.height() - op.effective_lag)
        if op.behaviour == "stalled":
            return self.frozen.get(op.operator_id, self.start_heights[op.chain_id])
        if op.behaviour == "lying_head":
            return chain.height() + op.effective_lag
        return chain.height()

    def hash_at(self, op: SimOperator, height: int) -> str:
        chain = self.chains[op.chain_id]
        if op.behaviour == "fork" and height > self.start_heights[op.chain_id]:
            return chain.block_hash(height, f"fork-{op.operator_id}")
        return chain.block_hash(height)

    def call(self, op: SimOperator, method: str, params: list[Any]) -> Any:
        if method == "eth_chainId":
            return hex(op.chain_id + 1 if op.behaviour == "wrong_chain" else op.chain_id)
        if method == "eth_blockNumber":
            return hex(self.head(op))
        if method == "eth_getBlockByNumber":
            return self._get_block(op, params)
        if method == "eth_syncing":
            return False
        if method == "eth_getLogs":
            return []  # the simulated chains carry no transactions
        raise _RpcError(-32601, f"the method {method} does not exist/is not available")

    def _get_block(self, op: SimOperator, params: list[Any]) -> dict[str, str] | None:
        if not params or not isinstance(params[0], str):
            raise _RpcError(-32602, "invalid params: expected [blockNumberOrTag, fullTx]")
        head = self.head(op)
        tag = params[0]
        tags = {"earliest": 0, "latest": head, "pending": head, "safe": head, "finalized": head}
        if tag in tags:
            height = tags[tag]
        elif re.fullmatch(r"0x[0-9a-fA-F]+", tag):
            height = int(tag, 16)
        else:
            raise _RpcError(-32602, f"invalid block number {tag!r}")
        chain = self.chains[op.chain_id]
        if op.behaviour == "lying_head" and tag in tags and height > chain.height():
            # It answers "latest" with a block it made up, but asked for that block by its
            # number it has none (monitor.checks.head_exists).
            return {
                "number": hex(height),
                "hash": chain.block_hash(height, f"lie-{op.operator_id}"),
                "parentHash": self.hash_at(op, height - 1),
                "timestamp": hex(chain.timestamp(height)),
            }
        if height > min(head, chain.height()):
            return None  # like a real node that has not seen the block (or invented its head)
        return {
            "number": hex(height),
            "hash": self.hash_at(op, height),
            "parentHash": self.hash_at(op, height - 1) if height > 0 else "0x" + "00" * 32,
            "timestamp": hex(self.chains[op.chain_id].timestamp(height)),
        }


def _asks_head(payload: dict[str, Any]) -> bool:
    method, params = payload.get("method"), payload.get("params")
    if method == "eth_blockNumber":
        return True
    return (
        method == "eth_getBlockByNumber" and isinstance(params, list) and params[:1] == ["latest"]
    )


def _error(req_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}


def _answer(state: _SimState, op: SimOperator, req: Any) -> dict[str, Any]:
    if not isinstance(req, dict) or not isinstance(req.get("method"), str):
        return _error(req.get("id") if isinstance(req, dict) else None, -32600, "invalid request")
    req_id = req.get("id")
    params = req.get("params", [])
    try:
        result = state.call(op, req["method"], params if isinstance(params, list) else [])
    except _RpcError as exc:
        return _error(req_id, exc.code, exc.message)
    return {"jsonrpc": "2.0", "id": req_id, "result": result}


def build_app(operators: list[SimOperator], chains: dict[int, SimChain]) -> Starlette:
    """One app serving every operator at ``POST /{operator_id}`` plus ``/_control``."""
    state = _SimState(operators, chains)

    async def rpc(request: Request) -> Response:
        op = state.operators.get(request.path_params["operator_id"])
        if op is None:
            return PlainTextResponse("unknown operator", status_code=404)
        if op.behaviour == "down":
            return PlainTextResponse("service unavailable", status_code=503)
        if op.behaviour == "slow":
            await asyncio.sleep(op.effective_delay)
        try:
            body = await request.body()
        except ClientDisconnect:  # the probe gave up (its timeout, its stop): nobody to answer
            return Response(status_code=499)
        try:
            payload = json.loads(body)
        except ValueError:
            return JSONResponse(_error(None, -32700, "parse error"))
        if op.behaviour == "malformed":
            # Valid JSON-RPC with a non-hex head for the head calls, non-JSON for the rest:
            # both must be rejected by a robust client.
            if isinstance(payload, dict) and _asks_head(payload):
                result: Any = "0xZZ"
                if payload.get("method") == "eth_getBlockByNumber":
                    result = {"number": "0xZZ", "hash": "0x" + "00" * 32}
                return JSONResponse({"jsonrpc": "2.0", "id": payload.get("id"), "result": result})
            return PlainTextResponse("<html>garbage \x00 not json-rpc", media_type="text/html")
        if isinstance(payload, list):
            if not payload:
                return JSONResponse(_error(None, -32600, "empty batch"))
            return JSONResponse([_answer(state, op, item) for item in payload])
        return JSONResponse(_answer(state, op, payload))

    async def control_get(request: Request) -> Response:
        ops = [dataclasses.asdict(op) for op in state.operators.values()]
        return JSONResponse({"operators": ops, "start_heights": state.start_heights})

    async def control_post(request: Request) -> Response:
        op = state.operators.get(request.path_params["operator_id"])
        if op is None:
            return JSONResponse({"error": "unknown operator"}, status_code=404)
        try:
            changes = json.loads(await request.body())
            if not isinstance(changes, dict):
                raise ValueError("control body must be a JSON object")
            state.set_behaviour(op, changes)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(dataclasses.asdict(state.operators[op.operator_id]))

    return Starlette(
        routes=[
            Route("/_control", control_get, methods=["GET"]),
            Route("/_control/{operator_id}", control_post, methods=["POST"]),
            Route("/{operator_id}", rpc, methods=["POST"]),
        ]
    )


class SimnetServer(ServerThread):
    """Runs the simnet in a background thread; use as a context manager from sync code."""

    def __init__(
        self,
        operators: list[SimOperator],
        chains: dict[int, SimChain],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 10.0,
    ):
        super().__init__(
            build_app(operators, chains),
            host=host,
            port=port,
            name="simnet",
            startup_timeout_s=startup_timeout_s,
        )

    def url_for(self, operator_id: str) -> str:
        return f"{self.url}/{operator_id}"

    def __enter__(self) -> SimnetServer:
        self.start()
        return self


async def serve_forever(
    operators: list[SimOperator], chains: dict[int, SimChain], host: str, port: int
) -> None:
    """Serve the simnet in the current event loop until cancelled or signalled."""
    await uvicorn.Server(uvicorn_config(build_app(operators, chains), host, port)).serve()


def write_registry(
    path: str | Path,
    operators: list[SimOperator],
    chains: dict[int, SimChain],
    *,
    url_base: str,
    probes: list[dict[str, Any]],
    collectors: list[dict[str, Any]] | None = None,
) -> None:
    """Write a registry YAML pointing every operator at its simnet URL."""
    chain_docs = [
        {
            "chain_id": c.chain_id,
            "name": f"simchain-{c.chain_id}",
            # Whole-second block times are written as ints to match hand-written registries.
            "block_time_s": int(c.block_time_s)
            if float(c.block_time_s).is_integer()
            else c.block_time_s,
            "confirmations": 3,
            "sla": {"availability": 0.99, "latency_p95_ms": 250, "max_lag_blocks": 2},
        }
        for c in chains.values()
    ]
    base = url_base.rstrip("/")
    op_docs: dict[str, dict[str, Any]] = {}
    for op in operators:
        doc = op_docs.setdefault(
            op.operator_id,
            {
                "id": op.operator_id,
                "name": f"{op.operator_id.title()} ({op.behaviour})",
                "endpoints": [],
            },
        )
        doc["endpoints"].append({"chain_id": op.chain_id, "url": f"{base}/{op.operator_id}"})
    document: dict[str, Any] = {
        "chains": chain_docs,
        "operators": list(op_docs.values()),
        "probes": probes,
    }
    if collectors:
        document["collectors"] = collectors
    Path(path).write_text(yaml.safe_dump(document, sort_keys=False))


def parse_operator_spec(spec: str, chain_id: int = DEMO_CHAIN_ID) -> SimOperator:
    """Parse ``id:behaviour[:param]``; param is delay_s for slow, lag_blocks for lagging (and
    the invented lead for lying_head)."""
    parts = spec.split(":")
    try:
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError("expected 'id:behaviour[:param]'")
        op = SimOperator(parts[0], parts[1], chain_id)
        if len(parts) == 3:
            if op.behaviour == "slow":
                op.delay_s = float(parts[2])
            elif op.behaviour in ("lagging", "lying_head"):
                op.lag_blocks = int(parts[2])
            else:
                raise ValueError(f"behaviour {op.behaviour!r} takes no parameter")
            op.__post_init__()  # re-validate the parameter
    except ValueError as exc:
        raise ValueError(f"bad operator spec {spec!r}: {exc}") from None
    return op
