"""Several collectors' verified weights -> one answer no single collector decides.

Pure logic, no I/O (monitor.client.fetch does the fetching and the signer check). The rules,
in order (docs/routers.md, "How the answers are combined"):

1. A collector whose answer was rejected is excluded with its reason. Two answers signed by
   the same key count once (replicas of one collector, or one collector under two URLs).
2. A collector that applied another registry than the one pinned (``registry_hash``) or, with
   none pinned, than the one most answers come from, is excluded (``registry_mismatch``): it
   counts other probes or operators. Collectors that do not tell theirs are not judged on it.
   Without a requested window, the window most answers are for is used; the others are excluded.
3. The reference time is the lower median of the answers' ``asOf``; an answer further than
   ``max_skew_ms`` from it is excluded (stale, or claiming a future run). A median, not the
   newest, so that one collector cannot push the others out by claiming a later run.
4. Fewer than ``quorum`` answers left: QuorumNotReached.
5. All left identical (same ``asOf``, same entries): that answer, as is.
6. Otherwise, per endpoint, the median of the answers' basis points (an answer that does not
   list the endpoint counts 0: it would not route there), renormalised to fractions summing to
   1 and basis points summing to 10000 (largest remainder, ties by endpoint id). ``asOf`` is the
   reference time of rule 3.
7. A collector more than ``tolerance_bps`` from the combined answer on any endpoint disagreed.
   Fewer than ``quorum`` collectors within tolerance on every endpoint: QuorumNotReached (two
   answers that differ have a median that neither vouches for).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from monitor.client.verify import TOTAL_BPS, EndpointBps, SignedWeights
from monitor.exceptions import AnswerRejected, QuorumNotReached

Status = Literal["ok", "disagreed", "excluded"]
Outcome = SignedWeights | AnswerRejected  # what one collector gave

DEFAULT_TOLERANCE_BPS = 100  # 1 %: collectors a scoring run apart differ by less, usually
DEFAULT_MAX_SKEW_MS = 120_000  # a few scoring runs (15 s each by default)


@dataclass(frozen=True)
class Disagreement:
    endpoint_id: int
    operator_id: str
    weight_bps: int | None  # the collector's; None: it does not list the endpoint (counts 0)
    combined_bps: int


@dataclass(frozen=True)
class CollectorReport:
    url: str
    status: Status
    reason: str | None = None  # why it was excluded: an AnswerRejected code
    detail: str = ""
    signer: str | None = None  # the address its signature recovered to
    as_of_ms: int | None = None
    disagreements: tuple[Disagreement, ...] = ()
    registry_hash: str | None = None  # of the registry it applied, as its /v1/identity says


@dataclass(frozen=True)
class CombinedWeight:
    endpoint_id: int
    operator_id: str
    weight: float  # the exact share of the medians; sums to 1 (or all 0)
    weight_bps: int  # sums to exactly 10000 (or all 0)


@dataclass(frozen=True)
class CombinedWeights:
    chain_id: int
    window: str
    as_of_ms: int
    weights: tuple[CombinedWeight, ...]  # endpoint id ascending
    unanimous: bool  # every counted collector gave this very answer
    quorum: int
    collectors: tuple[CollectorReport, ...]  # in the order the collectors were given

    @property
    def total_bps(self) -> int:
        return sum(w.weight_bps for w in self.weights)

    @property
    def counted(self) -> int:
        return sum(r.status != "excluded" for r in self.collectors)

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "total_bps": self.total_bps, "counted": self.counted}


def median(values: Sequence[int]) -> Fraction:
    """The middle value; with an even count, the mean of the two middle ones (exact)."""
    ordered = sorted(values)
    n = len(ordered)
    return Fraction(ordered[(n - 1) // 2] + ordered[n // 2], 2)


def renormalise(values: dict[int, Fraction]) -> dict[int, tuple[Fraction, int]]:
    """endpoint -> (share, bps): shares sum to 1 and bps to exactly 10000 by largest remainder,
    ties to the lower endpoint id; all zero when every value is. Values already summing to
    10000 come back unchanged."""
    total = sum(values.values(), Fraction(0))
    if total == 0:
        return {e: (Fraction(0), 0) for e in values}
    shares = {e: v / total for e, v in values.items()}
    scaled = {e: s * TOTAL_BPS for e, s in shares.items()}
    bps = {e: math.floor(v) for e, v in scaled.items()}
    rest = TOTAL_BPS - sum(bps.values())
    for e in sorted(scaled, key=lambda e: (bps[e] - scaled[e], e))[:rest]:
        bps[e] += 1
    return {e: (shares[e], bps[e]) for e in values}


def _excluded(
    url: str, reason: str, detail: str, answer: SignedWeights | None = None
) -> CollectorReport:
    return CollectorReport(
        url=url,
        status="excluded",
        reason=reason,
        detail=detail,
        signer=answer.signer if answer else None,
        as_of_ms=answer.as_of_ms if answer else None,
        registry_hash=answer.registry_hash if answer else None,
    )


def _median_weights(answers: Sequence[SignedWeights]) -> tuple[CombinedWeight, ...]:
    n = len(answers)
    operators: dict[int, Counter[str]] = {}
    for answer in answers:
        for w in answer.weights:
            operators.setdefault(w.endpoint_id, Counter())[w.operator_id] += 1
    chosen: dict[int, str] = {}
    for endpoint, counts in operators.items():
        top = max(counts.values())
        operator = min(o for o, c in counts.items() if c == top)  # ties: deterministic
        # Listed (with that operator) by fewer than half: its median is 0 anyway; dropping it
        # keeps one collector from padding the answer with endpoints nobody else knows.
        if 2 * top >= n:
            chosen[endpoint] = operator
    entries = [{(w.endpoint_id, w.operator_id): w.weight_bps for w in a.weights} for a in answers]
    medians = {e: median([m.get((e, o), 0) for m in entries]) for e, o in chosen.items()}
    return tuple(
        CombinedWeight(endpoint_id=e, operator_id=chosen[e], weight=float(share), weight_bps=bps)
        for e, (share, bps) in sorted(renormalise(medians).items())
    )


def _disagreements(
    answer: SignedWeights, combined: Sequence[CombinedWeight], tolerance_bps: int
) -> tuple[Disagreement, ...]:
    theirs = {(w.endpoint_id, w.operator_id): w.weight_bps for w in answer.weights}
    ours = {(w.endpoint_id, w.operator_id): w.weight_bps for w in combined}
    found = []
    for endpoint, operator in sorted(theirs.keys() | ours.keys()):
        said = theirs.get((endpoint, operator))
        combined_bps = ours.get((endpoint, operator), 0)
        if abs((said or 0) - combined_bps) > tolerance_bps:
            found.append(Disagreement(endpoint, operator, said, combined_bps))
    return tuple(found)


def _majority_registry(answers: list[tuple[str, SignedWeights]]) -> str | None:
    """The registry hash most answers come from; None on a tie for first (nobody is judged)."""
    counts = Counter(a.registry_hash for _, a in answers if a.registry_hash is not None)
    ranked = counts.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _window(window: str | None, answers: list[tuple[str, SignedWeights]]) -> str | None:
    if window is not None or not answers:
        return window
    # most_common keeps first-seen order among equals: the earlier collector's window wins.
    return Counter(a.window for _, a in answers).most_common(1)[0][0]


def combine(
    outcomes: Sequence[tuple[str, Outcome]],
    *,
    chain_id: int,
    window: str | None,
    quorum: int,
    tolerance_bps: int = DEFAULT_TOLERANCE_BPS,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    registry_hash: str | None = None,
) -> CombinedWeights:
    """One answer from (collector URL, outcome) pairs by the rules of the module docstring;
    QuorumNotReached, with every collector's report, when they do not make one."""
    reports: dict[str, CollectorReport] = {}
    valid: list[tuple[str, SignedWeights]] = []
    signed_by: dict[str, str] = {}
    for url, outcome in outcomes:
        if isinstance(outcome, AnswerRejected):
            reports[url] = _excluded(url, outcome.code, outcome.message)
        elif outcome.signer.lower() in signed_by:
            earlier = signed_by[outcome.signer.lower()]
            detail = f"signed by the same key as {earlier}: one collector counts once"
            reports[url] = _excluded(url, "duplicate_signer", detail, outcome)
        else:
            signed_by[outcome.signer.lower()] = url
            valid.append((url, outcome))

    expected = registry_hash or _majority_registry(valid)
    kept = []
    for url, answer in valid:
        if expected is not None and answer.registry_hash not in (None, expected):
            whose = "the pinned one" if registry_hash else "the one most collectors applied"
            detail = f"registry {answer.registry_hash} applied, not {whose} ({expected})"
            reports[url] = _excluded(url, "registry_mismatch", detail, answer)
        else:
            kept.append((url, answer))
    valid = kept

    window = _window(window, valid)
    kept = []
    for url, answer in valid:
        if answer.window != window:
            detail = f"weights for window {answer.window}, most collectors answered {window}"
            reports[url] = _excluded(url, "wrong_window", detail, answer)
        else:
            kept.append((url, answer))
    valid = kept

    reference = 0
    if valid:
        times = sorted(a.as_of_ms for _, a in valid)
        reference = times[(len(times) - 1) // 2]
        kept = []
        for url, answer in valid:
            skew = answer.as_of_ms - reference
            if abs(skew) > max_skew_ms:
                reason = "stale" if skew < 0 else "ahead"
                where = "behind" if skew < 0 else "ahead of"
                detail = f"asOf {abs(skew) / 1000:g} s {where} the median collector's"
                reports[url] = _excluded(url, reason, detail, answer)
            else:
                kept.append((url, answer))
        valid = kept

    def ordered() -> tuple[CollectorReport, ...]:
        return tuple(reports[url] for url, _ in outcomes)

    def valid_report(
        url: str, answer: SignedWeights, found: tuple[Disagreement, ...], detail: str = ""
    ) -> None:
        if found:
            detail = f"{len(found)} endpoint(s) more than {tolerance_bps} bps from the combined"
        elif not detail:
            detail = (
                "identical to the combined weights"
                if unanimous
                else f"within {tolerance_bps} bps of the combined weights on every endpoint"
            )
        reports[url] = CollectorReport(
            url=url,
            status="disagreed" if found else "ok",
            detail=detail,
            signer=answer.signer,
            as_of_ms=answer.as_of_ms,
            disagreements=found,
            registry_hash=answer.registry_hash,
        )

    unanimous = False
    if len(valid) < quorum:
        for url, answer in valid:
            valid_report(url, answer, (), "valid, but too few valid answers to combine")
        raise QuorumNotReached(
            f"{len(valid)} of {len(outcomes)} collectors gave valid weights for chain "
            f"{chain_id}, {quorum} needed",
            reports=ordered(),
        )

    answers = [a for _, a in valid]
    first = answers[0]
    unanimous = all(a.as_of_ms == first.as_of_ms and a.weights == first.weights for a in answers)
    if unanimous:
        combined = tuple(_as_is(w) for w in first.weights)
        as_of_ms = first.as_of_ms
    else:
        combined = _median_weights(answers)
        as_of_ms = reference
    agreeing = 0
    for url, answer in valid:
        found = _disagreements(answer, combined, tolerance_bps)
        agreeing += not found
        valid_report(url, answer, found)
    if agreeing < quorum:
        raise QuorumNotReached(
            f"collectors disagree on chain {chain_id}: {agreeing} of {len(valid)} valid answers "
            f"are within {tolerance_bps} bps of their median on every endpoint, {quorum} needed",
            reports=ordered(),
        )
    assert window is not None  # there are valid answers
    return CombinedWeights(
        chain_id=chain_id,
        window=window,
        as_of_ms=as_of_ms,
        weights=combined,
        unanimous=unanimous,
        quorum=quorum,
        collectors=ordered(),
    )


def _as_is(w: EndpointBps) -> CombinedWeight:
    return CombinedWeight(
        endpoint_id=w.endpoint_id,
        operator_id=w.operator_id,
        weight=w.weight_bps / TOTAL_BPS,
        weight_bps=w.weight_bps,
    )
