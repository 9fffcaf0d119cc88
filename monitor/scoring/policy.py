"""Turn an endpoint's statistics into a score, and scores into routing weights.

    score = availability^wa * latency^wl * lag^wg * correctness^wc * freshness

Every factor is in [0, 1], is 1 for a perfect endpoint and never increases as the measured
quantity gets worse, so the score is monotone in each; the exponents are the chain's factor
weights (all 1 by default). Endpoints that served wrong data, answer less than half the time, lag
beyond the limit, say they are syncing or stalled, or have too little or too old data are excluded
(weight 0). ``with_history`` adds hysteresis and a recovery ramp across runs. See
docs/scoring.md.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from typing import Literal, TypeVar

from monitor.scoring.aggregate import EndpointStats
from monitor.scoring.config import FACTORS, FactorWeights, ScoringConfig

__all__ = [
    "BASIS_POINTS",
    "ERROR_REASONS",
    "EXCLUSION_REASONS",
    "INCORRECT",
    "INSUFFICIENT_PROBES",
    "INSUFFICIENT_SAMPLES",
    "LAG_EXCEEDED",
    "RECOVERING",
    "STALE_DATA",
    "UNAVAILABLE",
    "ChainTargets",
    "Policy",
    "Previous",
    "Score",
    "basis_points",
    "data_age",
    "explain",
    "score_endpoint",
    "weights",
    "with_history",
]

K = TypeVar("K", bound=Hashable)

BASIS_POINTS = 10_000

# Exclusion reasons (status "excluded"). Too little evidence: score None, no hysteresis.
INSUFFICIENT_PROBES = "insufficient_probes"  # fewer probes than Policy.min_probes
INSUFFICIENT_SAMPLES = "insufficient_samples"  # fewer checks than Policy.min_samples (or none)
# data_age (by default: since any probe last reported it) above 2 x Policy.stale_after_s
STALE_DATA = "stale_data"
# Evidence against the endpoint: score 0.0, and it must clear with a margin to come back.
INCORRECT = "incorrect"  # correctness below Policy.min_correctness
UNAVAILABLE = "unavailable"  # availability below Policy.min_availability
LAG_EXCEEDED = "lag_exceeded"  # lag above Policy.lag_limit_factor x the SLA's max lag
STALLED = "stalled"  # most probes' latest check found its head frozen
SYNCING = "syncing"  # most probes' latest check found it syncing
# Held back after an exclusion: hysteresis, then a ramp back to its full score.
RECOVERING = "recovering"

EXCLUSION_REASONS: tuple[str, ...] = (
    INSUFFICIENT_PROBES,
    INSUFFICIENT_SAMPLES,
    STALE_DATA,
    INCORRECT,
    UNAVAILABLE,
    LAG_EXCEEDED,
    STALLED,
    SYNCING,
    RECOVERING,
)

# Informative reasons: the error kinds of monitor.ingest.schemas.ErrorKind, listed in a Score's
# reasons when errors of that kind were seen in the window (most frequent first). They explain a
# score; they do not change it (the factors already account for the failures).
ERROR_REASONS: tuple[str, ...] = (
    "timeout",  # no answer in time
    "transport",  # connection refused/reset, DNS, TLS
    "http_status",  # HTTP status other than 200
    "rpc_error",  # JSON-RPC error object
    "malformed",  # not JSON-RPC, wrong types
    "wrong_chain",  # eth_chainId differs from the registry
    "wrong_hash",  # block hash differs from the majority (other fork)
    "head_ahead",  # head far above a reference no one else confirms
    "head_missing",  # cannot return the block at the head it claims
    "wrong_old_hash",  # block hash at a random older height differs from the majority
    "wrong_logs",  # eth_getLogs result differs from the majority
    "wrong_state",  # archive balance/storage differs from the majority
    "wrong_call",  # eth_call canary differs from the majority
    "syncing",  # eth_syncing reports syncing
    "stalled",  # head frozen while the chain moved on
)


@dataclass(frozen=True, slots=True)
class Policy:
    """Scoring parameters; the defaults are argued in docs/scoring.md. Per chain, from the
    registry's ``scoring`` section (:meth:`from_config`)."""

    # One probe is enough to score (small networks); the median is robust once there are >= 3.
    min_probes: int = 1
    # Below 3 checks in the window a single failure swings availability by >= 33 %: wait.
    min_samples: int = 3
    # Each failed request is a user-visible error plus a retry, so availability is punished
    # steeply: 0.99 -> 0.92, 0.95 -> 0.66, 0.917 -> 0.5.
    availability_exponent: float = 8.0
    # Below this the endpoint fails more often than it answers: excluded as "unavailable".
    min_availability: float = 0.5
    # latency factor = ref / (ref + p95): 1 at 0 ms, 0.5 at ref. None: the chain's SLA p95.
    latency_ref_ms: float | None = None
    # A node that served wrong data once in 20 judged checks is not routed to at all.
    min_correctness: float = 0.95
    # Lag beyond this many times the SLA's max lag is not "a bit late" any more: excluded.
    lag_limit_factor: float = 4.0
    # Not used by score_endpoint: how the caller builds ProbeSamples. Availability, latency and
    # correctness are judged over the window (MONITOR_WINDOWS); lag over each probe's last few
    # available checks (their median), so a stalled node drops within a few rounds, recovers as
    # fast, and one lag spike moves nothing.
    recent_lag_checks: int = 3
    # The exponents of the factors (the chain's preset and weights).
    factor_weights: FactorWeights = field(default_factory=FactorWeights)
    # Data (data_age) older than this starts to decay; twice as old is "stale_data" (excluded).
    stale_after_s: float = 60.0
    # After an exclusion for cause ends, the score ramps from 0 to full over this long.
    recovery_s: float = 60.0

    def __post_init__(self) -> None:
        if self.min_probes < 0 or self.min_samples < 0:
            raise ValueError("min_probes and min_samples must be >= 0")
        if not self.availability_exponent > 0:
            raise ValueError("availability_exponent must be > 0")
        if not 0.0 <= self.min_availability <= 1.0:
            raise ValueError("min_availability must be in [0, 1]")
        if not 0.0 <= self.min_correctness <= 1.0:
            raise ValueError("min_correctness must be in [0, 1]")
        if self.latency_ref_ms is not None and not (
            self.latency_ref_ms > 0 and math.isfinite(self.latency_ref_ms)
        ):
            raise ValueError("latency_ref_ms must be finite and > 0")
        if self.recent_lag_checks < 1:
            raise ValueError("recent_lag_checks must be >= 1")
        for name in ("lag_limit_factor", "stale_after_s", "recovery_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and > 0")

    @classmethod
    def from_config(cls, config: ScoringConfig) -> Policy:
        return cls(
            min_probes=config.min_probes,
            min_samples=config.min_samples,
            min_availability=config.min_availability,
            min_correctness=config.min_correctness,
            latency_ref_ms=config.latency_ref_ms,
            lag_limit_factor=config.lag_limit_factor,
            factor_weights=config.factor_weights(),
            stale_after_s=config.stale_after_s,
            recovery_s=config.recovery_s,
        )


@dataclass(frozen=True, slots=True)
class ChainTargets:
    """A chain's SLA targets, from the registry."""

    latency_p95_ms: float  # latency factor is 0.5 here (unless Policy.latency_ref_ms is set)
    max_lag_blocks: int  # lag factor is 0.5 here
    block_time_s: float  # converts lag to seconds for display

    def __post_init__(self) -> None:
        if not (self.latency_p95_ms > 0 and math.isfinite(self.latency_p95_ms)):
            raise ValueError("latency_p95_ms must be finite and > 0")
        if self.max_lag_blocks <= 0:
            raise ValueError("max_lag_blocks must be > 0")
        if not (self.block_time_s > 0 and math.isfinite(self.block_time_s)):
            raise ValueError("block_time_s must be finite and > 0")


@dataclass(frozen=True, slots=True)
class Score:
    """An endpoint's score, the factors it is made of, and why it is what it is."""

    stats: EndpointStats
    lag_seconds: float | None  # lag_blocks * block_time_s
    factors: dict[str, float] = field(default_factory=dict)  # factor name -> sub-score in [0, 1]
    # [0, 1]; 0.0 when excluded for cause, None when there is too little (or too old) data.
    score: float | None = None
    status: Literal["ok", "recovering", "excluded"] = "ok"
    reasons: tuple[str, ...] = ()
    exponents: dict[str, float] = field(default_factory=dict)  # factor name -> its weight
    # How long ago the policy's min_probes freshest probes reported it (:func:`data_age`).
    age_s: float | None = None


def data_age(stats: EndpointStats, policy: Policy) -> float | None:
    """How old the endpoint's data is, for staleness: the age of the newest check of its
    ``min_probes``-th freshest probe (at least the first). With the default ``min_probes = 1``
    that is the age of the newest sample of the endpoint, whichever probe sent it; with
    ``min_probes = f + 1`` of ``2f + 1`` probes, f probes can neither keep a silent endpoint
    fresh nor, by going silent, make it stale."""
    if not stats.ages_s:
        return stats.age_s
    k = min(max(policy.min_probes, 1), len(stats.ages_s))
    return stats.ages_s[k - 1]


def _freshness(age_s: float | None, policy: Policy) -> float:
    """1 while the newest data is at most stale_after_s old, then linearly to 0 at twice that."""
    if age_s is None or age_s <= policy.stale_after_s:
        return 1.0
    return max(0.0, 2.0 - age_s / policy.stale_after_s)


def _factors(stats: EndpointStats, targets: ChainTargets, policy: Policy) -> dict[str, float]:
    # An unmeasured quantity (None) is neutral (1.0): exclusion and penalties need evidence, and
    # too little evidence overall is handled by insufficient_probes/samples.
    ref = policy.latency_ref_ms if policy.latency_ref_ms is not None else targets.latency_p95_ms
    a, p95, lag, c = stats.availability, stats.latency_p95_ms, stats.lag_blocks, stats.correctness
    return {
        "availability": 1.0 if a is None else a**policy.availability_exponent,
        "latency": 1.0 if p95 is None else ref / (ref + p95),
        "lag": 1.0 if lag is None else 0.5 ** (lag / targets.max_lag_blocks),
        "correctness": 1.0 if c is None else c,
        "freshness": _freshness(data_age(stats, policy), policy),
    }


def _exponents(policy: Policy) -> dict[str, float]:
    weights = policy.factor_weights
    return {**{name: getattr(weights, name) for name in FACTORS}, "freshness": 1.0}


def _error_reasons(errors: Mapping[str, int]) -> tuple[str, ...]:
    seen = [(kind, n) for kind, n in errors.items() if kind in ERROR_REASONS and n > 0]
    seen.sort(key=lambda kn: (-kn[1], ERROR_REASONS.index(kn[0])))
    return tuple(kind for kind, _ in seen)


def _causes(stats: EndpointStats, targets: ChainTargets, policy: Policy) -> list[str]:
    """Exclusions for cause (evidence against the endpoint), in EXCLUSION_REASONS order."""
    causes: list[str] = []
    if stats.correctness is not None and stats.correctness < policy.min_correctness:
        causes.append(INCORRECT)
    if stats.availability is not None and stats.availability < policy.min_availability:
        causes.append(UNAVAILABLE)
    limit = policy.lag_limit_factor * targets.max_lag_blocks
    if stats.lag_blocks is not None and stats.lag_blocks > limit:
        causes.append(LAG_EXCEEDED)
    for kind in (STALLED, SYNCING):  # stale: a majority of the probes' latest checks say so
        if stats.latest_errors.get(kind, 0) * 2 > stats.probes:
            causes.append(kind)
    return causes


def score_endpoint(stats: EndpointStats, targets: ChainTargets, policy: Policy) -> Score:
    """Score one endpoint over one window; excluded endpoints get 0.0 (for cause) or None (too
    little or too old data). Hysteresis across runs is :func:`with_history`'s."""
    lag_seconds = None if stats.lag_blocks is None else stats.lag_blocks * targets.block_time_s
    factors = _factors(stats, targets, policy)
    exponents = _exponents(policy)
    informative = _error_reasons(stats.errors)

    age_s = data_age(stats, policy)

    def excluded(score: float | None, *reasons: str) -> Score:
        return Score(
            stats,
            lag_seconds,
            factors,
            score,
            "excluded",
            (*reasons, *informative),
            exponents,
            age_s,
        )

    lacking: list[str] = []
    if stats.probes < policy.min_probes:
        lacking.append(INSUFFICIENT_PROBES)
    if stats.samples < policy.min_samples or stats.availability is None:
        lacking.append(INSUFFICIENT_SAMPLES)  # also: no sample at all in the window
    if lacking:
        return excluded(None, *lacking)
    if factors["freshness"] == 0.0:
        return excluded(None, STALE_DATA)
    causes = _causes(stats, targets, policy)
    if causes:
        return excluded(0.0, *causes)
    score = math.prod(f ** exponents[name] for name, f in factors.items())
    return Score(stats, lag_seconds, factors, score, "ok", informative, exponents, age_s)


def explain(score: Score) -> dict[str, dict[str, float | None]]:
    """Per factor: the measured value, its sub-score, its weight (exponent) and its share of the
    score's shortfall, ``w * ln(f) / sum(w * ln(f))``: which factors cost the endpoint its
    traffic, summing to 1 (all 0 when nothing is lost; a zero factor takes the whole share)."""
    stats = score.stats
    values: dict[str, float | None] = {
        "availability": stats.availability,
        "latency": stats.latency_p95_ms,
        "lag": stats.lag_blocks,
        "correctness": stats.correctness,
        "freshness": score.age_s if score.age_s is not None else stats.age_s,
    }
    logs: dict[str, float] = {}
    for name, f in score.factors.items():
        w = score.exponents.get(name, 1.0)
        logs[name] = -math.inf if f == 0 and w > 0 else (w * math.log(f) if f > 0 else 0.0)
    zeros = [name for name, v in logs.items() if v == -math.inf]
    total = sum(v for v in logs.values() if v != -math.inf)
    shares: dict[str, float] = {}
    for name, v in logs.items():
        if zeros:
            shares[name] = 1.0 / len(zeros) if name in zeros else 0.0
        else:
            shares[name] = v / total if total < 0 else 0.0
    return {
        name: {
            "value": values.get(name),
            "sub_score": score.factors[name],
            "weight": score.exponents.get(name, 1.0),
            "share": shares[name],
        }
        for name in score.factors
    }


@dataclass(frozen=True, slots=True)
class Previous:
    """What the latest stored run said of an endpoint (same chain and window)."""

    status: str  # "ok" | "recovering" | "excluded"
    score: float | None  # 0.0: excluded for cause; None: for lack of data
    since: datetime  # when it entered this status


def clears_with_margin(stats: EndpointStats, targets: ChainTargets, policy: Policy) -> bool:
    """Hysteresis: back from an exclusion for cause only once clear of every threshold by a
    margin, so an endpoint hovering at a threshold does not flap in and out."""
    if stats.availability is not None and stats.availability < policy.min_availability + 0.1:
        return False
    if stats.correctness is not None and stats.correctness < min(
        1.0, policy.min_correctness + 0.02
    ):
        return False
    limit = policy.lag_limit_factor * targets.max_lag_blocks
    return stats.lag_blocks is None or stats.lag_blocks <= limit / 2


def with_history(
    score: Score,
    previous: Previous | None,
    *,
    as_of: datetime,
    targets: ChainTargets,
    policy: Policy,
) -> tuple[Score, datetime]:
    """Apply hysteresis and the recovery ramp; returns the score and since when its status holds.

    * Excluded now: as computed (exclusions act at once; a broken node loses traffic now).
    * Excluded for cause before, fine now but not by the margin: still excluded (``recovering``).
    * Clear by the margin: ``recovering``, its score ramping linearly from 0 to full over
      ``policy.recovery_s`` from that moment; then ``ok``.
    * Back from a lack of data (insufficient, stale): no hysteresis, no ramp.
    """
    if score.status == "excluded":
        if previous is not None and previous.status == "excluded":
            return score, previous.since
        return score, as_of
    if previous is None or previous.status == "ok":
        return score, previous.since if previous is not None else as_of
    if previous.status == "excluded":
        if previous.score is None:  # it lacked data, nothing held against it
            return score, as_of
        if not clears_with_margin(score.stats, targets, policy):
            held = replace(
                score, score=0.0, status="excluded", reasons=(RECOVERING, *score.reasons)
            )
            return held, previous.since
        since = as_of
    else:  # recovering
        since = previous.since
    ramp = min(1.0, (as_of - since).total_seconds() / policy.recovery_s)
    assert score.score is not None
    if ramp >= 1.0:
        return score, as_of
    ramped = replace(
        score, score=score.score * ramp, status="recovering", reasons=(RECOVERING, *score.reasons)
    )
    return ramped, since


def weights(scores: Mapping[K, float | None]) -> dict[K, float]:
    """Routing weights proportional to score; None/0 -> 0. Sum to 1, or all 0.0 if no score > 0.

    Each weight is the exact ratio score / sum(scores), rounded once, so raising one endpoint's
    score never lowers its weight (plain float sums could, by one ulp).
    """
    exact: dict[K, Fraction] = {}
    for key, s in scores.items():
        if s is not None and not (s >= 0 and math.isfinite(s)):
            raise ValueError(f"score for {key!r} must be finite and >= 0, got {s!r}")
        exact[key] = Fraction(s) if s else Fraction(0)
    total = sum(exact.values(), Fraction(0))
    if total == 0:
        return dict.fromkeys(scores, 0.0)
    return {key: float(s / total) for key, s in exact.items()}


def _tie_rank(keys: list[K]) -> dict[K, int]:
    # Sorted key order when the keys are comparable (endpoint ids), else the mapping's order:
    # either way the same input always gives the same split.
    try:
        ordered: list[K] = sorted(keys)  # type: ignore[type-var]
    except TypeError:
        ordered = keys
    return {key: i for i, key in enumerate(ordered)}


def basis_points(weights: Mapping[K, float]) -> dict[K, int]:
    """Integer weights summing to exactly 10000 (largest remainder method), or all 0.

    Weights are normalised by their sum first. Each key gets floor(share * 10000); the units
    left over go to the largest remainders, ties broken by key order. A zero weight never
    receives a unit.
    """
    exact: dict[K, Fraction] = {}
    for key, w in weights.items():
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"weight for {key!r} must be finite and >= 0, got {w!r}")
        exact[key] = Fraction(w)
    total = sum(exact.values(), Fraction(0))
    if total == 0:
        return dict.fromkeys(weights, 0)
    quotas = {key: w * BASIS_POINTS / total for key, w in exact.items()}
    result = {key: math.floor(q) for key, q in quotas.items()}
    left = BASIS_POINTS - sum(result.values())
    rank = _tie_rank(list(quotas))
    by_remainder = sorted(quotas, key=lambda key: (-(quotas[key] - result[key]), rank[key]))
    for key in by_remainder[:left]:
        result[key] += 1
    return result
