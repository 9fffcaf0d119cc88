"""The head check through run_chain, against the simnet and hand-written nodes over loopback.

The helpers here (FakeNodes, checks_network, run_checks) are shared with the other check tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from monitor.checks.base import ChainMemory, Check
from monitor.checks.registry import CHECKS
from monitor.ingest.schemas import INCORRECT_ERRORS, ProbeResult
from monitor.probe.rounds import run_chain
from monitor.probe.targets import ChainTarget, EndpointTarget
from monitor.rpc import RpcClient
from monitor.serving import ServerThread
from monitor.simnet import SimChain, SimnetServer, SimOperator

CHAIN_ID = 4243
BLOCK_TIME_S = 0.5
CONFIRMATIONS = 1
LEAD = 1000
SLOW_DELAY_S = 0.1
TIMEOUT_S = 2.0

SIM_OPERATORS = [
    SimOperator("healthy-a", "healthy", CHAIN_ID),
    SimOperator("healthy-b", "healthy", CHAIN_ID),
    SimOperator("slow", "slow", CHAIN_ID, delay_s=SLOW_DELAY_S),
    SimOperator("fork", "fork", CHAIN_ID),
    SimOperator("lagging", "lagging", CHAIN_ID, lag_blocks=4),
    SimOperator("wrongchain", "wrong_chain", CHAIN_ID),
    SimOperator("malformed", "malformed", CHAIN_ID),
    SimOperator("down", "down", CHAIN_ID),
]


@dataclass(frozen=True)
class Node:
    """A hand-written node serving the SimChain, with one twist."""

    chain_id_offset: int = 0  # answer eth_chainId with chain_id + offset
    head_lead: int = 0  # claim this many blocks above the real head
    hang: bool = False  # never answer (until the server is released)
    block: str = "good"  # by number: good | null | wrong_number | bad_hash | newline_hash
    phantom: bool = False  # has no block above the real chain height (with head_lead: invents)
    syncing: str = "false"  # false | behind (100 blocks) | close (1 block) | garbage | unsupported
    frozen: bool = False  # its head stays where the chain was when the nodes started
    history: str = "good"  # good | rewritten (other hashes below the height the net started at)
    backwards_by: int = 0  # from its second eth_blockNumber on, this many blocks below the chain


class FakeNodes(ServerThread):
    """``POST /{name}`` for each node in ``nodes``; ``calls`` counts requests by (name, method)."""

    def __init__(self, chain: SimChain, nodes: Mapping[str, Node]) -> None:
        self.chain = chain
        self.nodes = dict(nodes)
        self.release = threading.Event()
        self.history_from = chain.height()  # a "rewritten" node differs below this height
        self.calls: Counter[tuple[str, str]] = Counter()
        app = Starlette(routes=[Route("/{name}", self._rpc, methods=["POST"])])
        super().__init__(app, name="fake-nodes")

    async def _rpc(self, request: Request) -> Response:
        name = request.path_params["name"]
        node = self.nodes.get(name)
        if node is None:
            return PlainTextResponse("unknown node", status_code=404)
        payload = json.loads(await request.body())
        if node.hang:
            deadline = time.monotonic() + 30.0  # bounded even if never released
            while not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        method, params = payload["method"], payload.get("params", [])
        # The probe's head call, eth_getBlockByNumber("latest"), counts as eth_blockNumber.
        asks_head = method == "eth_blockNumber" or params[:1] == ["latest"]
        self.calls[name, "eth_blockNumber" if asks_head else method] += 1
        chain_head = (self.history_from if node.frozen else self.chain.height()) + node.head_lead
        if self.calls[name, "eth_blockNumber"] >= 2:
            chain_head -= node.backwards_by
        result: Any
        if method == "eth_chainId":
            result = hex(self.chain.chain_id + node.chain_id_offset)
        elif method == "eth_blockNumber":
            result = hex(chain_head)
        elif method == "eth_getBlockByNumber":
            if params[0] == "latest":  # the head call: the twists are for blocks by number
                result = self._block(Node(), chain_head, chain_head)
            else:
                result = self._block(node, int(params[0], 16), chain_head)
        elif method == "eth_syncing" and node.syncing != "unsupported":
            statuses = {
                "false": False,
                "behind": {"startingBlock": "0x0", "currentBlock": "0x1", "highestBlock": "0x65"},
                "close": {"startingBlock": "0x0", "currentBlock": "0x64", "highestBlock": "0x65"},
                "garbage": "yes",
            }
            result = statuses[node.syncing]
        elif method == "eth_getLogs":
            result = []
        else:
            error = {"code": -32601, "message": f"no method {method}"}
            return JSONResponse({"jsonrpc": "2.0", "id": payload["id"], "error": error})
        return JSONResponse({"jsonrpc": "2.0", "id": payload["id"], "result": result})

    def _block(self, node: Node, height: int, chain_head: int) -> dict[str, str] | None:
        if height > chain_head or node.block == "null":
            return None
        if node.phantom and height > self.chain.height():
            return None
        number, block_hash = hex(height), self.chain.block_hash(height)
        if node.history == "rewritten" and height < self.history_from:
            block_hash = self.chain.block_hash(height, "rewritten")
        if node.block == "wrong_number":
            number = hex(height + 1)
        elif node.block == "bad_hash":
            block_hash = "0x1234"
        elif node.block == "newline_hash":
            block_hash += "\n"
        return {"number": number, "hash": block_hash}

    def stop(self) -> None:
        self.release.set()  # let hung handlers return before the server shuts down
        super().stop()


@dataclass
class ChecksNet:
    sim: SimnetServer
    fake: FakeNodes
    chain: SimChain
    start_height: int

    def url(self, name: str) -> str:
        return self.fake.url + f"/{name}" if name in self.fake.nodes else self.sim.url_for(name)

    def target(self, *names: str, confirmations: int = CONFIRMATIONS) -> ChainTarget:
        endpoints = [
            EndpointTarget(endpoint_id=i, operator_id=name, url=self.url(name))
            for i, name in enumerate(names, start=1)
        ]
        return ChainTarget(
            chain_id=CHAIN_ID,
            name="checks",
            block_time_s=BLOCK_TIME_S,
            confirmations=confirmations,
            endpoints=endpoints,
        )


@contextlib.contextmanager
def checks_network(nodes: Mapping[str, Node], *, wait_blocks: int = 0) -> Iterator[ChecksNet]:
    """The simnet (SIM_OPERATORS) and ``nodes`` on one SimChain. ``wait_blocks``: blocks to let
    pass after the simnet's start, so that the fork has diverged at the check height."""
    chain = SimChain(CHAIN_ID, BLOCK_TIME_S)
    with SimnetServer(SIM_OPERATORS, {CHAIN_ID: chain}) as sim, FakeNodes(chain, nodes) as fake:
        assert isinstance(fake, FakeNodes)
        control = httpx.get(f"{sim.url}/_control", timeout=5.0).json()
        start_height = control["start_heights"][str(CHAIN_ID)]
        deadline = time.monotonic() + (wait_blocks + 2) * BLOCK_TIME_S + 5.0
        while chain.height() < start_height + wait_blocks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert chain.height() >= start_height + wait_blocks
        yield ChecksNet(sim, fake, chain, start_height)


def run_checks(
    target: ChainTarget,
    checks: Mapping[str, Check] = CHECKS,
    *,
    timeout_s: float = TIMEOUT_S,
) -> dict[str, ProbeResult]:
    """One round of ``target`` through ``checks``; results by operator id, in endpoint order."""
    return run_rounds([target], checks, timeout_s=timeout_s)[0]


def run_rounds(
    targets: Sequence[ChainTarget],
    checks: Mapping[str, Check] = CHECKS,
    *,
    pause_s: float = 0.0,
    memory: ChainMemory | None = None,
    timeout_s: float = TIMEOUT_S,
) -> list[dict[str, ProbeResult]]:
    """One round per target, ``pause_s`` apart, sharing one ``memory`` as the probe does: the
    same chain in successive rounds (a target may differ from the one before, as a registry
    change would make it). Results by operator id, per round."""
    memory = memory if memory is not None else ChainMemory()

    async def run() -> list[list[ProbeResult]]:
        out = []
        rpc = RpcClient(timeout_s=timeout_s, max_response_bytes=1024 * 1024)
        try:
            for i, target in enumerate(targets):
                if i and pause_s:
                    await asyncio.sleep(pause_s)
                out.append(
                    await run_chain(
                        target,
                        rpc=rpc,
                        semaphore=asyncio.Semaphore(16),
                        checks=checks,
                        memory=memory,
                    )
                )
        finally:
            await rpc.aclose()
        return out

    rounds = asyncio.run(run())
    for target, results in zip(targets, rounds, strict=True):
        assert [r.endpoint_id for r in results] == [e.endpoint_id for e in target.endpoints]
    return [{r.operator_id: r for r in results} for results in rounds]


def assert_consistent(r: ProbeResult, target: ChainTarget) -> None:
    """The invariants every result holds, whatever the endpoint did."""
    assert r.chain_id == target.chain_id
    if r.reference_head is not None:
        assert r.check_height == max(0, r.reference_head - target.confirmations)
    if r.ok and r.head is not None and r.reference_head is not None:
        assert r.lag_blocks == max(0, r.reference_head - r.head)
        assert r.lag_ms == round(r.lag_blocks * target.block_time_s * 1000)
    else:
        assert r.lag_blocks is None and r.lag_ms is None
    if r.ok:
        assert (r.correct is False) == (r.error in INCORRECT_ERRORS)
    else:
        assert r.error in {"timeout", "transport", "http_status", "rpc_error"}
        assert r.latency_us is None and r.correct is None
    if r.head is not None and r.ok:
        assert r.latency_us is not None and r.latency_us > 0


FAKE_NODES = {
    "liar": Node(head_lead=LEAD),
    "liar-b": Node(head_lead=LEAD),
    "huge-liar": Node(head_lead=2**64),
    "hung": Node(hang=True),
    "backwards": Node(backwards_by=12),
}
MIX = (
    "healthy-a",
    "healthy-b",
    "slow",
    "fork",
    "lagging",
    "wrongchain",
    "malformed",
    "down",
    "liar",
)


@pytest.fixture(scope="module")
def net() -> Iterator[ChecksNet]:
    with checks_network(FAKE_NODES) as n:
        yield n


@pytest.fixture(scope="module")
def mix(net: ChecksNet) -> tuple[ChainTarget, dict[str, ProbeResult], int, int, int]:
    """One full round of the mix; with the chain height just before and after it and the
    round's start time (ms)."""
    target = net.target(*MIX)
    before, started_ms = net.chain.height(), time.time_ns() // 1_000_000
    results = run_checks(target)
    return target, results, before, net.chain.height(), started_ms


def test_reference_head_is_the_honest_head(mix: Any) -> None:
    _, results, before, after, _ = mix
    references = {r.reference_head for r in results.values()}
    assert len(references) == 1
    reference = references.pop()
    assert reference is not None
    assert before <= reference <= after
    honest = [results[n].head for n in ("healthy-a", "healthy-b", "slow", "fork")]
    assert all(h is not None and reference - 1 <= h <= reference + 1 for h in honest)


def test_liar_far_ahead_is_head_ahead(mix: Any) -> None:
    _, results, before, after, _ = mix
    liar = results["liar"]
    assert liar.ok is True
    assert liar.error == "head_ahead"
    assert liar.correct is False
    # Its head is the chain's when it answered, during the round, plus LEAD (not `after`: a
    # loaded host can stretch the round over more than a block).
    assert liar.head is not None and before + LEAD <= liar.head <= after + LEAD
    assert liar.lag_blocks == 0  # above the reference, never negative
    assert liar.block_hash is None  # not asked once incorrect


def test_healthy_and_slow_are_correct_and_on_time(mix: Any) -> None:
    _, results, _, _, _ = mix
    for name in ("healthy-a", "healthy-b", "slow"):
        r = results[name]
        assert (r.ok, r.error, r.correct) == (True, None, True), name
        assert r.lag_blocks is not None and r.lag_blocks <= 1
        assert r.latency_us is not None and r.latency_us > 0
    slow_us = results["slow"].latency_us
    assert slow_us is not None and slow_us >= SLOW_DELAY_S * 1_000_000


def test_lagging_endpoint_lags(mix: Any) -> None:
    _, results, _, _, _ = mix
    r = results["lagging"]
    assert r.ok is True and r.error is None
    assert r.lag_blocks is not None and 3 <= r.lag_blocks <= 5
    assert r.lag_ms == r.lag_blocks * 500


def test_unavailable_and_incorrect_have_no_head(mix: Any) -> None:
    _, results, _, _, _ = mix
    down = results["down"]
    assert (down.ok, down.error, down.correct, down.head, down.latency_us) == (
        False,
        "http_status",
        None,
        None,
        None,
    )
    for name, error in (("wrongchain", "wrong_chain"), ("malformed", "malformed")):
        r = results[name]
        assert (r.ok, r.error, r.correct, r.head) == (True, error, False, None), name


def test_every_result_is_consistent(mix: Any) -> None:
    target, results, _, _, started_ms = mix
    for r in results.values():
        assert_consistent(r, target)
        assert started_ms - 1000 <= r.observed_at_ms <= time.time_ns() // 1_000_000


def test_head_check_alone_classifies_malformed_head(net: ChecksNet) -> None:
    # The simnet's malformed node answers eth_blockNumber with valid JSON-RPC and "0xZZ".
    target = net.target("healthy-a", "healthy-b", "malformed", "down")
    results = run_checks(target, {"head": CHECKS["head"]})
    assert (results["malformed"].ok, results["malformed"].error) == (True, "malformed")
    assert results["malformed"].correct is False
    assert results["down"].error == "http_status"
    for name in ("healthy-a", "healthy-b"):
        r = results[name]
        # No hash check ran: correctness is unknown, never assumed.
        assert (r.error, r.correct, r.check_height) == (None, None, None)
        assert r.reference_head is not None and r.lag_blocks is not None and r.lag_blocks <= 1


def test_single_endpoint_sets_its_own_reference(net: ChecksNet) -> None:
    results = run_checks(net.target("healthy-a"), {"head": CHECKS["head"]})
    r = results["healthy-a"]
    assert r.reference_head == r.head and r.lag_blocks == 0


def test_a_liar_among_two_cannot_lift_the_reference(net: ChecksNet) -> None:
    results = run_checks(net.target("healthy-a", "liar"))
    honest, liar = results["healthy-a"], results["liar"]
    assert honest.reference_head == honest.head  # quorum of 2: the lower of the two
    assert (honest.lag_blocks, honest.error) == (0, None)
    assert liar.error == "head_ahead" and liar.correct is False
    # One honest hash alone is no majority of two agreeing: unknown, not correct.
    assert honest.correct is None


def test_hung_endpoint_does_not_delay_the_others(net: ChecksNet) -> None:
    timeout_s = 0.5
    target = net.target("healthy-a", "hung", "healthy-b", "slow")
    started = time.monotonic()
    results = run_checks(target, timeout_s=timeout_s)
    elapsed = time.monotonic() - started
    # The hung node costs one timeout (it is not asked again), concurrently with the others.
    assert elapsed < timeout_s + 3 * SLOW_DELAY_S + 0.7
    hung = results["hung"]
    assert (hung.ok, hung.error, hung.correct, hung.head, hung.latency_us) == (
        False,
        "timeout",
        None,
        None,
        None,
    )
    for name in ("healthy-a", "healthy-b", "slow"):
        assert (results[name].ok, results[name].correct) == (True, True), name


def test_liar_beyond_uint63_does_not_break_the_round(net: ChecksNet) -> None:
    results = run_checks(net.target("healthy-a", "healthy-b", "huge-liar"))
    # Beyond what a result can hold (2**63 - 1): the answer itself is malformed.
    assert (results["huge-liar"].error, results["huge-liar"].correct) == ("malformed", False)
    assert results["healthy-a"].correct is True


def test_one_far_ahead_of_three_cannot_lift_the_reference(net: ChecksNet) -> None:
    target = net.target("healthy-a", "healthy-b", "liar")
    results = run_checks(target)
    assert (results["liar"].error, results["liar"].correct) == ("head_ahead", False)
    honest = [results[name] for name in ("healthy-a", "healthy-b")]
    # Quorum of two among three: the lower of the two honest heads, a block at most apart.
    assert {r.reference_head for r in honest} == {min(r.head for r in honest if r.head is not None)}
    for r in honest:
        assert (r.ok, r.error, r.correct, r.lag_blocks) == (True, None, True, 0)
    for r in results.values():
        assert_consistent(r, target)


def test_a_head_going_backwards_only_lags(net: ChecksNet) -> None:
    # Two rounds sharing the probe's memory; in the second, "backwards" reports a head 12 blocks
    # below its first one (a load balancer switching to a node behind). The reference comes from
    # this round's quorum, so it does not follow; that endpoint just lags.
    target = net.target("healthy-a", "healthy-b", "backwards")
    checks = {name: CHECKS[name] for name in ("head", "head_exists", "stalled", "block_hash")}
    first, second = run_rounds([target, target], checks)
    before, back = first["backwards"], second["backwards"]
    assert (before.error, before.correct, before.lag_blocks) == (None, True, 0)
    assert before.head is not None and back.head is not None and back.reference_head is not None
    assert back.head < before.head
    assert before.reference_head is not None and back.reference_head >= before.reference_head
    assert back.lag_blocks is not None and 11 <= back.lag_blocks <= 13
    # Behind the confirmed height: not asked for its hash, unknown rather than wrong.
    assert (back.ok, back.error, back.correct) == (True, None, None)
    for name in ("healthy-a", "healthy-b"):
        r = second[name]
        assert (r.error, r.correct, r.lag_blocks) == (None, True, 0), name
    for r in second.values():
        assert_consistent(r, target)
