"""Real chain state for the logs, archive and call checks: three anvil nodes on one chain with a
log-emitting transaction, a funded address, a storage slot and a canary contract; a fourth node,
``delta``, mined in step with them but whose state differed from block 1 on (another storage
value, another canary: a node on another chain from there, with its own block hashes); and a lying
front that forwards to the first node and rewrites one method's answer (an operator that lies about
one thing and is honest about everything else, block hashes included)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import yaml
from eth_account import Account
from eth_utils import to_checksum_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from monitor.probe.targets import ChainTarget, EndpointTarget
from monitor.serving import ServerThread
from tests.support.anvil import AnvilNode, ChainDriver, anvil_nodes

CHAIN_ID = 31337
CONFIRMATIONS = 3
# anvil's first default account (public test key, funded at genesis)
DEPLOYER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
LOG0_INIT_CODE = "0x60006000a0"  # PUSH1 0 PUSH1 0 LOG0: the deployment itself emits one log
CANARY = "0x000000000000000000000000000000000000c0de"
CANARY_CODE = "0x602a60005260206000f3"  # returns 42 as one 32-byte word
DELTA_CANARY_CODE = "0x602b60005260206000f3"  # returns 43
REVERTER = "0x00000000000000000000000000000000000dead0"
REVERTER_CODE = "0x60006000fd"  # PUSH1 0 PUSH1 0 REVERT
RICH = "0x00000000000000000000000000000000000a11ce"
RICH_BALANCE = 10**24  # more than 2**63: balances are 256-bit
SLOT = "0x0"
SLOT_VALUE = "0x" + "00" * 31 + "07"
DELTA_SLOT_VALUE = "0x" + "00" * 31 + "08"
HONEST = ("alpha", "bravo", "charlie")
STATE_BLOCK = 1  # everything above lands in block 1

Rewrite = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def result(answer: dict[str, Any], value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": answer.get("id"), "result": value}


def error(answer: dict[str, Any], message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": answer.get("id"), "error": {"code": -32000, "message": message}}


REWRITES: dict[str, tuple[str, Rewrite]] = {
    "empty-logs": ("eth_getLogs", lambda req, ans: result(ans, [])),
    # the true logs, each listed 5000 times: well-formed, and over the 1 MiB cap of run_checks
    "huge-logs": ("eth_getLogs", lambda req, ans: result(ans, ans["result"] * 5000)),
    "logs-error": ("eth_getLogs", lambda req, ans: error(ans, "query timeout exceeded")),
    "rich-liar": ("eth_getBalance", lambda req, ans: result(ans, hex(RICH_BALANCE + 1))),
    "missing-trie": ("eth_getBalance", lambda req, ans: error(ans, "missing trie node")),
    "call-liar": ("eth_call", lambda req, ans: result(ans, "0x" + "00" * 31 + "2b")),
    "call-garbage": ("eth_call", lambda req, ans: result(ans, 42)),
    "call-error": ("eth_call", lambda req, ans: error(ans, "header not found")),
}


class LyingFront(ServerThread):
    """``POST /{lie}`` (a key of REWRITES) forwards to ``upstream`` and rewrites one method."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        super().__init__(Starlette(routes=[Route("/{lie}", self._rpc, methods=["POST"])]))

    async def _rpc(self, request: Request) -> Response:
        method, rewrite = REWRITES[request.path_params["lie"]]
        payload = json.loads(await request.body())
        async with httpx.AsyncClient(timeout=5.0) as client:
            answer = (await client.post(self.upstream, json=payload)).json()
        if payload.get("method") == method:
            answer = rewrite(payload, answer)
        return JSONResponse(answer)


@dataclass
class StateNet:
    nodes: list[AnvilNode]  # HONEST, then delta
    front: LyingFront
    emitter: str  # the contract whose deployment, in block 1, logged

    def url(self, name: str) -> str:
        by_name = {node.name: node.url for node in self.nodes}
        return by_name.get(name) or f"{self.front.url}/{name}"

    def target(
        self,
        *names: str,
        checks: dict[str, Any],
        archive: tuple[str, ...] = (),
        quorum: int = 2,
    ) -> ChainTarget:
        return ChainTarget(
            chain_id=CHAIN_ID,
            name="anvil",
            block_time_s=1,
            confirmations=CONFIRMATIONS,
            quorum=quorum,
            checks=checks,
            endpoints=[
                EndpointTarget(
                    endpoint_id=i,
                    operator_id=name,
                    url=self.url(name),
                    archive=name in archive,
                )
                for i, name in enumerate(names, start=1)
            ],
        )


def _prepare(node: AnvilNode, raw_tx: str) -> None:
    delta = node.name == "delta"
    node.rpc("anvil_setCode", CANARY, DELTA_CANARY_CODE if delta else CANARY_CODE)
    node.rpc("anvil_setCode", REVERTER, REVERTER_CODE)
    node.rpc(
        "anvil_setStorageAt", CANARY, "0x" + "00" * 32, DELTA_SLOT_VALUE if delta else SLOT_VALUE
    )
    node.rpc("anvil_setBalance", RICH, hex(RICH_BALANCE))
    node.rpc("eth_sendRawTransaction", raw_tx)


def registry_yaml(checks: dict[str, Any]) -> str:
    """A registry with one chain whose ``checks`` section is ``checks`` (for parse_registry)."""
    chain = {"chain_id": CHAIN_ID, "name": "anvil", "block_time_s": 1, "confirmations": 3}
    return yaml.safe_dump({"chains": [{**chain, "checks": checks}]})


@contextlib.contextmanager
def state_network() -> Iterator[StateNet]:
    """Three honest nodes and delta, whose head is CONFIRMATIONS above block 1 (so block 1, with
    the state and the log, is the confirmed height), and a lying front before the first."""
    deployment = Account.sign_transaction(
        {
            "chainId": CHAIN_ID,
            "nonce": 0,
            "gas": 100_000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
            "data": LOG0_INIT_CODE,
            "value": 0,
        },
        DEPLOYER_KEY,
    )
    raw = "0x" + deployment.raw_transaction.hex().removeprefix("0x")
    tx_hash = "0x" + deployment.hash.hex().removeprefix("0x")
    with anvil_nodes(*(AnvilNode(n) for n in (*HONEST, "delta"))) as nodes:
        for node in nodes:
            _prepare(node, raw)
        driver = ChainDriver(nodes)
        for _ in range(STATE_BLOCK + CONFIRMATIONS):
            driver.mine_next()
        assert driver.errors == []
        hashes = {node.block_hash(STATE_BLOCK + CONFIRMATIONS) for node in nodes[:3]}
        assert len(hashes) == 1, "the honest nodes are not on one chain"
        assert nodes[3].block_hash(STATE_BLOCK) != nodes[0].block_hash(STATE_BLOCK)
        receipt = nodes[0].rpc("eth_getTransactionReceipt", tx_hash)
        assert receipt["blockNumber"] == hex(STATE_BLOCK)
        with LyingFront(nodes[0].url) as front:
            assert isinstance(front, LyingFront)
            yield StateNet(nodes, front, to_checksum_address(receipt["contractAddress"]))
