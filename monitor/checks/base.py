"""The one contract every check follows, like blackbox_exporter's ProbeFn.

A round of one chain is a ``ChainRound``: one ``Observation`` per endpoint, filled in by the
checks in registry order. A check is ``async def check(round_: ChainRound, config) -> None``: it
makes its calls through ``round_.call`` (shared client, bounded concurrency, timeouts) and writes
what it saw into the observations. A check skips endpoints that an earlier check already found
unavailable or incorrect (``obs.usable``).

Each check declares its configuration as a pydantic model (``CheckConfig``; the registry's
``chains[].checks.<name>`` section is validated against it). Checks with ``ScheduledConfig`` run
on their own cadence (``every_s``); the probe remembers per chain when each last ran
(``ChainMemory``), and what it saw of each endpoint's head in earlier rounds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from monitor.exceptions import RpcError
from monitor.probe.consensus import majority
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


class CheckConfig(BaseModel):
    """A check's section of the registry; the base has no options (the check runs every round)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduledConfig(CheckConfig):
    """For checks too costly for every round: run at most once per ``every_s`` per chain."""

    every_s: float = Field(60.0, ge=0, le=86_400)  # 0: every round


@dataclass
class ChainMemory:
    """What a probe carries from one round of a chain to the next."""

    last_run_s: dict[str, float] = field(default_factory=dict)  # check name -> monotonic time
    # endpoint id -> (head, monotonic time that head was first seen): stalled-head detection
    heads: dict[int, tuple[int, float]] = field(default_factory=dict)
    reference_head: int | None = None  # the previous round's
    # check name -> endpoint id -> the stale verdict ("syncing") of its last run: a scheduled
    # check's verdict holds in the rounds between its runs (monitor/probe/rounds.py)
    verdicts: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass
class ChainRound:
    chain: ChainTarget
    rpc: RpcClient
    semaphore: asyncio.Semaphore
    observations: list[Observation]
    memory: ChainMemory = field(default_factory=ChainMemory)
    reference_head: int | None = None
    check_height: int | None = None

    async def call(self, obs: Observation, method: str, params: list[Any]) -> tuple[Any, int]:
        async with self.semaphore:
            obs.sent_at_ms = time.time_ns() // 1_000_000
            return await self.rpc.call(obs.target.url, method, params)

    def usable(self) -> list[Observation]:
        return [obs for obs in self.observations if obs.usable]


CheckFn = Callable[[ChainRound, Any], Awaitable[None]]


@dataclass(frozen=True)
class Check:
    """A registry entry: the function, its configuration model, and whether it runs unasked.

    A check that needs chain-specific input (an address, a contract) is ``default_on=False``: it
    runs only for chains whose registry entry has its section.
    """

    fn: CheckFn
    config: type[CheckConfig] = CheckConfig
    default_on: bool = True


async def for_each(round_: ChainRound, fn: Callable[[Observation], Awaitable[None]]) -> None:
    """Run ``fn`` for every usable endpoint concurrently; an RPC failure marks that endpoint."""

    async def guarded(obs: Observation) -> None:
        try:
            await fn(obs)
        except RpcError as exc:
            obs.fail(exc)

    await asyncio.gather(*(guarded(obs) for obs in round_.usable()))


def vote(round_: ChainRound, answers: Mapping[int, Hashable], error: str) -> None:
    """Majority vote over ``answers`` (endpoint id -> a comparable digest of its answer): an
    endpoint that differs from a majority of at least ``chain.quorum`` is incorrect (``error``).
    Agreeing endpoints are left as they are: another check may still judge them; with no quorum
    nothing is judged (unknown, never "correct")."""
    voters = [obs for obs in round_.usable() if obs.target.endpoint_id in answers]
    canonical = majority([answers[obs.target.endpoint_id] for obs in voters], round_.chain.quorum)
    if canonical is None:
        return
    for obs in voters:
        if answers[obs.target.endpoint_id] != canonical:
            obs.mark_incorrect(error)
