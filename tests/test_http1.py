"""monitor.http1 against raw loopback servers that answer byte for byte as told: what HTTP/1.1
allows an operator's server to send, and how the client times it. (Classification of answers into
error kinds, through RpcClient, is tests/test_rpc.py.)"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.exceptions import RpcTooLarge, RpcUnavailable
from monitor.http1 import Answer, Http1Client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """``handler`` for every connection, on a loop in a thread; counts connections."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ssl_context,), daemon=True)

    def _run(self, tls: ssl.SSLContext | None) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = self.loop.run_until_complete(
            asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self) -> RawServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self._thread.join(10)
        self.loop.close()

    def url(self, scheme: str = "http", userinfo: str = "") -> str:
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}/rpc?key=1"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def answer(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    lines = [b"HTTP/1.1 " + status, *headers]
    if not any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in headers):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def post_all(
    url: str, *, times: int = 1, max_bytes: int = 1 << 20, tls: ssl.SSLContext | None = None
) -> list[Answer]:
    """``times`` POSTs in a row on one client."""

    async def run() -> list[Answer]:
        client = Http1Client(max_response_bytes=max_bytes, ssl_context=tls)
        try:
            return [await client.post(url, b'{"x":1}') for _ in range(times)]
        finally:
            await client.aclose()

    return asyncio.run(run())


def post(url: str, **kwargs: Any) -> Answer:
    return post_all(url, **kwargs)[0]


def keep_alive(body: bytes = b'{"ok":true}') -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer(body))
            await writer.drain()

    return handler


def test_one_connection_is_kept_alive_across_calls() -> None:
    with RawServer(keep_alive()) as server:
        answers = post_all(server.url(), times=5)
    assert [a.status for a in answers] == [200] * 5
    assert {a.body for a in answers} == {b'{"ok":true}'}
    assert server.connections == 1


def test_the_request_is_a_plain_http11_post() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        seen.append(head + body)
        writer.write(answer(b"{}"))
        await writer.drain()

    with RawServer(handler) as server:
        post(server.url(userinfo="user:s%3Acret@"))
    request = seen[0]
    assert request.startswith(b"POST /rpc?key=1 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:%d\r\n" % server.port in request
    assert b"\r\nContent-Type: application/json\r\n" in request
    assert b"\r\nAccept-Encoding: identity\r\n" in request
    assert b"\r\nAuthorization: Basic dXNlcjpzOmNyZXQ=\r\n" in request  # user:s:cret
    assert request.endswith(b'\r\n\r\n{"x":1}')


def test_a_keep_alive_connection_the_server_closed_is_retried_once() -> None:
    """The server closes after each answer without saying so: the next call on the idle
    connection meets a closed socket before any byte, and is made again on a new one."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b'{"n":1}'))
        await writer.drain()

    with RawServer(handler) as server:

        async def run() -> list[int]:
            client = Http1Client(max_response_bytes=1024)
            try:
                statuses = []
                for _ in range(3):
                    statuses.append((await client.post(server.url(), b"{}")).status)
                    await asyncio.sleep(0.05)  # the server's close arrives meanwhile, or not
                return statuses
            finally:
                await client.aclose()

        assert asyncio.run(run()) == [200, 200, 200]
    assert server.connections == 3


def test_a_server_that_closes_without_answering_is_a_transport_failure() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    with RawServer(handler) as server, pytest.raises(RpcUnavailable) as info:
        post(server.url())
    assert info.value.kind == "transport"
    assert server.connections == 1  # a new connection is not retried


def test_chunked_answers_are_joined() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"", b"Transfer-Encoding: chunked"))
        for part in (b'{"a":', b'"chunked"}'):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    with RawServer(handler) as server:
        assert post(server.url()).body == b'{"a":"chunked"}'


def test_an_answer_delimited_by_the_close_is_read_to_the_end() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"old":')
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b'"server"}')
        await writer.drain()

    with RawServer(handler) as server:
        assert post(server.url()).body == b'{"old":"server"}'


def test_an_interim_100_continue_is_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b'{"after":"100"}'))
        await writer.drain()
        await reader.read()

    with RawServer(handler) as server:
        answered = post(server.url())
    assert (answered.status, answered.body) == (200, b'{"after":"100"}')


def test_gzip_answers_are_decoded_under_the_cap() -> None:
    plain = b'{"result":"' + b"a" * 5000 + b'"}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(gzip.compress(plain), b"Content-Encoding: gzip"))
        await writer.drain()
        await reader.read()

    with RawServer(handler) as server:
        assert post(server.url()).body == plain
        # Small on the wire, over the cap once decoded: refused (a zip bomb is no answer).
        with pytest.raises(RpcTooLarge):
            post(server.url(), max_bytes=4096)


def test_an_announced_length_over_the_cap_is_refused_before_the_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n")
        await writer.drain()
        await reader.read()

    with RawServer(handler) as server, pytest.raises(RpcTooLarge):
        post(server.url(), max_bytes=4096)


def test_bytes_nobody_asked_for_end_the_connection() -> None:
    """A server that writes while no request is in flight cannot be trusted with the next one:
    the client drops that connection and answers the next call on a new one."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}") + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()

    with RawServer(handler) as server:
        answers = post_all(server.url(), times=2)
    assert [a.status for a in answers] == [200, 200]
    assert server.connections == 2


def test_not_http_is_a_transport_failure() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        await reader.read()

    with RawServer(handler) as server, pytest.raises(RpcUnavailable) as info:
        post(server.url())
    assert info.value.kind == "transport"


@pytest.mark.parametrize("delay_s", [0.02, 0.15])
def test_latency_is_the_answer_time_and_excludes_connecting(delay_s: float) -> None:
    """The server answers ``delay_s`` after reading each request: on the kept-alive connection
    the latency is the delay itself, within a few ms (connecting, on the first call, is not
    part of any figure)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(delay_s)
            writer.write(answer(b"{}"))
            await writer.drain()

    with RawServer(handler) as server:
        answers = post_all(server.url(), times=4)
    for a in answers[1:]:
        assert delay_s * 1e6 <= a.latency_us <= delay_s * 1e6 + 15_000, a.latency_us


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found (apt-get install openssl)")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield cert, key


def test_https_with_a_trusted_certificate(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    client_side = ssl.create_default_context(cafile=str(cert))
    with RawServer(keep_alive(b'{"tls":true}'), server_side) as server:
        answers = post_all(server.url("https"), tls=client_side, times=2)
        assert [a.body for a in answers] == [b'{"tls":true}'] * 2
        assert server.connections == 1
        # The same server with the default roots: its certificate is not trusted.
        with pytest.raises(RpcUnavailable) as info:
            post(server.url("https"))
    assert info.value.kind == "transport"
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def test_idle_connections_are_closed_on_aclose() -> None:
    closed = threading.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        if await reader.read() == b"":  # the client's side closed
            closed.set()

    with RawServer(handler) as server:

        async def run() -> None:
            client = Http1Client(max_response_bytes=1024)
            await client.post(server.url(), b"{}")
            assert not closed.wait(0.05)  # kept alive while the client is open
            await client.aclose()

        asyncio.run(run())
        assert closed.wait(5)
