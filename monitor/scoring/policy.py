"""Turn an endpoint's statistics into a score, and scores into routing weights.

    score = availability_factor * latency_factor * lag_factor * correctness_factor

Every factor is in [0, 1], is 1 for a perfect endpoint and never increases as the measured
quantity gets worse, so the score is monotone in each. Endpoints that served wrong data, answer
less than half the time, or have too little data are excluded (weight 0). See docs/scoring.md.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, TypeVar

from monitor.scoring.aggregate import EndpointStats

__all__ = [
    "BASIS_POINTS",
    "ERROR_REASONS",
    "INCORRECT",
    "INSUFFICIENT_DATA",
    "UNAVAILABLE",
    "ChainTargets",
    "Policy",
    "Score",
    "basis_points",
    "score_endpoint",
    "weights",
]

K = TypeVar("K", bound=Hashable)

BASIS_POINTS = 10_000

# Exclusion reasons (status "excluded").
INSUFFICIENT_DATA = "insufficient_data"  # too few probes or samples to judge; score None
INCORRECT = "incorrect"  # correctness below Policy.min_correctness; score 0.0
UNAVAILABLE = "unavailable"  # availability below Policy.min_availability; score 0.0

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
    """Scoring parameters; the defaults are argued in docs/scoring.md."""

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
    # Not used by score_endpoint: how the caller builds ProbeSamples. Availability, latency and
    # correctness are judged over the window (MONITOR_WINDOWS); lag over each probe's last few
    # available checks, so a stalled node drops within a few rounds and recovers as fast.
    recent_lag_checks: int = 3

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
    factors: dict[str, float] = field(default_factory=dict)  # availability/latency/lag/correctness
    # [0, 1]; 0.0 when excluded as incorrect/unavailable, None when there is too little data.
    score: float | None = None
    status: Literal["ok", "excluded"] = "ok"
    reasons: tuple[str, ...] = ()


def _factors(stats: EndpointStats, targets: ChainTargets, policy: Policy) -> dict[str, float]:
    # An unmeasured quantity (None) is neutral (1.0): exclusion and penalties need evidence, and
    # too little evidence overall is handled by insufficient_data.
    ref = policy.latency_ref_ms if policy.latency_ref_ms is not None else targets.latency_p95_ms
    a, p95, lag, c = stats.availability, stats.latency_p95_ms, stats.lag_blocks, stats.correctness
    return {
        "availability": 1.0 if a is None else a**policy.availability_exponent,
        "latency": 1.0 if p95 is None else ref / (ref + p95),
        "lag": 1.0 if lag is None else 0.5 ** (lag / targets.max_lag_blocks),
        "correctness": 1.0 if c is None else c,
    }


def _error_reasons(errors: Mapping[str, int]) -> tuple[str, ...]:
    seen = [(kind, n) for kind, n in errors.items() if kind in ERROR_REASONS and n > 0]
    seen.sort(key=lambda kn: (-kn[1], ERROR_REASONS.index(kn[0])))
    return tuple(kind for kind, _ in seen)


def score_endpoint(stats: EndpointStats, targets: ChainTargets, policy: Policy) -> Score:
    """Score one endpoint; excluded endpoints get 0.0 (incorrect/unavailable) or None (no data)."""
    lag_seconds = None if stats.lag_blocks is None else stats.lag_blocks * targets.block_time_s
    factors = _factors(stats, targets, policy)
    informative = _error_reasons(stats.errors)

    if (
        stats.probes < policy.min_probes
        or stats.samples < policy.min_samples
        or stats.availability is None  # nothing checked at all
    ):
        return Score(
            stats, lag_seconds, factors, None, "excluded", (INSUFFICIENT_DATA, *informative)
        )

    excluded: list[str] = []
    if stats.correctness is not None and stats.correctness < policy.min_correctness:
        excluded.append(INCORRECT)
    if stats.availability < policy.min_availability:
        excluded.append(UNAVAILABLE)
    if excluded:
        return Score(stats, lag_seconds, factors, 0.0, "excluded", (*excluded, *informative))

    score = math.prod(factors.values())
    return Score(stats, lag_seconds, factors, score, "ok", informative)


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
