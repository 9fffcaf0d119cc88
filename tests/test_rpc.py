"""RpcClient against real loopback servers: every answer and every failure, classified once."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from monitor.exceptions import RpcError, RpcMalformed, RpcUnavailable
from monitor.rpc import RpcClient, parse_hash, parse_quantity
from monitor.serving import ServerThread

TIMEOUT_S = 0.5
SLACK_S = 0.5
MAX_BYTES = 4096
HASH = "0x" + "ab" * 32

# Handlers that hang poll this event, so teardown can release them at once (and every wait is
# bounded even if it never is).
release = threading.Event()


async def _wait_released(limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not release.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _request_id(request: Request) -> Any:
    return json.loads(await request.body()).get("id")


def _ok(request_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


async def good(request: Request) -> Response:
    return JSONResponse(_ok(await _request_id(request), "0x10"))


async def null_result(request: Request) -> Response:
    return JSONResponse(_ok(await _request_id(request), None))


async def sleepy(request: Request) -> Response:
    request_id = await _request_id(request)
    await _wait_released()
    return JSONResponse(_ok(request_id, "0x1"))


async def unavailable(request: Request) -> Response:
    return PlainTextResponse("service unavailable", status_code=503)


async def not_found(request: Request) -> Response:
    # A JSON-RPC-looking body does not make a non-200 answer usable.
    return JSONResponse(_ok(await _request_id(request), "0x1"), status_code=404)


async def rpc_error(request: Request) -> Response:
    error = {"code": -32000, "message": "header not found"}
    return JSONResponse({"jsonrpc": "2.0", "id": await _request_id(request), "error": error})


async def bad_error_object(request: Request) -> Response:
    error = {"code": "oops", "message": "code is not an integer"}
    return JSONResponse({"jsonrpc": "2.0", "id": await _request_id(request), "error": error})


async def error_string(request: Request) -> Response:
    return JSONResponse({"jsonrpc": "2.0", "id": await _request_id(request), "error": "nope"})


async def not_json(request: Request) -> Response:
    return PlainTextResponse("<html>garbage \x00 not json", media_type="text/html")


async def empty_body(request: Request) -> Response:
    return Response(b"", media_type="application/json")


async def wrong_result_type(request: Request) -> Response:
    return JSONResponse({"jsonrpc": "2.0", "id": await _request_id(request), "result": 12})


async def invalid_utf8(request: Request) -> Response:
    return Response(b"\xff\xfe\xfd{", media_type="application/json")


async def json_array(request: Request) -> Response:
    return JSONResponse([_ok(await _request_id(request), "0x1")])


async def json_scalar(request: Request) -> Response:
    return JSONResponse("0x1")


async def wrong_version(request: Request) -> Response:
    return JSONResponse({"jsonrpc": "1.0", "id": await _request_id(request), "result": "0x1"})


async def no_version(request: Request) -> Response:
    return JSONResponse({"id": await _request_id(request), "result": "0x1"})


async def id_mismatch(request: Request) -> Response:
    return JSONResponse(_ok((await _request_id(request)) + 1, "0x1"))


async def id_as_string(request: Request) -> Response:
    return JSONResponse(_ok(str(await _request_id(request)), "0x1"))


async def neither(request: Request) -> Response:
    return JSONResponse({"jsonrpc": "2.0", "id": await _request_id(request)})


async def too_big(request: Request) -> Response:
    return JSONResponse(_ok(await _request_id(request), "0x" + "a" * (2 * MAX_BYTES)))


async def too_big_streamed(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4 * MAX_BYTES // 512):  # bounded: 4x the cap, no content-length
            yield b" " * 512

    return StreamingResponse(chunks(), media_type="application/json")


async def trickle(request: Request) -> Response:
    request_id = await _request_id(request)
    body = json.dumps(_ok(request_id, "0x1")).encode()

    async def chunks() -> AsyncIterator[bytes]:
        # One byte every 50 ms: each read is quick, the whole answer takes far longer than
        # TIMEOUT_S. Bounded by the body's length (~2 s) and by ``release``.
        for i in range(len(body)):
            if release.is_set():
                return
            yield body[i : i + 1]
            await asyncio.sleep(0.05)

    return StreamingResponse(chunks(), media_type="application/json")


ROUTES = {
    "good": good,
    "null_result": null_result,
    "sleepy": sleepy,
    "unavailable": unavailable,
    "not_found": not_found,
    "rpc_error": rpc_error,
    "bad_error_object": bad_error_object,
    "error_string": error_string,
    "not_json": not_json,
    "empty_body": empty_body,
    "wrong_result_type": wrong_result_type,
    "invalid_utf8": invalid_utf8,
    "json_array": json_array,
    "json_scalar": json_scalar,
    "wrong_version": wrong_version,
    "no_version": no_version,
    "id_mismatch": id_mismatch,
    "id_as_string": id_as_string,
    "neither": neither,
    "too_big": too_big,
    "too_big_streamed": too_big_streamed,
    "trickle": trickle,
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    app = Starlette(routes=[Route(f"/{name}", fn, methods=["POST"]) for name, fn in ROUTES.items()])
    release.clear()
    with ServerThread(app, name="rpc-test-server") as srv:
        yield srv
        release.set()  # let hung handlers finish before the server shuts down


def closed_port_url() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # never listened: connecting is refused
    return f"http://127.0.0.1:{port}/"


async def _call(
    url: str,
    *,
    timeout_s: float = TIMEOUT_S,
    max_bytes: int = MAX_BYTES,
) -> tuple[Any, int]:
    rpc = RpcClient(timeout_s=timeout_s, max_response_bytes=max_bytes)
    try:
        return await rpc.call(url, "eth_blockNumber", [])
    finally:
        await rpc.aclose()


def call(url: str, **kwargs: Any) -> tuple[Any, int]:
    return asyncio.run(_call(url, **kwargs))


def failure(url: str, **kwargs: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        call(url, **kwargs)
    return info.value


# --- good answers -------------------------------------------------------------------------------


def test_good_answer_returns_result_and_latency(server: ServerThread) -> None:
    result, latency_us = call(f"{server.url}/good")
    assert result == "0x10"
    assert isinstance(latency_us, int)
    assert 0 < latency_us < TIMEOUT_S * 1_000_000


def test_null_result_is_a_result(server: ServerThread) -> None:
    # "result": null is a valid answer (e.g. a block not seen yet); the check judges it.
    assert call(f"{server.url}/null_result")[0] is None


def test_consecutive_calls_on_one_client_use_fresh_ids(server: ServerThread) -> None:
    async def twice() -> list[Any]:
        rpc = RpcClient(timeout_s=TIMEOUT_S, max_response_bytes=MAX_BYTES)
        try:
            return [await rpc.call(f"{server.url}/good", "eth_chainId", []) for _ in range(3)]
        finally:
            await rpc.aclose()

    assert [r for r, _ in asyncio.run(twice())] == ["0x10"] * 3


# --- unavailable --------------------------------------------------------------------------------


def test_timeout_is_unavailable_and_bounded(server: ServerThread) -> None:
    started = time.monotonic()
    exc = failure(f"{server.url}/sleepy")
    elapsed = time.monotonic() - started
    assert isinstance(exc, RpcUnavailable)
    assert exc.kind == "timeout"
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + SLACK_S


def test_trickling_server_is_cut_at_timeout(server: ServerThread) -> None:
    started = time.monotonic()
    exc = failure(f"{server.url}/trickle")
    elapsed = time.monotonic() - started
    assert isinstance(exc, RpcUnavailable)
    assert exc.kind == "timeout"
    assert elapsed < TIMEOUT_S + SLACK_S


def test_connection_refused_is_transport() -> None:
    started = time.monotonic()
    exc = failure(closed_port_url())
    assert isinstance(exc, RpcUnavailable)
    assert exc.kind == "transport"
    assert time.monotonic() - started < TIMEOUT_S + SLACK_S


@pytest.mark.parametrize("route", ["unavailable", "not_found"])
def test_http_status_other_than_200(server: ServerThread, route: str) -> None:
    exc = failure(f"{server.url}/{route}")
    assert isinstance(exc, RpcUnavailable)
    assert exc.kind == "http_status"


def test_jsonrpc_error_object_is_rpc_error(server: ServerThread) -> None:
    exc = failure(f"{server.url}/rpc_error")
    assert isinstance(exc, RpcUnavailable)
    assert exc.kind == "rpc_error"
    assert "-32000" in str(exc)


# --- malformed ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route",
    [
        "not_json",
        "empty_body",
        "invalid_utf8",
        "json_array",
        "json_scalar",
        "wrong_version",
        "no_version",
        "id_mismatch",
        "id_as_string",
        "neither",
        "bad_error_object",
        "error_string",
        "too_big",
        "too_big_streamed",
    ],
)
def test_malformed_answers(server: ServerThread, route: str) -> None:
    exc = failure(f"{server.url}/{route}")
    assert isinstance(exc, RpcMalformed)
    assert exc.kind == "malformed"


def test_size_cap_is_the_only_difference(server: ServerThread) -> None:
    # The same oversized answer is accepted once the cap allows it.
    result, _ = call(f"{server.url}/too_big", max_bytes=16 * MAX_BYTES)
    assert result == "0x" + "a" * (2 * MAX_BYTES)


NESTED_SCRIPT = """
import asyncio
import monitor.probe.agent  # like the real probe: eth_account -> py_ecc raises the recursion limit
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from monitor.exceptions import RpcError
from monitor.rpc import RpcClient
from monitor.serving import ServerThread

async def nested(request):
    return Response(b"[" * 100_000, media_type="application/json")

async def main(url):
    rpc = RpcClient(timeout_s=5.0, max_response_bytes=1 << 20)
    try:
        await rpc.call(url, "eth_blockNumber", [])
        print("no error")
    except RpcError as exc:
        print(exc.kind)
    except RecursionError:
        print("RecursionError")

with ServerThread(Starlette(routes=[Route("/", nested, methods=["POST"])])) as server:
    asyncio.run(main(server.url + "/"))
"""


def test_deeply_nested_json_is_malformed() -> None:
    # In a child process: in this one it would take pytest down with it.
    done = subprocess.run(
        [sys.executable, "-c", NESTED_SCRIPT],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "malformed")


# --- parse_quantity / parse_hash ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0x0", 0),
        ("0x1", 1),
        ("0xa", 10),
        ("0x10", 16),
        ("0xff", 255),
        ("0xFF", 255),  # upper-case digits are tolerated
        ("0xDeadBeef", 0xDEADBEEF),
        ("0x7fffffffffffffff", 2**63 - 1),  # the largest a result can hold
    ],
)
def test_parse_quantity_accepts(value: str, expected: int) -> None:
    assert parse_quantity(value, "q") == expected


@pytest.mark.parametrize(
    "value",
    [
        "0x",  # no digits
        "0x8000000000000000",  # beyond 2**63 - 1
        "0X1",  # the prefix is lower case
        "0x00",  # leading zero
        "0x01",  # leading zero
        "0x0a",
        "1",  # no prefix
        "ff",
        "",
        "0xg",
        "0x1g",
        " 0x1",
        "0x1 ",
        "-0x1",
        "0x-1",
        "0x_1",
        "0x1.0",
        1,
        0,
        1.0,
        True,
        None,
        b"0x1",
        ["0x1"],
        {"value": "0x1"},
    ],
)
def test_parse_quantity_rejects(value: Any) -> None:
    with pytest.raises(RpcMalformed) as info:
        parse_quantity(value, "eth_blockNumber")
    assert info.value.kind == "malformed"
    assert "eth_blockNumber" in str(info.value)


@pytest.mark.parametrize("parse", [parse_quantity, parse_hash])
def test_trailing_newline_is_rejected(parse: Any) -> None:
    value = "0x1\n" if parse is parse_quantity else HASH + "\n"
    with pytest.raises(RpcMalformed):
        parse(value, "x")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (HASH, HASH),
        ("0x" + "AB" * 32, HASH),  # upper case is normalised to lower
        ("0x" + "Ab" * 32, HASH),
        ("0x" + "00" * 32, "0x" + "00" * 32),
    ],
)
def test_parse_hash_accepts(value: str, expected: str) -> None:
    assert parse_hash(value, "h") == expected


@pytest.mark.parametrize(
    "value",
    [
        "0x" + "ab" * 31,  # 31 bytes
        "0x" + "ab" * 32 + "a",  # 65 digits
        "0x" + "ab" * 33,
        "ab" * 32,  # no prefix
        "ab" * 33,
        "0x" + "gg" * 32,
        "0x",
        "",
        " " + HASH,
        HASH + " ",
        None,
        0,
        bytes.fromhex("ab" * 32),
        [HASH],
    ],
)
def test_parse_hash_rejects(value: Any) -> None:
    with pytest.raises(RpcMalformed) as info:
        parse_hash(value, "block.hash")
    assert info.value.kind == "malformed"


def test_depth_scan_is_linear_on_hostile_strings() -> None:
    """Escaped quotes with no closing quote made a backtracking scan quadratic (about half an
    hour for 1 MB, with the probe's event loop frozen); it must finish at once."""
    import threading

    from monitor.safejson import json_depth

    hostile = b'"' + b'\\"' * 500_000
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(json_depth(hostile)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done == [0]
    assert json_depth(b'{"a": [1, {"b": "[[\\"[["}]}') == 3
    assert json_depth(b"[" * 100) == 100


def test_result_of_the_wrong_type_is_malformed_when_parsed(server: ServerThread) -> None:
    """The client returns any ``result``; the check's parser refuses a number for a quantity."""

    async def call() -> Any:
        rpc = RpcClient(timeout_s=2, max_response_bytes=4096)
        try:
            result, _ = await rpc.call(f"{server.url}/wrong_result_type", "eth_blockNumber", [])
        finally:
            await rpc.aclose()
        return result

    result = asyncio.run(call())
    assert result == 12
    with pytest.raises(RpcMalformed):
        parse_quantity(result, "eth_blockNumber")
