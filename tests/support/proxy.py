"""A loopback HTTP proxy for JSON-RPC in front of any node, adding a delay and dropping requests.

``FaultProxy(upstream)`` listens on a free loopback port (``.url``) and forwards every request
(method, path, body, content type) to ``upstream`` with one keep-alive ``httpx.AsyncClient``. Per
request, in this order:

1. with probability ``drop_rate`` (a seeded ``random.Random``: the same seed drops the same
   requests), the request is dropped, as ``drop_mode`` says:

   - ``"close"`` (default): the connection is closed without an answer, like a node that crashed
     or a load balancer that reset it; a client sees a transport error (httpx:
     ``RemoteProtocolError: Server disconnected without sending a response``);
   - ``"503"``: answered ``503 Service Unavailable`` with an empty body, like an overloaded
     gateway; a client sees an HTTP status error;

2. otherwise it waits ``delay_s`` (``asyncio.sleep``, before forwarding), then forwards it and
   answers what the node answered (``502`` if the node could not be reached).

Every setting is a plain attribute, read per request, so a test changes them while the proxy runs.

Built on asyncio streams (uvloop where installed) in a thread with its own event loop rather than
an ASGI app: the delay is then one ``asyncio.sleep`` between reading the request and forwarding
it (a probe measures a 300 ms delay as 304-312 ms with anvil behind, three probes at once, all in
the test's process), and a drop can really close the connection without an answer, which an ASGI
server does not let an app do. HTTP/1.1 with ``Content-Length`` bodies and keep-alive is all a
JSON-RPC client sends; chunked request bodies are refused (``411``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import random
import socket
import threading
from dataclasses import dataclass
from typing import Literal

import httpx

DropMode = Literal["close", "503"]
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class ProxyStats:
    connections: int = 0
    requests: int = 0
    dropped: int = 0
    forwarded: int = 0
    upstream_errors: int = 0


class FaultProxy:
    """Serve until ``stop`` (or the end of a ``with`` block) on ``host:port`` (0: a free port)."""

    def __init__(
        self,
        upstream: str,
        *,
        delay_s: float = 0.0,
        drop_rate: float = 0.0,
        drop_mode: DropMode = "close",
        seed: int | None = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout_s: float = 30.0,
        name: str = "proxy",
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay_s = delay_s
        self.drop_rate = drop_rate
        self.drop_mode: DropMode = drop_mode
        self.rng = random.Random(seed)
        self.host = host
        self.port = port
        self.name = name
        self.stats = ProxyStats()
        self._upstream_timeout_s = upstream_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reseed(self, seed: int | None) -> None:
        self.rng = random.Random(seed)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, args=(sock,), name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            self.stop()
            raise RuntimeError(f"{self.name} failed to start on {self.url}") from self._error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, stopped, thread = self._loop, self._stopped, self._thread
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopped.set)
        if thread is not None:
            thread.join(timeout=timeout_s)
            if thread.is_alive():
                raise RuntimeError(f"{self.name} did not stop within {timeout_s} s")
        self._thread = self._loop = self._stopped = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, sock: socket.socket) -> None:
        # uvloop where installed (as monitor.serving does): cheaper I/O, less time past the delay.
        loop_factory = asyncio.new_event_loop
        if importlib.util.find_spec("uvloop"):
            import uvloop

            loop_factory = uvloop.new_event_loop
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(self._serve(sock))
        except BaseException as exc:  # reported by start(), which waits for _ready
            self._error = exc
        finally:
            self._ready.set()
            sock.close()

    async def _serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        connections: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            timeout=self._upstream_timeout_s, limits=limits, follow_redirects=False
        ) as client:

            async def on_connect(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter
            ) -> None:
                task = asyncio.current_task()
                assert task is not None
                connections.add(task)
                try:
                    await self._connection(client, reader, writer)
                finally:
                    connections.discard(task)

            server = await asyncio.start_server(
                on_connect, sock=sock, limit=MAX_HEADER_BYTES, backlog=1024
            )
            self._ready.set()
            try:
                await self._stopped.wait()
            finally:
                server.close()
                for task in list(connections):
                    task.cancel()
                if connections:
                    await asyncio.wait(list(connections), timeout=5.0)
                await server.wait_closed()

    # -- one connection ----------------------------------------------------------------------

    async def _connection(
        self, client: httpx.AsyncClient, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.stats.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                if isinstance(request, int):  # a request we refuse: answer and hang up
                    await _respond(writer, request, b"", "text/plain", keep_alive=False)
                    return
                method, path, headers, body = request
                self.stats.requests += 1
                rate = self.drop_rate
                if rate > 0 and self.rng.random() < rate:
                    self.stats.dropped += 1
                    if self.drop_mode == "503":
                        await _respond(writer, 503, b"", "text/plain", keep_alive=True)
                        continue
                    return  # "close": the finally below closes without a word
                if self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                status, answer, content_type = await self._forward(
                    client, method, path, headers, body
                )
                keep_alive = headers.get("connection", "").lower() != "close"
                await _respond(writer, status, answer, content_type, keep_alive=keep_alive)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _forward(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, bytes, str]:
        forward_headers = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
        try:
            response = await client.request(
                method, self.upstream + path, content=body, headers=forward_headers
            )
        except httpx.HTTPError as exc:
            self.stats.upstream_errors += 1
            return 502, f"upstream: {type(exc).__name__}".encode(), "text/plain"
        self.stats.forwarded += 1
        return (
            response.status_code,
            response.content,
            response.headers.get("content-type", "application/octet-stream"),
        )


_REASONS = {
    200: "OK",
    400: "Bad Request",
    411: "Length Required",
    413: "Content Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | int | None:
    """One request off the connection; None at a clean end, an HTTP status to refuse it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            return 400
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return 400
    method, path = parts[0], parts[1]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            return 400
        headers[key.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return 411
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        return 400
    if length < 0:
        return 400
    if length > MAX_BODY_BYTES:
        return 413
    body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, *, keep_alive: bool
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        f"content-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n"
        f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
    await writer.drain()
