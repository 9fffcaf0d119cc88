"""The one contract every check follows, like blackbox_exporter's ProbeFn.

A round of one chain is a ``ChainRound``: one ``Observation`` per endpoint, filled in by the
checks in registry order. A check is ``async def check(round: ChainRound) -> None``: it makes its
calls through ``round.call`` (shared client, bounded concurrency, timeouts) and writes what it saw
into the observations. A check skips endpoints that an earlier check already found unavailable or
incorrect (``obs.usable``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from monitor.exceptions import RpcError
from monitor.probe.targets import ChainTarget, EndpointTarget
from monitor.rpc import RpcClient


@dataclass
class Observation:
    target: EndpointTarget
    observed_at_ms: int  # the round's start until the head check sets it
    sent_at_ms: int | None = None  # when the latest request left, after the concurrency wait
    ok: bool = True  # flips to False on the first unavailability
    error: str | None = None
    latency_us: int | None = None
    head: int | None = None
    block_hash: str | None = None
    correct: bool | None = None

    @property
    def usable(self) -> bool:
        """Still worth asking: reachable and not yet found incorrect."""
        return self.ok and self.correct is not False

    def fail(self, exc: RpcError) -> None:
        """Record an RPC failure: unavailable (ok=False) or malformed (incorrect)."""
        self.error = exc.kind
        if exc.kind == "malformed":
            self.correct = False
        else:
            self.ok = False

    def mark_incorrect(self, kind: str) -> None:
        self.error = kind
        self.correct = False


@dataclass
class ChainRound:
    chain: ChainTarget
    rpc: RpcClient
    semaphore: asyncio.Semaphore
    observations: list[Observation]
    reference_head: int | None = None
    check_height: int | None = None

    async def call(self, obs: Observation, method: str, params: list[Any]) -> tuple[Any, int]:
        async with self.semaphore:
            obs.sent_at_ms = time.time_ns() // 1_000_000
            return await self.rpc.call(obs.target.url, method, params)

    def usable(self) -> list[Observation]:
        return [obs for obs in self.observations if obs.usable]


CheckFn = Callable[[ChainRound], Awaitable[None]]


async def for_each(round_: ChainRound, fn: Callable[[Observation], Awaitable[None]]) -> None:
    """Run ``fn`` for every usable endpoint concurrently; an RPC failure marks that endpoint."""

    async def guarded(obs: Observation) -> None:
        try:
            await fn(obs)
        except RpcError as exc:
            obs.fail(exc)

    await asyncio.gather(*(guarded(obs) for obs in round_.usable()))
