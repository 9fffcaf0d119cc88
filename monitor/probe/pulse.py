"""The probe's measuring process: one paced, timed head call per endpoint per interval, and the
only connections to operators the probe holds.

``monitor probe`` starts this module as a child process (``python -m monitor.probe.pulse``) and
does everything else (verdicts, signing, the outbox, delivery) in its own process. Here an event
loop does little but the calls, each head call at its endpoint's slot (monitor.probe.schedule),
so an answer is timed when its last byte arrives, not after a queue of other work: the figure
every result reports is the operator's, not the probe's (docs/performance.md). The checks' other
questions (untimed) are asked through this process too, on the endpoint's kept-alive connection,
so that an operator sees one connection per probe and the probe holds one per endpoint. It
imports no more than the HTTP client and the schedule, to stay small.

The parent writes JSON lines to stdin: an object is the configuration (the whole endpoint set each
time),

    {"interval_s": 10, "seed": "<hex>", "timeout_s": 5, "max_bytes": 1048576,
     "max_late_s": 0.5, "endpoints": [[endpoint_id, url], ...]}

an array a request to relay, ``["ask", ask_id, endpoint_id, method, length]`` followed by the
``length`` bytes of its JSON-RPC body (built by the probe). It reads from stdout JSON arrays, a
line each: ``["s", *HeadSample]`` per visit, in the order the visits end; per relayed request
``["a", ask_id, HTTP status, length]`` followed by the answer's ``length`` bytes as they came
(parsed by the probe, not here), or ``["e", ask_id, error class, kind, message]``. A visit the
schedule skipped (the probe fell behind) is a sample of kind ``missed``; an endpoint whose previous
head call is still unanswered at its next slot is not called twice: its sample for that round is a
``timeout``. The first round visited is the one after the first configuration: whole. The child
exits when its stdin closes, so it never outlives the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import resource
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from monitor.exceptions import RpcError
from monitor.probe.schedule import Pacer, Schedule
from monitor.rpc import HEAD_METHOD, HEAD_PARAMS, RpcClient, parse_head_block

log = logging.getLogger("monitor.probe")

MISSED = "missed"  # a sample's kind when the schedule skipped the visit
_TICK_S = 0.25  # the ticker wakes at least this often (a new configuration, a shutdown)
SETTLE_S = 0.25  # see _Pulse._settle_memory
FLUSH_S = 0.003  # what the probe is told waits this long at most, gathered into one write


class HeadSample(NamedTuple):
    round: int
    endpoint_id: int
    sent_ms: int  # unix ms, when the call was made
    latency_us: int | None
    kind: str | None  # None, an error kind (timeout, transport, ..., malformed) or "missed"
    message: str | None
    head: int | None


async def measure_head(rpc: RpcClient, url: str, endpoint_id: int, round_: int) -> HeadSample:
    """One timed head call, whatever happens (the kind says what failed)."""
    sent_ms = time.time_ns() // 1_000_000
    try:
        block, latency_us = await rpc.call(url, HEAD_METHOD, HEAD_PARAMS)
        head, _ = parse_head_block(block)  # its hash must be a hash; the head is what counts
    except RpcError as exc:
        return HeadSample(round_, endpoint_id, sent_ms, None, exc.kind, str(exc), None)
    return HeadSample(round_, endpoint_id, sent_ms, latency_us, None, None, head)


def raise_open_files_limit() -> int:
    """One connection per endpoint: take every file descriptor the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return int(hard)
    return int(soft)


# -- the child ---------------------------------------------------------------------------------


class _Pulse:
    def __init__(self, out: Any) -> None:
        self.out = out
        self.pacer: Pacer | None = None
        self.rpc: RpcClient | None = None
        self.urls: dict[int, str] = {}
        self.busy: dict[int, asyncio.Task[None]] = {}
        self.asking: set[asyncio.Task[None]] = set()
        self._out: list[bytes] = []
        self._flush: asyncio.TimerHandle | None = None
        self.changed = asyncio.Event()
        self.settled_at = 0.0

    def configure(self, config: dict[str, Any]) -> None:
        schedule = Schedule(float(config["interval_s"]), bytes.fromhex(config["seed"]))
        self.urls = {int(e): str(url) for e, url in config["endpoints"]}
        timeout_s, max_bytes = float(config["timeout_s"]), int(config["max_bytes"])
        if self.rpc is None:
            self.rpc = RpcClient(timeout_s=timeout_s, max_response_bytes=max_bytes)
        if self.pacer is None or self.pacer.schedule != schedule:
            self.pacer = Pacer(schedule, frozenset(self.urls), float(config["max_late_s"]))
        else:
            for round_, endpoint_id in self.pacer.set_endpoints(self.urls, time.time()):
                self.emit(HeadSample(round_, endpoint_id, 0, None, MISSED, None, None))
        self.changed.set()

    def emit(self, sample: HeadSample) -> None:
        self._write(["s", *sample])

    def _write(self, message: list[Any], body: bytes = b"") -> None:
        self._out.append(json.dumps(message, separators=(",", ":")).encode() + b"\n" + body)
        if self._flush is None:  # the messages of a few ms go in one write: fewer wake-ups
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self._flush_out)

    def _flush_out(self) -> None:
        self._flush = None
        out, self._out = self._out, []
        self.out.write(b"".join(out))

    def relay(self, ask_id: int, endpoint_id: int, what: str, body: bytes) -> None:
        """An untimed request of the probe's checks (built and read by the probe), made on the
        endpoint's own connection; the answer goes back as it came."""
        task = asyncio.create_task(self._relay(ask_id, endpoint_id, what, body))
        self.asking.add(task)
        task.add_done_callback(self.asking.discard)

    async def _relay(self, ask_id: int, endpoint_id: int, what: str, body: bytes) -> None:
        url = self.urls.get(endpoint_id)
        if url is None or self.rpc is None:
            self._write(["e", ask_id, "gone", None, f"endpoint {endpoint_id} is not a target"])
            return
        try:
            answer = await self.rpc.exchange(url, what, body)
        except RpcError as exc:
            self._write(["e", ask_id, type(exc).__name__, exc.kind, str(exc)])
        else:  # the header line, then the body's bytes: not parsed here
            self._write(["a", ask_id, answer.status, len(answer.body)], answer.body)

    async def visit(self, round_: int, endpoint_id: int, url: str) -> None:
        assert self.rpc is not None
        try:
            self.emit(await measure_head(self.rpc, url, endpoint_id, round_))
        finally:
            self.busy.pop(endpoint_id, None)

    def _settle_memory(self) -> None:
        """The measuring loop never pauses long for the garbage collector: a full collection at
        10,000 endpoints scans a few hundred thousand objects (the connections) for ~100 ms,
        which showed as the error's p99.9. Automatic collection is off; every SETTLE_S the
        objects made since are collected (few: the HTTP client makes none per request that
        outlive it) and the survivors frozen out of later scans (``gc.freeze``), so each pass
        costs what the last quarter second made: a few ms while the first round opens its
        connections, well under one after."""
        now = time.monotonic()
        if now - self.settled_at >= SETTLE_S:
            self.settled_at = now
            gc.collect(1)
            gc.freeze()

    async def tick(self) -> None:
        """Start each visit at its slot, for ever."""
        while True:
            if self.pacer is None:
                await self.changed.wait()
                self.changed.clear()
                continue
            now = time.time()
            visits, missed = self.pacer.due(now)
            self._settle_memory()
            for round_, endpoint_id in missed:
                self.emit(HeadSample(round_, endpoint_id, 0, None, MISSED, None, None))
            for round_, endpoint_id in visits:
                url = self.urls.get(endpoint_id)
                if url is None:
                    continue
                if endpoint_id in self.busy:
                    # Its previous call, a whole interval ago, is still unanswered (a timeout
                    # longer than the interval): no answer in this round either, and never two
                    # calls in flight to one endpoint.
                    message = "the previous call is still unanswered after a whole interval"
                    sent_ms = int(now * 1000)
                    self.emit(
                        HeadSample(round_, endpoint_id, sent_ms, None, "timeout", message, None)
                    )
                    continue
                task = asyncio.create_task(self.visit(round_, endpoint_id, url))
                self.busy[endpoint_id] = task
            wait_s = min(_TICK_S, max(0.0, self.pacer.next_at() - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self.changed.wait()
            self.changed.clear()


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while line := await stream.readline():
        yield line


async def child_main() -> None:
    raise_open_files_limit()
    gc.disable()  # see _Pulse._settle_memory
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)  # a configuration of 100,000 URLs
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    pulse = _Pulse(transport)
    ticker = asyncio.create_task(pulse.tick())
    try:
        async for line in _lines(reader):
            message = json.loads(line)
            if isinstance(message, list):  # a request to relay: its body follows, as it is
                _, ask_id, endpoint_id, what, length = message
                pulse.relay(ask_id, endpoint_id, what, await reader.readexactly(length))
            else:
                pulse.configure(message)
    finally:  # stdin closed: the probe is stopping (or gone)
        ticker.cancel()
        for task in [*pulse.busy.values(), *pulse.asking]:
            task.cancel()
        if pulse.rpc is not None:
            await pulse.rpc.aclose()
        if pulse._flush is not None:
            pulse._flush.cancel()
            pulse._flush_out()
        transport.close()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="pulse: %(levelname)s %(message)s")
    try:
        import uvloop
    except ImportError:
        asyncio.run(child_main())
    else:
        uvloop.run(child_main())


if __name__ == "__main__":
    main()
