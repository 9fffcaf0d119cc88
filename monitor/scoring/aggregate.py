"""Turn the raw probe samples of one endpoint into statistics.

Two steps, both pure:

1. :func:`per_probe` summarises what one probe saw of one endpoint over the window
   (availability, latency percentiles, recent lag, correctness).
2. :func:`across_probes` combines the per-probe summaries with the *median*, so that one
   faulty or dishonest probe (out of 2f+1) cannot move an operator outside the range the honest
   probes observed.

Arithmetic on the few values that decide a result (interpolation, means of two middle values) is
done exactly, in ratios of integers, and rounded once, so results are exact where the answer is
representable and correctly rounded otherwise: ``percentile([1, 2, 3, 4], 50) == 2.5`` and a
median is never outside ``[min, max]`` of its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "EndpointStats",
    "ProbeSamples",
    "ProbeStats",
    "across_probes",
    "endpoint_stats",
    "median",
    "per_probe",
    "percentile",
    "percentile_of_ranks",
    "percentile_ranks",
]


def _check_fraction(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_non_negative(name: str, value: float | None) -> None:
    if value is not None and not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


def _frozen_errors(errors: Mapping[str, int]) -> Mapping[str, int]:
    for kind, count in errors.items():
        if count < 0:
            raise ValueError(f"error count for {kind!r} must be >= 0, got {count}")
    # A read-only copy: the dataclass is frozen and must not change under the caller's feet.
    return MappingProxyType(dict(errors))


@dataclass(frozen=True, slots=True)
class ProbeSamples:
    """The raw samples of one (endpoint, probe) pair in the scoring window."""

    total: int  # checks made
    available: int  # checks the endpoint answered (ok)
    correct: int  # judged correct
    incorrect: int  # judged incorrect; unknown = total - correct - incorrect, not judged
    latencies_ms: Sequence[float] = ()  # of the available checks
    # Lag of the most recent available checks, newest first; the caller limits it to the policy's
    # ``recent_lag_checks`` so that lag describes "now", not the whole window.
    recent_lags_blocks: Sequence[int] = ()
    errors: Mapping[str, int] = field(default_factory=dict)  # error kind -> count
    latest_error: str | None = None  # the error kind of this probe's newest check, if any
    age_s: float | None = None  # how old this probe's newest check is at the evaluation time
    # Instead of ``latencies_ms`` (when the database sorted them): how many there are, and the
    # values at the ranks (0-based, ascending) that the p50 and p95 read (percentile_ranks).
    latency_count: int = 0
    latency_at_rank: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.available <= self.total:
            raise ValueError(f"need 0 <= available <= total, got {self.available}/{self.total}")
        if self.correct < 0 or self.incorrect < 0 or self.correct + self.incorrect > self.total:
            raise ValueError(
                f"need correct, incorrect >= 0 and correct + incorrect <= total, got "
                f"{self.correct} + {self.incorrect} > {self.total}"
            )
        latencies = tuple(float(x) for x in self.latencies_ms)
        for x in latencies:
            _check_non_negative("latency_ms", x)
        lags = tuple(int(x) for x in self.recent_lags_blocks)
        if any(x < 0 for x in lags):
            raise ValueError("lag_blocks must be >= 0")
        _check_non_negative("age_s", self.age_s)
        # Normalise to immutable containers; frozen dataclasses need object.__setattr__ for that.
        object.__setattr__(self, "latencies_ms", latencies)
        object.__setattr__(self, "recent_lags_blocks", lags)
        object.__setattr__(self, "errors", _frozen_errors(self.errors))
        at_rank = {int(k): float(v) for k, v in self.latency_at_rank.items()}
        for x in at_rank.values():
            _check_non_negative("latency_ms", x)
        if latencies and self.latency_count:
            raise ValueError("give latencies_ms or latency_count with latency_at_rank, not both")
        if self.latency_count < 0 or any(
            r not in at_rank for q in (50, 95) for r in percentile_ranks(self.latency_count, q)
        ):
            raise ValueError("latency_at_rank lacks a rank the percentiles read")
        object.__setattr__(self, "latency_at_rank", MappingProxyType(at_rank))


@dataclass(frozen=True, slots=True)
class ProbeStats:
    """What one probe saw of one endpoint over the window; None means "not measured"."""

    availability: float | None  # available / total; None when total == 0
    latency_p50_ms: float | None  # None when no latencies
    latency_p95_ms: float | None
    lag_blocks: float | None  # median of the recent lags; None when there are none
    correctness: float | None  # correct / (correct + incorrect); None when nothing was judged
    samples: int  # checks (total)
    latest_error: str | None = None
    age_s: float | None = None

    def __post_init__(self) -> None:
        _check_fraction("availability", self.availability)
        _check_non_negative("latency_p50_ms", self.latency_p50_ms)
        _check_non_negative("latency_p95_ms", self.latency_p95_ms)
        _check_non_negative("lag_blocks", self.lag_blocks)
        _check_fraction("correctness", self.correctness)
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """One endpoint across all probes: each value is the median of the probes' values."""

    availability: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    lag_blocks: float | None
    correctness: float | None
    samples: int  # sum over probes
    probes: int  # probes with at least one sample
    errors: Mapping[str, int] = field(default_factory=dict)  # summed over probes
    # error kind -> number of probes whose newest check carried it (e.g. "syncing": 2)
    latest_errors: Mapping[str, int] = field(default_factory=dict)
    age_s: float | None = None  # median over probes of the age of their newest check
    # Each probe's age of its newest check, ascending (freshest probe first): the policy reads
    # how long ago its ``min_probes`` freshest probes reported (staleness). Empty: use age_s.
    ages_s: Sequence[float] = ()

    def __post_init__(self) -> None:
        _check_fraction("availability", self.availability)
        _check_non_negative("latency_p50_ms", self.latency_p50_ms)
        _check_non_negative("latency_p95_ms", self.latency_p95_ms)
        _check_non_negative("lag_blocks", self.lag_blocks)
        _check_fraction("correctness", self.correctness)
        if self.samples < 0 or self.probes < 0:
            raise ValueError("samples and probes must be >= 0")
        _check_non_negative("age_s", self.age_s)
        ages = tuple(sorted(float(x) for x in self.ages_s))
        for x in ages:
            _check_non_negative("ages_s", x)
        object.__setattr__(self, "ages_s", ages)
        object.__setattr__(self, "errors", _frozen_errors(self.errors))
        object.__setattr__(self, "latest_errors", _frozen_errors(self.latest_errors))


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (q in [0, 100]) by linear interpolation between closest ranks.

    Same definition as numpy's default (``method="linear"``): with the n values sorted,
    position ``h = (n - 1) * q / 100`` and the result interpolates between ``x[floor(h)]`` and
    ``x[floor(h) + 1]``. Linear rather than nearest-rank because it moves continuously with the
    data and, for two values, the 50th percentile is their mean (the usual median). Computed
    exactly and rounded once. Raises ValueError on no values, NaN/inf values or q outside [0, 100].
    """
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("percentile of no values")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError("percentile values must be finite")
    return percentile_of_ranks(len(xs), q, xs.__getitem__)


def percentile_ranks(n: int, q: float) -> tuple[int, ...]:
    """The 0-based ranks in ascending order that the q-th percentile of n values reads: one, or
    the two it interpolates between (none for n = 0). For q = 50 and q = 95 these are
    ``(n - 1) // 2`` and ``(95 * (n - 1)) // 100``, and the next one up when it is not exact."""
    if n <= 0:
        return ()
    lo, rest, _ = _position(n, q)
    return (lo,) if rest == 0 else (lo, lo + 1)


def _position(n: int, q: float) -> tuple[int, int, int]:
    """h = q * (n - 1) / 100 exactly, as floor(h) and the fraction rest / scale (integers)."""
    q_num, q_den = float(q).as_integer_ratio()
    scale = q_den * 100
    lo, rest = divmod(q_num * (n - 1), scale)
    return lo, rest, scale


def percentile_of_ranks(n: int, q: float, value_at: Callable[[int], float]) -> float:
    """:func:`percentile` of n sorted values of which ``value_at(rank)`` gives those at
    :func:`percentile_ranks` (all that it reads)."""
    if n <= 0:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:  # also rejects NaN
        raise ValueError(f"q must be in [0, 100], got {q!r}")
    lo, rest, scale = _position(n, q)
    if rest == 0:
        return value_at(lo)
    # a + (b - a) * rest / scale as one ratio of integers: int / int is correctly rounded, so
    # this is the exact value rounded once (as float(Fraction) would be, without its cost)
    a_num, a_den = float(value_at(lo)).as_integer_ratio()
    b_num, b_den = float(value_at(lo + 1)).as_integer_ratio()
    numerator = a_num * b_den * scale + (b_num * a_den - a_num * b_den) * rest
    return numerator / (a_den * b_den * scale)


def median(values: Iterable[float]) -> float:
    """The median; for an even count the mean of the two middle values (= 50th percentile)."""
    return percentile(values, 50)


def _median_or_none(values: Iterable[float | None], *, needed: int = 1) -> float | None:
    present = [v for v in values if v is not None]
    return median(present) if present and len(present) >= needed else None


def per_probe(samples: ProbeSamples) -> ProbeStats:
    """Summarise one probe's samples of one endpoint."""
    s = samples
    latencies = s.latencies_ms
    judged = s.correct + s.incorrect
    lags = s.recent_lags_blocks
    p50 = p95 = None
    if latencies:
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    elif s.latency_count:
        at = s.latency_at_rank.__getitem__
        p50 = percentile_of_ranks(s.latency_count, 50, at)
        p95 = percentile_of_ranks(s.latency_count, 95, at)
    return ProbeStats(
        availability=s.available / s.total if s.total else None,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        # The median, not the mean: one check that raced a new block, or one spike, moves
        # nothing while the other recent checks agree.
        lag_blocks=median(lags) if lags else None,
        correctness=s.correct / judged if judged else None,
        samples=s.total,
        latest_error=s.latest_error,
        age_s=s.age_s,
    )


def across_probes(
    stats: Sequence[ProbeStats],
    errors: Mapping[str, int] | Iterable[Mapping[str, int]] = (),
) -> EndpointStats:
    """Combine the probes' statistics of one endpoint.

    Each value is the median over the probes that measured it (None ignored), and exists only
    when a strict majority of the probes that sent samples measured it: with 2f+1 probes of which
    f+1 are honest, the median stays within the honest probes' range, and a quantity the honest
    probes could not measure (correctness when no vote reached its quorum) is unknown, not the
    liars' to decide.
    ``errors`` is either one mapping (already summed) or one mapping per probe; counts are summed.
    """
    per_kind: dict[str, int] = {}
    sources: Iterable[Mapping[str, int]] = [errors] if isinstance(errors, Mapping) else errors
    for source in sources:
        for kind, count in source.items():
            per_kind[kind] = per_kind.get(kind, 0) + count
    ages = [p.age_s for p in stats if p.age_s is not None and p.samples > 0]
    sampling = [p for p in stats if p.samples > 0]
    needed = len(sampling) // 2 + 1

    def combined(values: Iterable[float | None]) -> float | None:
        return _median_or_none(values, needed=needed)

    latest: dict[str, int] = {}
    for p in stats:
        if p.latest_error is not None and p.samples > 0:
            latest[p.latest_error] = latest.get(p.latest_error, 0) + 1
    return EndpointStats(
        availability=combined(p.availability for p in sampling),
        latency_p50_ms=combined(p.latency_p50_ms for p in sampling),
        latency_p95_ms=combined(p.latency_p95_ms for p in sampling),
        lag_blocks=combined(p.lag_blocks for p in sampling),
        correctness=combined(p.correctness for p in sampling),
        samples=sum(p.samples for p in stats),
        probes=len(sampling),
        errors=per_kind,
        latest_errors=latest,
        age_s=_median_or_none(ages),
        ages_s=ages,
    )


def endpoint_stats(samples: Iterable[ProbeSamples]) -> EndpointStats:
    """Convenience: :func:`per_probe` for each probe's samples, then :func:`across_probes`."""
    samples = list(samples)
    return across_probes([per_probe(s) for s in samples], [s.errors for s in samples])
