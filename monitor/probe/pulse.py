"""The probe's measuring process: one paced, timed head call per endpoint per interval.

``monitor probe`` starts this module as a child process (``python -m monitor.probe.pulse``) and
does everything else (the checks' other questions, verdicts, signing, the outbox, delivery) in
its own process. Here an event loop does nothing but the timed calls, each at its endpoint's slot
(monitor.probe.schedule), so an answer is timed when its last byte arrives, not after a queue of
other work: the figure every result reports is the operator's, not the probe's (issue 14,
docs/performance.md). It imports no more than the HTTP client and the schedule, to stay small.

The parent writes one JSON line per configuration to stdin (the whole endpoint set each time):

    {"interval_s": 10, "seed": "<hex>", "timeout_s": 5, "max_bytes": 1048576,
     "max_late_s": 0.5, "endpoints": [[endpoint_id, url], ...]}

and reads one JSON array per visit from stdout, in the order the visits end (a ``HeadSample``).
A visit the schedule skipped (the probe fell behind) is a sample of kind ``missed``; an endpoint
whose previous call is still unanswered at its next slot is not called twice: its sample for
that round is a ``timeout``. The first round visited is the one after the first configuration:
whole. The child exits when its stdin closes, so it never outlives the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
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


class HeadSample(NamedTuple):
    round: int
    endpoint_id: int
    sent_ms: int  # unix ms, when the call was made
    latency_us: int | None
    kind: str | None  # None, an error kind (timeout, transport, ..., malformed) or "missed"
    message: str | None
    head: int | None
    head_hash: str | None


async def measure_head(rpc: RpcClient, url: str, endpoint_id: int, round_: int) -> HeadSample:
    """One timed head call, whatever happens (the kind says what failed)."""
    sent_ms = time.time_ns() // 1_000_000
    try:
        block, latency_us = await rpc.call(url, HEAD_METHOD, HEAD_PARAMS)
        head, head_hash = parse_head_block(block)
    except RpcError as exc:
        return HeadSample(round_, endpoint_id, sent_ms, None, exc.kind, str(exc), None, None)
    return HeadSample(round_, endpoint_id, sent_ms, latency_us, None, None, head, head_hash)


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
        self.changed = asyncio.Event()

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
                self.emit(HeadSample(round_, endpoint_id, 0, None, MISSED, None, None, None))
        self.changed.set()

    def emit(self, sample: HeadSample) -> None:
        self.out.write(json.dumps(sample, separators=(",", ":")).encode() + b"\n")

    async def visit(self, round_: int, endpoint_id: int, url: str) -> None:
        assert self.rpc is not None
        try:
            self.emit(await measure_head(self.rpc, url, endpoint_id, round_))
        finally:
            self.busy.pop(endpoint_id, None)

    async def tick(self) -> None:
        """Start each visit at its slot, for ever."""
        while True:
            if self.pacer is None:
                await self.changed.wait()
                self.changed.clear()
                continue
            now = time.time()
            visits, missed = self.pacer.due(now)
            for round_, endpoint_id in missed:
                self.emit(HeadSample(round_, endpoint_id, 0, None, MISSED, None, None, None))
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
                        HeadSample(
                            round_, endpoint_id, sent_ms, None, "timeout", message, None, None
                        )
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
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)  # a configuration of 100,000 URLs
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    pulse = _Pulse(transport)
    ticker = asyncio.create_task(pulse.tick())
    try:
        async for line in _lines(reader):
            pulse.configure(json.loads(line))
    finally:  # stdin closed: the probe is stopping (or gone)
        ticker.cancel()
        for task in list(pulse.busy.values()):
            task.cancel()
        if pulse.rpc is not None:
            await pulse.rpc.aclose()
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
