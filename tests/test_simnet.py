"""Simnet over real loopback HTTP: one operator per behaviour."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from monitor.simnet import (
    DEMO_OPERATORS,
    SimChain,
    SimnetServer,
    SimOperator,
    demo_chains,
    parse_operator_spec,
    write_registry,
)

CHAIN = 4242
BLOCK_TIME = 0.2
SLOW_DELAY = 0.25

OPERATORS = [
    SimOperator("healthy", "healthy", CHAIN),
    SimOperator("lagging", "lagging", CHAIN, lag_blocks=3),
    SimOperator("fork", "fork", CHAIN),
    SimOperator("slow", "slow", CHAIN, delay_s=SLOW_DELAY),
    SimOperator("wrongchain", "wrong_chain", CHAIN),
    SimOperator("malformed", "malformed", CHAIN),
    SimOperator("down", "down", CHAIN),
    SimOperator("stalled", "stalled", CHAIN),
    SimOperator("liar", "lying_head", CHAIN, lag_blocks=7),
    SimOperator("switchable", "healthy", CHAIN),
]


@pytest.fixture(scope="module")
def simnet() -> Iterator[SimnetServer]:
    with SimnetServer(OPERATORS, {CHAIN: SimChain(CHAIN, BLOCK_TIME)}) as server:
        yield server


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


def rpc(client: httpx.Client, url: str, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
    resp = client.post(url, json=body)
    assert resp.status_code == 200
    data = resp.json()
    assert data["id"] == 7
    return data.get("result", data.get("error"))


def head(client: httpx.Client, url: str) -> int:
    return int(rpc(client, url, "eth_blockNumber"), 16)


def wait_until(cond: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_healthy_head_advances_and_chain_id(simnet: SimnetServer, client: httpx.Client) -> None:
    url = simnet.url_for("healthy")
    assert rpc(client, url, "eth_chainId") == hex(CHAIN)
    start = head(client, url)
    assert start >= 1000
    assert wait_until(lambda: head(client, url) > start)
    block = rpc(client, url, "eth_getBlockByNumber", "latest", False)
    parent = rpc(client, url, "eth_getBlockByNumber", hex(int(block["number"], 16) - 1), False)
    assert block["parentHash"] == parent["hash"]


def test_lagging_is_behind_and_null_above_head(simnet: SimnetServer, client: httpx.Client) -> None:
    lag_head = head(client, simnet.url_for("lagging"))
    healthy_head = head(client, simnet.url_for("healthy"))
    assert 2 <= healthy_head - lag_head <= 4  # 3 blocks, +/- one tick between calls
    url = simnet.url_for("lagging")
    assert rpc(client, url, "eth_getBlockByNumber", hex(lag_head + 2), False) is None
    block = rpc(client, url, "eth_getBlockByNumber", hex(lag_head), False)
    same = rpc(client, simnet.url_for("healthy"), "eth_getBlockByNumber", hex(lag_head), False)
    assert block["hash"] == same["hash"]


def test_lying_head_claims_blocks_it_cannot_serve(
    simnet: SimnetServer, client: httpx.Client
) -> None:
    url = simnet.url_for("liar")
    claimed, real = head(client, url), head(client, simnet.url_for("healthy"))
    assert 6 <= claimed - real <= 8  # 7 blocks of invented lead, +/- one tick between calls
    assert rpc(client, url, "eth_getBlockByNumber", hex(claimed), False) is None
    block = rpc(client, url, "eth_getBlockByNumber", hex(real - 1), False)
    same = rpc(client, simnet.url_for("healthy"), "eth_getBlockByNumber", hex(real - 1), False)
    assert block["hash"] == same["hash"]  # honest below its lie: only the head is invented


def test_syncing_and_logs_answer_like_a_synced_node_without_transactions(
    simnet: SimnetServer, client: httpx.Client
) -> None:
    url = simnet.url_for("healthy")
    assert rpc(client, url, "eth_syncing") is False
    assert rpc(client, url, "eth_getLogs", {"fromBlock": "0x1", "toBlock": "0x2"}) == []


def test_fork_diverges_from_canonical(simnet: SimnetServer, client: httpx.Client) -> None:
    ctl = client.get(f"http://127.0.0.1:{simnet.port}/_control").json()
    fork_point = ctl["start_heights"][str(CHAIN)]
    fork_url, healthy_url = simnet.url_for("fork"), simnet.url_for("healthy")
    assert wait_until(lambda: head(client, fork_url) > fork_point + 1)
    h = hex(fork_point + 1)
    forked = rpc(client, fork_url, "eth_getBlockByNumber", h, False)
    canonical = rpc(client, healthy_url, "eth_getBlockByNumber", h, False)
    assert forked["hash"] != canonical["hash"]
    # Both share history up to the fork point.
    assert forked["parentHash"] == canonical["parentHash"]
    lagging = rpc(client, simnet.url_for("lagging"), "eth_getBlockByNumber", h, False)
    assert lagging is None or lagging["hash"] == canonical["hash"]


def test_slow_takes_at_least_delay(simnet: SimnetServer, client: httpx.Client) -> None:
    t0 = time.monotonic()
    assert head(client, simnet.url_for("slow")) >= 1000
    assert time.monotonic() - t0 >= SLOW_DELAY


def test_wrong_chain_id(simnet: SimnetServer, client: httpx.Client) -> None:
    assert rpc(client, simnet.url_for("wrongchain"), "eth_chainId") == hex(CHAIN + 1)


def test_malformed_is_not_valid(simnet: SimnetServer, client: httpx.Client) -> None:
    url = simnet.url_for("malformed")
    result = rpc(client, url, "eth_blockNumber")
    with pytest.raises(ValueError):
        int(result, 16)
    resp = client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        resp.json()


def test_down_and_unknown_operator(simnet: SimnetServer, client: httpx.Client) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
    assert client.post(simnet.url_for("down"), json=body).status_code == 503
    assert client.post(simnet.url_for("nobody"), json=body).status_code == 404


def test_batch_unknown_method_and_parse_error(simnet: SimnetServer, client: httpx.Client) -> None:
    url = simnet.url_for("healthy")
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": "b", "method": "eth_nope", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_getBlockByNumber", "params": ["latest", False]},
    ]
    answers = client.post(url, json=batch).json()
    assert [a["id"] for a in answers] == [1, "b", 3]
    assert answers[0]["result"] == hex(CHAIN)
    assert answers[1]["error"]["code"] == -32601
    assert answers[2]["result"]["hash"].startswith("0x")
    bad = client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad.json()["error"]["code"] == -32700


def test_stalled_and_live_control(simnet: SimnetServer, client: httpx.Client) -> None:
    frozen = head(client, simnet.url_for("stalled"))
    assert head(client, simnet.url_for("healthy")) > frozen or wait_until(
        lambda: head(client, simnet.url_for("healthy")) > frozen
    )
    assert head(client, simnet.url_for("stalled")) == frozen

    url = simnet.url_for("switchable")
    control = f"http://127.0.0.1:{simnet.port}/_control/switchable"
    assert client.post(control, json={"behaviour": "stalled"}).status_code == 200
    stuck = head(client, url)
    time.sleep(2.5 * BLOCK_TIME)
    assert head(client, url) == stuck
    assert client.post(control, json={"behaviour": "healthy"}).json()["behaviour"] == "healthy"
    assert head(client, url) > stuck
    assert client.post(control, json={"behaviour": "bogus"}).status_code == 400
    ops = client.get(f"http://127.0.0.1:{simnet.port}/_control").json()["operators"]
    assert {o["operator_id"]: o["behaviour"] for o in ops}["switchable"] == "healthy"


def test_chain_is_deterministic() -> None:
    a, b = SimChain(1, 12.0, genesis_time=0.0), SimChain(1, 12.0, genesis_time=0.0)
    assert a.block_hash(5) == b.block_hash(5) != a.block_hash(5, "fork-x")
    assert a.height(120.0) == 10
    assert SimChain(1, 1.0).height() >= 1000


def test_parse_operator_spec() -> None:
    assert parse_operator_spec("alpha:healthy") == SimOperator("alpha", "healthy", 1337)
    assert parse_operator_spec("delta:slow:0.3").delay_s == 0.3
    assert parse_operator_spec("bravo:lagging:4").lag_blocks == 4
    for bad in ("alpha", "alpha:nope", "a:healthy:3", "b:lagging:x", ":healthy", "a:b:c:d"):
        with pytest.raises(ValueError, match="bad operator spec"):
            parse_operator_spec(bad)


def test_write_registry(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    probes = [{"address": "0x" + "ab" * 20, "name": "probe-local-1", "region": "local"}]
    write_registry(
        path, DEMO_OPERATORS, demo_chains(), url_base="http://127.0.0.1:9/", probes=probes
    )
    doc = yaml.safe_load(path.read_text())
    assert doc["chains"] == [
        {
            "chain_id": 1337,
            "name": "simchain-1337",
            "block_time_s": 1,
            "confirmations": 3,
            "sla": {"availability": 0.99, "latency_p95_ms": 250, "max_lag_blocks": 2},
        }
    ]
    assert doc["operators"][1] == {
        "id": "bravo",
        "name": "Bravo (lagging)",
        "endpoints": [{"chain_id": 1337, "url": "http://127.0.0.1:9/bravo"}],
    }
    assert [o["id"] for o in doc["operators"]] == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert doc["probes"] == probes
