"""Paced rounds: ``monitor probe``'s rounds, every call spread over the interval.

The measuring process (monitor.probe.pulse) makes each endpoint's timed head call at its slot and
streams the samples here. Each sample becomes the endpoint's observation in its round, and the
endpoint is at once asked the questions the round's due checks planned when the round opened
(untimed, on this process's own client), so the checks' calls follow the same even spread as
the head calls: no burst, on the probe or on an operator. When the round's window has closed and
every endpoint has answered (or a deadline has passed: a call started at the window's end has its
timeout), the checks judge in registry order and the round's results go to ``on_round`` (signed
and queued by the agent). Rounds overlap by the time their last answers take; each is judged on
its own.

Heads over time: an endpoint visited early in the window must not be found lagging behind blocks
made after it answered, nor one visited late be excused by heads seen early. Each endpoint is
judged against the reference head at the moment of its own visit (monitor.probe.consensus's
``HeadClock``: every endpoint's latest head, carried forward at the chain's block time, under the
same quorum rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.checks.base import (
    Call,
    ChainMemory,
    ChainRound,
    Check,
    CheckConfig,
    Observation,
    Plan,
    ScheduledConfig,
    ask_one,
)
from monitor.checks.registry import CHECKS
from monitor.exceptions import RpcError, RpcMalformed, RpcTooLarge, RpcUnavailable
from monitor.ingest.schemas import INCORRECT_ERRORS, ProbeResult
from monitor.probe.consensus import HeadClock
from monitor.probe.pulse import MISSED, HeadSample
from monitor.probe.rounds import (
    CheckOutcomes,
    carry_verdicts,
    chain_config,
    judge_in_turn,
    observation,
    plan_if_due,
    to_result,
)
from monitor.probe.schedule import Schedule
from monitor.probe.targets import ChainTarget, EndpointTarget, Targets
from monitor.rpc import request, result_of

log = logging.getLogger("monitor.probe")

_CLOSE_TICK_S = 0.1


@dataclass
class RoundHeads:
    """One chain's heads in one paced round: what was known when it opened, then its own in the
    order they were seen (``monitor.checks.base.HeadsOverTime``)."""

    block_time_s: float
    before: dict[int, tuple[int, int]]  # endpoint id -> (seen at ms, head), when it opened
    seen: list[tuple[int, int, int | None]] = field(default_factory=list)  # (ms, endpoint, head)
    live_at: dict[int, tuple[int | None, bool]] = field(default_factory=dict)

    def references(self, excluded: frozenset[int]) -> dict[int, int | None]:
        clock = HeadClock(self.block_time_s)
        for endpoint_id, (seen_ms, known) in self.before.items():
            if endpoint_id not in excluded:
                clock.set(endpoint_id, seen_ms, known)
        out: dict[int, int | None] = {}
        for seen_ms, endpoint_id, head in sorted(self.seen, key=lambda s: (s[0], s[1])):
            clock.set(endpoint_id, seen_ms, None if endpoint_id in excluded else head)
            out[endpoint_id] = clock.reference(seen_ms)
        return out

    def live(self, endpoint_id: int) -> tuple[int | None, bool]:
        return self.live_at.get(endpoint_id, (None, False))


@dataclass
class _Planned:
    check: Check
    config: CheckConfig
    plan: Plan
    every: int = 1  # an own-verdict check: each endpoint asked in one round of every ``every``


@dataclass
class _ChainInRound:
    number: int
    round_: ChainRound
    heads: RoundHeads
    planned: dict[str, _Planned]


@dataclass
class _Round:
    number: int
    expected: set[int]  # endpoints whose sample (or missed visit) has not come yet
    chains: dict[int, _ChainInRound] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    outcomes: CheckOutcomes = field(default_factory=Counter)
    missed: int = 0


OnRound = Callable[[int, list[ProbeResult], CheckOutcomes, int], None]


def bounded(call: Call, semaphore: asyncio.Semaphore) -> Call:
    async def limited(obs: Observation, method: str, params: list[Any]) -> Any:
        async with semaphore:
            return await call(obs, method, params)

    return limited


class PacedRounds:
    """Samples in, judged rounds out (``on_round(round, results, outcomes, missed)``)."""

    def __init__(
        self,
        *,
        schedule: Schedule,
        call: Call,
        concurrency: int,
        grace_s: float,
        on_round: OnRound,
        checks: Mapping[str, Check] = CHECKS,
        memory: dict[int, ChainMemory] | None = None,
    ) -> None:
        self.schedule = schedule
        self.grace_s = grace_s
        self.on_round = on_round
        self.checks = checks
        self.memory = memory if memory is not None else {}
        self._call = bounded(call, asyncio.Semaphore(concurrency))
        self._endpoints: dict[int, tuple[ChainTarget, EndpointTarget]] = {}
        self._clocks: dict[int, HeadClock] = {}  # chain id -> latest usable heads
        self._rounds: dict[int, _Round] = {}
        self._judged_through = -(2**63)
        self.last_round: int | None = None  # set by a stop: the round being finished

    def set_targets(self, targets: Targets) -> None:
        self._endpoints = {e.endpoint_id: (c, e) for c in targets.chains for e in c.endpoints}
        for open_round in self._rounds.values():
            open_round.expected &= set(self._endpoints)  # removed ones will not come

    def judged(self, number: int) -> bool:
        """Round ``number`` and every one before it are judged (none is open)."""
        return all(n > number for n in self._rounds) and self._judged_through >= number

    def take(self, sample: HeadSample) -> None:
        """One visit's head call: observe, and ask the round's questions (in a task)."""
        if self.last_round is not None and sample.round > self.last_round:
            return  # stopping: a round that will not be finished is not begun
        open_round = self._rounds.get(sample.round)
        if open_round is None:
            if sample.round <= self._judged_through:
                return  # of a round already judged (its deadline passed): too late
            open_round = self._rounds[sample.round] = _Round(sample.round, set(self._endpoints))
        open_round.expected.discard(sample.endpoint_id)
        if sample.kind == MISSED:
            open_round.missed += 1
            return
        where = self._endpoints.get(sample.endpoint_id)
        if where is None:
            return  # no longer a target
        chain, target = where
        in_round = open_round.chains.get(chain.chain_id) or self._open_chain(open_round, chain)
        obs = observation(sample, target)
        for name, verdicts in in_round.round_.memory.verdicts.items():
            verdict = verdicts.get(target.endpoint_id)
            if verdict in INCORRECT_ERRORS and obs.usable and not self._asks(in_round, name, obs):
                obs.mark_incorrect(verdict)  # still so: no questions to it this round
        clock = self._clock(chain)
        head = obs.head if obs.usable else None
        clock.set(target.endpoint_id, obs.observed_at_ms, head)
        reference = clock.reference(obs.observed_at_ms)
        in_round.heads.seen.append((obs.observed_at_ms, target.endpoint_id, head))
        in_round.heads.live_at[target.endpoint_id] = (
            reference,
            clock.contested(reference, obs.observed_at_ms),
        )
        in_round.round_.observations.append(obs)
        if obs.usable:
            task = asyncio.create_task(self._ask(in_round, obs))
            open_round.tasks.add(task)
            task.add_done_callback(open_round.tasks.discard)

    def _clock(self, chain: ChainTarget) -> HeadClock:
        clock = self._clocks.get(chain.chain_id)
        if clock is None or clock.block_ms != max(1, round(chain.block_time_s * 1000)):
            clock = self._clocks[chain.chain_id] = HeadClock(chain.block_time_s)
        return clock

    def _open_chain(self, open_round: _Round, chain: ChainTarget) -> _ChainInRound:
        memory = self.memory.setdefault(chain.chain_id, ChainMemory())
        clock = self._clock(chain)
        round_heads = RoundHeads(chain.block_time_s, dict(clock.latest))
        round_ = ChainRound(
            chain=chain,
            observations=[],
            memory=memory,
            basis=clock.reference(time.time_ns() // 1_000_000),
            over_time=round_heads,
        )
        planned: dict[str, _Planned] = {}
        now_s = time.monotonic()
        number = open_round.number
        for name, check in self.checks.items():
            if not issubclass(check.config, ScheduledConfig):
                config, plan = plan_if_due(name, check, round_, now_s)
                if config is not None and plan is not None:
                    planned[name] = _Planned(check, config, plan)
                continue
            # Scheduled checks are spread so that no round carries them all: each endpoint
            # has its own turn for an own-verdict check, and a voted one first runs at a
            # round of its own; none in the probe's first round (it makes the reference).
            config = chain_config(name, check, chain)
            if round_.basis is None or not isinstance(config, ScheduledConfig):
                continue
            every = max(1, round(config.every_s / self.schedule.interval_s))
            if check.own_verdicts:
                plan = check.plan(round_, config)
                if plan is not None:
                    planned[name] = _Planned(check, config, plan, every)
                continue
            if name not in memory.last_run_s and (number + self.schedule.turn(every, name)) % every:
                continue
            config, plan = plan_if_due(name, check, round_, now_s)
            if config is not None and plan is not None:
                planned[name] = _Planned(check, config, plan)
        in_round = _ChainInRound(number, round_, round_heads, planned)
        open_round.chains[chain.chain_id] = in_round
        return in_round

    def _asks(self, in_round: _ChainInRound, name: str, obs: Observation) -> bool:
        """Whether check ``name`` asks ``obs`` this round (its turn, for an own-verdict one)."""
        p = in_round.planned.get(name)
        if p is None:
            return False
        turn = self.schedule.turn(p.every, name, obs.target.endpoint_id)
        return p.every == 1 or (in_round.number + turn) % p.every == 0

    async def _ask(self, in_round: _ChainInRound, obs: Observation) -> None:
        try:
            for name, p in in_round.planned.items():
                if not self._asks(in_round, name, obs):
                    continue  # not this endpoint's turn: its last verdict holds
                if not await ask_one(name, p.check, in_round.round_, p.plan, self._call, obs):
                    return  # failed: nothing more is asked of it this round
        except Exception:  # a bug an answer triggers: the endpoint is left unjudged
            log.exception("endpoint %s: asking failed", obs.target.endpoint_id)

    def close_due(self, now: float) -> int:
        """Judge every round that is over; returns how many were."""
        closed = 0
        for number in sorted(self._rounds):
            open_round = self._rounds[number]
            window_end = self.schedule.start(number + 1)
            if now < window_end:
                break
            complete = not open_round.expected and not open_round.tasks
            if not complete and now < window_end + self.grace_s:
                continue
            if not complete:
                log.warning(
                    "round %s judged at its deadline: %d visits unreported, %d endpoints' "
                    "questions unanswered (left unknown)",
                    number,
                    len(open_round.expected),
                    len(open_round.tasks),
                )
            del self._rounds[number]
            self._judge(open_round)
            self._judged_through = number
            closed += 1
        return closed

    def _judge(self, open_round: _Round) -> None:
        for task in open_round.tasks:  # past the deadline: unanswered questions stay unknown
            task.cancel()
        results: list[ProbeResult] = []
        for chain_id, in_round in open_round.chains.items():
            round_ = in_round.round_
            round_.observations.sort(key=lambda obs: obs.target.endpoint_id)
            try:
                for name, check in self.checks.items():
                    p = in_round.planned.get(name)
                    if p is None:
                        carry_verdicts(round_, round_.memory.verdicts.get(name, {}))
                    else:
                        judge_in_turn(name, check, round_, p.config, p.plan, open_round.outcomes)
                round_.memory.reference_head = round_.reference_head
                results += [to_result(obs, round_) for obs in round_.observations]
            except Exception:  # a bug one chain's answers trigger must not cost the others
                log.exception("chain %s: round %s failed", chain_id, open_round.number)
                continue
            clock = self._clocks[chain_id]
            for obs in round_.observations:  # found out: its head counts no more
                latest = clock.latest.get(obs.target.endpoint_id)
                if not obs.usable and latest is not None and latest[0] == obs.observed_at_ms:
                    clock.set(obs.target.endpoint_id, 0, None)
        self.on_round(open_round.number, results, open_round.outcomes, open_round.missed)

    async def drain(self, timeout_s: float) -> None:
        """Let the questions in flight be answered (bounded), before :meth:`close_all`."""
        tasks = {t for r in self._rounds.values() for t in r.tasks}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def close_all(self) -> None:
        """Judge what is open now (a stop): its unanswered questions stay unknown."""
        for number in sorted(self._rounds):
            self._judge(self._rounds.pop(number))
            self._judged_through = number


class MeasuringProcessGone(RuntimeError):
    """A question was cut off because the measuring process ended: the probe's failure, not the
    endpoint's (its verdict for that round stays unknown)."""


_ERRORS: dict[str, type[RpcError]] = {
    cls.__name__: cls for cls in (RpcError, RpcUnavailable, RpcMalformed, RpcTooLarge)
}


class PulseProcess:
    """The measuring child process (monitor.probe.pulse), seen from the probe: its samples, and
    the checks' questions asked through it (``call``)."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self._asks = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._out: list[bytes] = []
        self._flush: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self._drop_output()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor.probe.pulse",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # a question's answer may be as large as the size cap
        )

    def _send(self, message: Any, body: bytes = b"") -> None:
        if self.proc is None or self.proc.stdin is None or self.proc.returncode is not None:
            raise MeasuringProcessGone("the measuring process is not running")
        self._out.append(json.dumps(message).encode() + b"\n" + body)
        if self._flush is None:  # the questions of a few ms go in one write: fewer wake-ups
            self._flush = asyncio.get_running_loop().call_later(0.003, self._flush_out)

    def _flush_out(self) -> None:
        self._flush = None
        out, self._out = self._out, []
        if (
            self.proc is not None
            and self.proc.stdin is not None
            and not self.proc.stdin.is_closing()
        ):
            self.proc.stdin.write(b"".join(out))

    def configure(self, config: dict[str, Any]) -> None:
        self._send(config)

    async def call(self, obs: Observation, method: str, params: list[Any]) -> Any:
        """A check's question to ``obs``'s endpoint (a ``monitor.checks.base.Call``): made by
        the measuring process on the endpoint's connection, its answer read here."""
        ask_id = next(self._asks)
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[ask_id] = future
        request_id, body = request(method, params)
        try:
            self._send(["ask", ask_id, obs.target.endpoint_id, method, len(body)], body)
            status, answer = await future
        finally:
            self._pending.pop(ask_id, None)
        return result_of(method, request_id, status, answer)

    async def samples(self) -> AsyncIterator[HeadSample]:
        """The visits' samples until the process ends; the questions' answers on the way."""
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        try:
            while line := await stdout.readline():
                tag, *rest = json.loads(line)
                if tag == "s":
                    yield HeadSample(*rest)
                    continue
                body = await stdout.readexactly(rest[2]) if tag == "a" else b""
                future = self._pending.get(rest[0])
                if future is None or future.done():
                    continue  # asked by a round already judged
                if tag == "a":
                    future.set_result((rest[1], body))
                elif rest[1] in _ERRORS:
                    future.set_exception(_ERRORS[rest[1]](rest[3], kind=rest[2]))
                else:
                    future.set_exception(MeasuringProcessGone(rest[3]))
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(MeasuringProcessGone("the measuring process ended"))

    def _drop_output(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._out = []

    async def stop(self) -> None:
        self._drop_output()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the child's signal to stop
        try:
            async with asyncio.timeout(5.0):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
