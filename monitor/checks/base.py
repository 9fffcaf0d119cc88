"""The one contract every check follows, like blackbox_exporter's ProbeFn, in three steps.

A round of one chain is a ``ChainRound``: one ``Observation`` per endpoint, made by the round's
timed head call (``eth_getBlockByNumber("latest", false)``: the endpoint's head, its hash and the
latency every result reports; monitor.probe.visit). A check is a module with:

* ``plan(round_, config)``: what the check asks this round, fixed once for every endpoint (a
  height, a range), or None to sit the round out; it reads ``round_.basis``, the reference head
  the round's questions are built on;
* ``ask(call, obs, plan)`` (optional): one endpoint's answer, reduced to what the check compares
  (a hash, a digest), or None for "nothing to judge"; calls go through ``call`` (the probe's
  client: timeouts, size cap; untimed) and an ``RpcError`` marks the endpoint (unavailable or
  malformed) unless the check defers JSON-RPC errors to its judgement (``defers_rpc_errors``);
* ``judge(round_, config, plan)``: the verdicts, from every endpoint's answer at once
  (``round_.answers[name]``): majority votes, the reference head.

Splitting the asking from the judging is what lets a probe spread its calls over the interval:
in ``monitor probe`` each endpoint is asked right after its own head call, at its own moment
(monitor.probe.paced), and the judgements are made when the round closes; in a one-shot round
(``ProbeAgent.round``, monitor.probe.rounds) every endpoint is asked at once, check after check.
Either way a check skips endpoints that an earlier check already found unavailable or
incorrect (``obs.usable``).

Each check declares its configuration as a pydantic model (``CheckConfig``; the registry's
``chains[].checks.<name>`` section is validated against it). Checks with ``ScheduledConfig`` run
on their own cadence (``every_s``); the probe remembers per chain when each last ran
(``ChainMemory``), what it saw of each endpoint's head in earlier rounds, and the verdicts a
scheduled check's last run gave, which hold in the rounds between its runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from monitor.exceptions import RpcError
from monitor.probe.consensus import majority, reference_head
from monitor.probe.targets import ChainTarget, EndpointTarget


@dataclass
class Observation:
    target: EndpointTarget
    observed_at_ms: int  # unix ms when the head call was sent
    ok: bool = True  # flips to False on the first unavailability
    error: str | None = None
    latency_us: int | None = None
    head: int | None = None
    block_hash: str | None = None  # the hash at the round's check height
    correct: bool | None = None
    reference_head: int | None = None  # the head this endpoint is judged against

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
    # check name -> endpoint id -> the verdict of its last run (a stale error such as "syncing",
    # or an incorrect one such as "wrong_chain"): it holds in the rounds between its runs
    verdicts: dict[str, dict[int, str]] = field(default_factory=dict)


class HeadsOverTime(Protocol):
    """A paced round's heads in the order they were seen (monitor.probe.paced)."""

    def references(self, excluded: frozenset[int]) -> dict[int, int | None]:
        """Each endpoint's reference head: the one the heads seen up to its own visit give,
        leaving out ``excluded`` endpoints."""
        ...

    def live(self, endpoint_id: int) -> tuple[int | None, bool]:
        """(reference, contested) as known when ``endpoint_id``'s head came in."""
        ...


@dataclass
class ChainRound:
    chain: ChainTarget
    observations: list[Observation]
    memory: ChainMemory = field(default_factory=ChainMemory)
    # The reference head the round's questions are built on (``plan``): this round's own in a
    # one-shot round; in a paced round the one known when the round opened.
    basis: int | None = None
    reference_head: int | None = None  # the round's reference, from every head it saw
    check_height: int | None = None
    # A paced round: each endpoint is judged against the heads known at its own visit.
    over_time: HeadsOverTime | None = None
    # What each check's asks gave, by check name and endpoint id, for its judge: the answers,
    # the JSON-RPC errors it defers, and the failures, applied in the check's turn.
    answers: dict[str, dict[int, Hashable]] = field(default_factory=dict)
    refused: dict[str, dict[int, RpcError]] = field(default_factory=dict)
    failed: dict[str, dict[int, RpcError]] = field(default_factory=dict)
    asked: dict[str, set[int]] = field(default_factory=dict)

    def usable(self) -> list[Observation]:
        return [obs for obs in self.observations if obs.usable]

    def set_references(self) -> None:
        """Each usable endpoint's reference head: the round's (the highest height a quorum of
        the usable heads reached), or in a paced round the one known at its own visit."""
        heads = [obs.head for obs in self.usable() if obs.head is not None]
        self.reference_head = reference_head(heads)
        if self.over_time is None:
            for obs in self.observations:
                obs.reference_head = self.reference_head
            return
        unusable = frozenset(o.target.endpoint_id for o in self.observations if not o.usable)
        references = self.over_time.references(unusable)
        for obs in self.observations:
            obs.reference_head = references.get(obs.target.endpoint_id)


@dataclass(frozen=True)
class Replies:
    """What one check's asks gave in a round, for its judge."""

    answers: Mapping[int, Hashable]  # endpoint id -> answer (asked and answered)
    refused: Mapping[int, RpcError]  # endpoint id -> a deferred JSON-RPC error
    asked: frozenset[int]


Call = Callable[[Observation, str, list[Any]], Awaitable[Any]]
Plan = Any
PlanFn = Callable[[ChainRound, Any], Plan | None]
AskFn = Callable[[Call, Observation, Any], Awaitable[Hashable | None]]
JudgeFn = Callable[[ChainRound, Any, Any, Replies], None]


@dataclass(frozen=True)
class Check:
    """A registry entry: the three steps, the configuration model, and whether it runs unasked.

    A check that needs chain-specific input (an address, a contract) is ``default_on=False``: it
    runs only for chains whose registry entry has its section. ``defers_rpc_errors``: a JSON-RPC
    error answer is kept aside for ``judge`` instead of marking the endpoint unavailable
    (:func:`judge_errors`). ``own_verdicts``: each endpoint's verdict is its own answer's, with
    no vote among endpoints, so a paced round may ask each endpoint of a scheduled check at a
    turn of its own (monitor.probe.paced), the verdicts holding in between
    (``ChainMemory.verdicts``).
    """

    plan: PlanFn
    judge: JudgeFn
    ask: AskFn | None = None
    config: type[CheckConfig] = CheckConfig
    default_on: bool = True
    defers_rpc_errors: bool = False
    own_verdicts: bool = False

    @classmethod
    def of(cls, module: ModuleType, *, default_on: bool = True) -> Check:
        """The check a module defines: ``plan``, ``judge``, optional ``ask``, ``Config``,
        ``DEFERS_RPC_ERRORS`` and ``OWN_VERDICTS``."""
        return cls(
            plan=module.plan,
            judge=module.judge,
            ask=getattr(module, "ask", None),
            config=getattr(module, "Config", CheckConfig),
            default_on=default_on,
            defers_rpc_errors=getattr(module, "DEFERS_RPC_ERRORS", False),
            own_verdicts=getattr(module, "OWN_VERDICTS", False),
        )


def every_round(round_: ChainRound, config: CheckConfig) -> bool:
    """A ``plan`` for checks with nothing to fix in advance: they take part in every round."""
    return True


async def ask_one(
    name: str, check: Check, round_: ChainRound, plan: Plan, call: Call, obs: Observation
) -> bool:
    """Ask ``obs`` for ``check`` and keep what it answered for the judge. False when the
    endpoint failed (unavailable or malformed): the caller asks it nothing more this round. The
    failure itself is applied in the check's turn (:func:`judge_check`), so that a paced round,
    which asks before it judges, gives the verdicts a one-shot round gives."""
    if check.ask is None:
        return True
    endpoint_id = obs.target.endpoint_id
    round_.asked.setdefault(name, set()).add(endpoint_id)
    try:
        answer = await check.ask(call, obs, plan)
    except RpcError as exc:
        if check.defers_rpc_errors and exc.kind == "rpc_error":
            round_.refused.setdefault(name, {})[endpoint_id] = exc
            return True
        round_.failed.setdefault(name, {})[endpoint_id] = exc
        return False
    if answer is not None:
        round_.answers.setdefault(name, {})[endpoint_id] = answer
    return True


def judge_check(name: str, check: Check, round_: ChainRound, config: Any, plan: Plan) -> None:
    """The check's turn: the failures its asks met, then its verdicts."""
    failed = round_.failed.get(name, {})
    for obs in round_.observations:
        exc = failed.get(obs.target.endpoint_id)
        if exc is not None and obs.usable:
            obs.fail(exc)
    replies = Replies(
        answers=round_.answers.get(name, {}),
        refused=round_.refused.get(name, {}),
        asked=frozenset(round_.asked.get(name, ())),
    )
    check.judge(round_, config, plan, replies)


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


def own_verdicts(
    round_: ChainRound, name: str, replies: Replies, verdict_of: Callable[[Any], str | None]
) -> list[tuple[Observation, str]]:
    """For an own-verdict check (``OWN_VERDICTS``): each usable endpoint's verdict, the one its
    answer gives where it was asked this round, else the one its last turn gave (kept in
    ``round_.memory.verdicts[name]``); the endpoints with one."""
    kept = round_.memory.verdicts.setdefault(name, {})
    out = []
    for obs in round_.usable():
        endpoint_id = obs.target.endpoint_id
        if endpoint_id in replies.asked:  # asked now: this answer's verdict from now on
            verdict = verdict_of(replies.answers.get(endpoint_id))
            if verdict is None:
                kept.pop(endpoint_id, None)
            else:
                kept[endpoint_id] = verdict
        if endpoint_id in kept:
            out.append((obs, kept[endpoint_id]))
    return out


def judge_errors(round_: ChainRound, replies: Replies, error: str) -> None:
    """Vote a check's answers; a differing one is ``error``.

    A JSON-RPC error answer counts against an endpoint (unavailable, ``rpc_error``) only when a
    quorum of the others agreed on an answer: then the question was answerable and this endpoint
    could not serve it. When nobody reaches a quorum, the question itself may be at fault (a
    reverting canary, a block older than every node's history) and nobody is judged.
    """
    answers = {e: a for e, a in replies.answers.items()}
    vote(round_, answers, error)
    if majority(list(answers.values()), round_.chain.quorum) is None:
        return
    for obs in round_.observations:
        exc = replies.refused.get(obs.target.endpoint_id)
        if exc is not None and obs.usable:
            obs.fail(exc)
