"""The fault proxy (tests/support/proxy.py): forwards faithfully, delays by what it is told (not
much more), drops the share it is told, deterministically for a seed, and every setting changes
live. The upstream is a small JSON-RPC echo server over loopback; the probe's own RpcClient shows
how each fault is classified."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from monitor.exceptions import RpcUnavailable
from monitor.rpc import RpcClient
from monitor.serving import ServerThread
from tests.support.proxy import FaultProxy


def _echo_app() -> Starlette:
    async def rpc(request: Request) -> Response:
        path = request.url.path
        if path == "/teapot":
            return PlainTextResponse("short and stout", status_code=418)
        body = json.loads(await request.body())
        return JSONResponse(
            {
                "jsonrpc": "2.0",
                "id": body["id"],
                "result": {
                    "method": body["method"],
                    "params": body["params"],
                    "path": path,
                    "query": request.url.query,
                    "x_custom": request.headers.get("x-custom"),
                },
            }
        )

    return Starlette(routes=[Route("/{path:path}", rpc, methods=["POST"])])


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerThread]:
    with ServerThread(_echo_app(), name="echo") as server:
        yield server


def _call(client: httpx.Client, url: str, request_id: int = 1) -> httpx.Response:
    payload = {"jsonrpc": "2.0", "id": request_id, "method": "eth_blockNumber", "params": []}
    return client.post(url, json=payload)


def test_forwards_body_path_headers_and_status(upstream: ServerThread) -> None:
    with FaultProxy(upstream.url) as proxy, httpx.Client(timeout=5) as client:
        payload = {"jsonrpc": "2.0", "id": 7, "method": "eth_getBlockByNumber", "params": ["0x1"]}
        response = client.post(
            f"{proxy.url}/key/abc?x=1", json=payload, headers={"x-custom": "kept"}
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "jsonrpc": "2.0",
            "id": 7,
            "result": {
                "method": "eth_getBlockByNumber",
                "params": ["0x1"],
                "path": "/key/abc",
                "query": "x=1",
                "x_custom": "kept",
            },
        }
        teapot = client.post(f"{proxy.url}/teapot", json=payload)
        assert (teapot.status_code, teapot.text) == (418, "short and stout")
        for i in range(20):  # keep-alive: one client connection for every request
            assert _call(client, proxy.url, i).json()["id"] == i
        assert proxy.stats.connections == 1
        assert proxy.stats.requests == proxy.stats.forwarded == 22
        assert proxy.stats.dropped == 0


def test_unreachable_upstream_is_502() -> None:
    with FaultProxy("http://127.0.0.1:9") as proxy, httpx.Client(timeout=5) as client:
        assert _call(client, proxy.url).status_code == 502
        assert proxy.stats.upstream_errors == 1


def test_delay_is_honoured_and_changes_live(upstream: ServerThread) -> None:
    with FaultProxy(upstream.url, delay_s=0.2) as proxy, httpx.Client(timeout=5) as client:
        _call(client, proxy.url)  # connections warm on both sides
        for _ in range(5):
            started = time.perf_counter()
            assert _call(client, proxy.url).status_code == 200
            elapsed = time.perf_counter() - started
            assert 0.2 <= elapsed < 0.2 * 1.1 + 0.01, elapsed
        proxy.delay_s = 0.0
        started = time.perf_counter()
        _call(client, proxy.url)
        assert time.perf_counter() - started < 0.05


def _expected_drops(seed: int, rate: float, n: int) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < rate for _ in range(n)]


@pytest.mark.parametrize("mode", ["close", "503"])
def test_drop_share_is_seeded_and_roughly_honoured(upstream: ServerThread, mode: Any) -> None:
    n, rate, seed = 200, 0.3, 1234
    with (
        FaultProxy(upstream.url, drop_rate=rate, drop_mode=mode, seed=seed) as proxy,
        httpx.Client(timeout=5) as client,
    ):
        dropped: list[bool] = []
        for i in range(n):
            try:
                response = _call(client, proxy.url, i)
            except httpx.RemoteProtocolError:  # "close": no answer at all
                assert mode == "close"
                dropped.append(True)
                continue
            if response.status_code == 503:
                assert mode == "503"
                assert response.content == b""
                dropped.append(True)
            else:
                assert response.status_code == 200 and response.json()["id"] == i
                dropped.append(False)
        # Exactly the requests the seeded generator picks: the same seed, the same drops.
        assert dropped == _expected_drops(seed, rate, n)
        assert 0.2 * n <= sum(dropped) <= 0.4 * n
        assert proxy.stats.dropped == sum(dropped)
        assert proxy.stats.forwarded == n - sum(dropped)

        proxy.drop_rate = 0.0  # live: nothing dropped from now on
        assert all(_call(client, proxy.url, i).status_code == 200 for i in range(20))
        proxy.drop_rate = 1.0
        if mode == "503":
            assert _call(client, proxy.url).status_code == 503
        else:
            with pytest.raises(httpx.RemoteProtocolError):
                _call(client, proxy.url)


def test_probe_rpc_client_sees_delay_and_drops() -> None:
    """What a probe measures through the proxy: latency within 10 % of the delay (the echo
    server answers in about a millisecond); a closed connection is a transport failure, a 503
    an HTTP status failure, both unavailability."""

    async def scenario(proxy: FaultProxy) -> None:
        rpc = RpcClient(timeout_s=2.0, max_response_bytes=1 << 20)
        try:
            await rpc.call(proxy.url, "eth_chainId", [])  # warm the connections
            proxy.delay_s = 0.3
            for _ in range(3):
                result, latency_us = await rpc.call(proxy.url, "eth_blockNumber", [])
                assert result["method"] == "eth_blockNumber"
                assert 300_000 <= latency_us <= 330_000, latency_us
            proxy.delay_s = 0.0
            proxy.drop_rate = 1.0
            with pytest.raises(RpcUnavailable) as closed:
                await rpc.call(proxy.url, "eth_blockNumber", [])
            assert closed.value.kind == "transport"
            proxy.drop_mode = "503"
            with pytest.raises(RpcUnavailable) as refused:
                await rpc.call(proxy.url, "eth_blockNumber", [])
            assert refused.value.kind == "http_status"
        finally:
            await rpc.aclose()

    with ServerThread(_echo_app(), name="echo") as upstream, FaultProxy(upstream.url) as proxy:
        asyncio.run(scenario(proxy))


def test_stop_is_prompt_with_requests_in_flight(upstream: ServerThread) -> None:
    proxy = FaultProxy(upstream.url, delay_s=30.0).start()
    try:
        with httpx.Client(timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
            _call(client, proxy.url)
    finally:
        started = time.perf_counter()
        proxy.stop()
    assert time.perf_counter() - started < 2.0
    with httpx.Client(timeout=1) as client, pytest.raises(httpx.ConnectError):
        _call(client, proxy.url)
