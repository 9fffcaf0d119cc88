"""Simulated JSON-RPC nodes for bench/probe_capacity.py: one process, one listening port per
endpoint on 127.0.0.1 (each endpoint its own origin, as real operators are), every answer held for
a known delay. A raw asyncio protocol with httptools on uvloop keeps the server side far from
being the bottleneck; ``GET /_stats`` on the first port reports its CPU and how late the answers
left (their hold minus the nominal delay), and resets the counters.

    .venv/bin/python bench/_probe_nodes.py --endpoints 4000 --delay-ms 50

Prints one JSON line with the ports, then serves until stdin closes. Answers come from
monitor.simnet (a healthy operator on a simulated chain).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import sys
import time
from typing import Any

import httptools
import uvloop

from monitor import simnet

_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.late_us: list[int] = []
        self.cpu0 = _cpu_s()
        self.wall0 = time.monotonic()

    def report(self) -> dict[str, Any]:
        late = sorted(self.late_us)
        wall = time.monotonic() - self.wall0
        cpu = _cpu_s() - self.cpu0

        def pct(q: float) -> float | None:
            return late[min(len(late) - 1, int(q * len(late)))] / 1000 if late else None

        return {
            "requests": self.requests,
            "cpu_s": cpu,
            "wall_s": wall,
            "late_ms_p50": pct(0.5),
            "late_ms_p95": pct(0.95),
            "late_ms_p99": pct(0.99),
            "late_ms_p999": pct(0.999),
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class NodeProtocol(asyncio.Protocol):
    def __init__(self, server: NodeServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        keep_alive = self.parser.should_keep_alive()
        if self.url.startswith(b"/_stats"):
            report = json.dumps(self.server.reset()).encode()
            self._write(report, keep_alive, None)
            return
        self.server.stats.requests += 1
        try:
            payload = json.loads(body)
            answer = simnet._answer(self.server.state, self.server.node, payload)
        except ValueError:
            answer = simnet._error(None, -32700, "parse error")
        out = json.dumps(answer).encode()
        loop = self.server.loop
        loop.call_later(self.server.delay_s, self._write, out, keep_alive, time.perf_counter())

    def _write(self, body: bytes, keep_alive: bool, received: float | None) -> None:
        if received is not None:
            held_us = (time.perf_counter() - received) * 1e6
            self.server.stats.late_us.append(int(held_us - self.server.delay_s * 1e6))
        if self.transport is None or self.transport.is_closing():
            return
        extra = b"" if keep_alive else b"Connection: close\r\n"
        self.transport.write(_HEAD % (len(body), extra) + body)
        if not keep_alive:
            self.transport.close()


class NodeServer:
    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        self.loop = loop
        self.delay_s = delay_s
        chain = simnet.SimChain(1, 12.0)
        self.node = simnet.SimOperator("node", "healthy", 1)
        self.state = simnet._SimState([self.node], {1: chain})
        self.stats = Stats()

    def reset(self) -> dict[str, Any]:
        report = self.stats.report()
        self.stats = Stats()
        return report


async def serve(endpoints: int, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = NodeServer(loop, delay_s)
    ports = []
    for _ in range(endpoints):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
        await loop.create_server(lambda: NodeProtocol(server), sock=sock, backlog=1024)
    print(json.dumps({"ports": ports, "pid": os.getpid()}), flush=True)
    # Serve until the parent closes our stdin (or dies).
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    uvloop.run(serve(args.endpoints, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
