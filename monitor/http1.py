"""A lean HTTP/1.1 client for operators' JSON-RPC endpoints: one POST at a time per connection,
kept alive per origin, timed where the bytes move.

Why not httpx: a probe sends thousands of small requests a second to as many origins. httpx's own
pool scans every connection per request (quadratic in origins), and httpx over aiohttp's pool
still spends ~360 µs of CPU per request here against ~25 µs for this client
(docs/performance.md). The probe's collector traffic stays on httpx.

What it does: ``http`` and ``https`` (certificates checked, SNI), ``Content-Length``, chunked
and read-until-close answers, gzip/deflate answers (decoded under the size cap), credentials in
the URL as Basic auth, keep-alive with one silent retry when a reused connection turns out to be
closed before any byte of the answer came back. What it does not: redirects (a 3xx is an answer
like any non-200), proxies, HTTP/2, pipelining.

Timing: ``sent_ns`` is taken just before the request is written to the socket of an established
connection (connecting and TLS come before and are not timed), ``done_ns`` on entry to the
``data_received`` call that completes the answer, before it is parsed. On an event loop with
nothing else to do (the probe's measuring process, monitor.probe.pulse), the difference is the
operator's round trip to within the loop's wake-up time.

Failures raise ``RpcUnavailable`` (kind ``transport``: refused, reset, closed early, DNS, TLS,
not HTTP) or ``RpcTooLarge``; the caller bounds the whole exchange in time.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import zlib
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httptools

from monitor.exceptions import RpcTooLarge, RpcUnavailable

IDLE_S = 90.0  # an idle connection is closed after this long (operators close theirs sooner)
_SWEEP_EVERY_S = 30.0
_USER_AGENT = b"monitor-probe/1"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    sent_ns: int  # perf_counter_ns before the request's write
    done_ns: int  # perf_counter_ns on arrival of the answer's last byte

    @property
    def latency_us(self) -> int:
        return (self.done_ns - self.sent_ns) // 1000


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]  # scheme, host, port: what a connection is kept alive for
    head: bytes  # request line and headers up to Content-Length's value


def _target(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RpcUnavailable(f"bad URL {url!r}: {exc}", kind="transport") from None
    scheme, host = parts.scheme, parts.hostname
    if scheme not in ("http", "https") or not host:
        raise RpcUnavailable(f"bad URL {url!r}: expected http(s)://host", kind="transport")
    default = 443 if scheme == "https" else 80
    port = port or default
    netloc_host = f"[{host}]" if ":" in host else host
    host_header = netloc_host if port == default else f"{netloc_host}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host_header}",
        "Content-Type: application/json",
        "Accept-Encoding: identity",
        f"User-Agent: {_USER_AGENT.decode()}",
    ]
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        lines.append(f"Authorization: Basic {base64.b64encode(secret).decode()}")
    head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1", "replace")
    return _Target((scheme, host, port), head)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request in flight at most."""

    # A probe holds one per endpoint: slots save a dict each (~1 KB at 10,000 endpoints' worth).
    __slots__ = (
        "_body",
        "_complete",
        "_encoding",
        "_error",
        "_got_bytes",
        "_headers_done",
        "_length_known",
        "_now_ns",
        "_parser",
        "_sent_ns",
        "_size",
        "_status",
        "_waiter",
        "closed",
        "idle_since",
        "max_bytes",
        "transport",
    )

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._waiter: asyncio.Future[Answer] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._now_ns = 0
        self._body: list[bytes] = []
        self._error: Exception | None = None
        self._reset()

    def _reset(self) -> None:
        # The same objects from request to request (no parser, no list made per request): a
        # visit leaves nothing alive for the measuring process's garbage collector to scan.
        self._body.clear()
        self._size = 0
        self._status = 0
        self._encoding = b""
        self._length_known = False
        self._headers_done = False
        self._complete = False
        self._got_bytes = False
        self._sent_ns = 0
        self._error = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._parser = httptools.HttpResponseParser(self)  # one per connection: keep-alive

    def data_received(self, data: bytes) -> None:
        self._now_ns = time.perf_counter_ns()  # first: the arrival, before any parsing
        if self._waiter is None or self._parser is None:
            self._abort()  # bytes nobody asked for: this connection cannot be trusted again
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(RpcUnavailable("the server switched protocols", kind="transport"))
        except httptools.HttpParserError as exc:
            self._fail(self._error or RpcUnavailable(f"not an HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None  # no cycle left for the garbage collector (monitor.probe.pulse)
        try:
            if self._waiter is None:
                return
            if self._headers_done and not self._length_known and not self._complete:
                self._now_ns = time.perf_counter_ns()
                self.on_message_complete()  # an answer delimited by the connection's close
                return
            reason = f": {exc}" if exc else ""
            self._fail(RpcUnavailable(f"server closed the connection without an answer{reason}"))
        finally:
            self._parser = None

    # -- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-encoding":
            self._encoding = value.strip().lower()
        elif name == b"content-length":
            self._length_known = True
            if value.strip().isdigit() and int(value) > self.max_bytes:
                self._error = RpcTooLarge(f"answer larger than {self.max_bytes} bytes")
                raise ValueError("too large")  # stops the parser; reported as _error
        elif name == b"transfer-encoding":
            self._length_known = True

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_bytes:
            self._error = RpcTooLarge(f"answer larger than {self.max_bytes} bytes")
            raise ValueError("too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 1xx: an interim answer; the parser goes on to the real one
            sent, got = self._sent_ns, self._got_bytes
            self._reset()
            self._sent_ns, self._got_bytes = sent, got
            return
        waiter, self._waiter = self._waiter, None
        if self._complete or waiter is None or waiter.done():
            self._abort()  # a second answer to one request: this connection is not to be trusted
            return
        self._complete = True
        try:
            body = _decode(b"".join(self._body), self._encoding, self.max_bytes)
        except RpcTooLarge as exc:
            waiter.set_exception(exc)
            self._abort()
            return
        keep = self._parser is not None and self._parser.should_keep_alive()
        waiter.set_result(Answer(self._status, body, self._sent_ns, self._now_ns))
        if not keep:
            self._abort()

    # -- requests ----------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None and self._waiter is None
        self._reset()
        self._waiter = asyncio.get_running_loop().create_future()
        self._sent_ns = time.perf_counter_ns()
        self.transport.write(request)
        return self._waiter

    @property
    def got_bytes(self) -> bool:
        return self._got_bytes

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._abort()

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _decode(body: bytes, encoding: bytes, max_bytes: int) -> bytes:
    """An answer's body without its content coding (asked for identity; some servers gzip
    anyway), never more than ``max_bytes`` decoded."""
    if encoding in (b"", b"identity"):
        return body
    if encoding not in (b"gzip", b"x-gzip", b"deflate"):
        raise RpcUnavailable(f"answer in an unknown content coding {encoding!r}")
    wbits = 47 if encoding != b"deflate" else 15  # 47: gzip or zlib header, auto-detected
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise RpcUnavailable(f"answer's {encoding.decode()} coding is broken: {exc}") from None
    if len(out) > max_bytes:
        raise RpcTooLarge(f"answer larger than {max_bytes} bytes once decoded")
    return out


class Http1Client:
    """POST JSON to any number of origins; connections are kept alive per origin."""

    def __init__(self, *, max_response_bytes: int, ssl_context: ssl.SSLContext | None = None):
        self.max_bytes = max_response_bytes
        self._ssl = ssl_context
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._swept = time.monotonic()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            try:  # the CA bundle httpx uses, so both clients trust the same roots
                import certifi

                self._ssl = ssl.create_default_context(cafile=certifi.where())
            except ImportError:
                self._ssl = ssl.create_default_context()
        return self._ssl

    async def post(self, url: str, body: bytes) -> Answer:
        """POST ``body`` to ``url`` and return the answer, whatever its status."""
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _target(url)
        request = target.head + str(len(body)).encode() + b"\r\n\r\n" + body
        conn = self._take_idle(target.origin)
        if conn is not None:
            try:
                return await self._exchange(conn, target, request)
            except RpcUnavailable:
                if conn.got_bytes:
                    raise
                # closed by the server while idle, before we knew: once more on a new one
        return await self._exchange(await self._connect(target.origin), target, request)

    async def _exchange(self, conn: _Connection, target: _Target, request: bytes) -> Answer:
        try:
            answer = await conn.send(request)
        except BaseException:
            conn._abort()  # cancelled (the caller's timeout) or failed: its state is unknown
            raise
        if not conn.closed:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(target.origin, []).append(conn)
        return answer

    def _take_idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        now = time.monotonic()
        if now - self._swept > _SWEEP_EVERY_S:
            self._sweep(now)
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                return conn
            conn._abort()
        return None

    def _sweep(self, now: float) -> None:
        self._swept = now
        for origin, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and now - c.idle_since < IDLE_S]
            for conn in idle:
                if conn not in keep:
                    conn._abort()
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(self.max_bytes),
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, DNS, TLS
            detail = str(exc) or type(exc).__name__
            raise RpcUnavailable(f"cannot connect to {host}:{port}: {detail}") from None
        return conn

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn._abort()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' close callbacks run
