from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.scoring.aggregate import (
    EndpointStats,
    ProbeSamples,
    ProbeStats,
    across_probes,
    endpoint_stats,
    median,
    per_probe,
    percentile,
)

FAST = settings(max_examples=60, deadline=None)

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


# --- percentile -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([7.0], 0, 7.0),
        ([7.0], 95, 7.0),
        ([1, 2, 3, 4], 50, 2.5),
        ([4, 1, 3, 2], 50, 2.5),  # order of input does not matter
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([1, 2, 3, 4], 25, 1.75),
        ([1, 2, 3, 4, 5], 95, 4.8),
        ([15, 20, 35, 40, 50], 40, 29.0),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 90, 10.0),
        ([0.25, 0.5], 50, 0.375),
        ([1, 1, 1, 100], 95, 85.15),
    ],
)
def test_percentile_exact_small_examples(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_percentile_matches_numpy_linear_definition_exactly() -> None:
    # numpy's default: h = (n - 1) q / 100, interpolate x[floor(h)] .. x[floor(h) + 1].
    xs = [3.0, 1.0, 10.0, 7.5, 2.25, 8.0, 0.5]
    s = sorted(xs)
    for q in range(101):
        h = Fraction(q) * (len(s) - 1) / 100
        lo = math.floor(h)
        hi = min(lo + 1, len(s) - 1)
        want = float(Fraction(s[lo]) + (Fraction(s[hi]) - Fraction(s[lo])) * (h - lo))
        assert percentile(xs, q) == want


@pytest.mark.parametrize(
    ("values", "q"),
    [([], 50), ([1.0], -1), ([1.0], 100.5), ([1.0, math.nan], 50), ([1.0], math.nan)],
)
def test_percentile_rejects_bad_input(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


@FAST
@given(st.lists(finite, min_size=1, max_size=30), st.floats(0, 100), st.floats(0, 100))
def test_percentile_bounded_and_monotone_in_q(values: list[float], q1: float, q2: float) -> None:
    lo, hi = sorted((q1, q2))
    p_lo, p_hi = percentile(values, lo), percentile(values, hi)
    assert min(values) <= p_lo <= p_hi <= max(values)


def test_median_even_count_is_mean_of_middle_two() -> None:
    assert median([1, 9, 3, 5]) == 4.0
    assert median([2, 1, 3]) == 2.0
    # The exact mean of the two binary floats, rounded once (numpy gives the same here).
    assert median([0.1, 0.2]) == float((Fraction(0.1) + Fraction(0.2)) / 2)


# --- per probe --------------------------------------------------------------------------------


def test_per_probe() -> None:
    stats = per_probe(
        ProbeSamples(
            total=10,
            available=8,
            correct=6,
            incorrect=1,  # 3 unknown: not judged
            latencies_ms=[10, 20, 30, 40, 50, 60, 70, 80],
            recent_lags_blocks=[0, 1, 2],
            errors={"timeout": 2},
        )
    )
    assert stats == ProbeStats(
        availability=0.8,
        latency_p50_ms=45.0,
        latency_p95_ms=76.5,
        lag_blocks=1.0,
        correctness=6 / 7,
        samples=10,
    )


@pytest.mark.parametrize(
    ("lags", "expected"),
    [
        ([10, 0, 0], 0.0),  # one spike (the mean would say 3.33): moves nothing
        ([0, 10, 0], 0.0),
        ([0, 0, 10], 0.0),
        ([10, 10, 0], 10.0),  # two of the last three: a real lag
        ([7, 1], 4.0),  # only two available checks so far: their mean
        ([5], 5.0),
    ],
)
def test_per_probe_lag_is_the_median_of_the_recent_checks(lags: list[int], expected: float) -> None:
    stats = per_probe(
        ProbeSamples(total=3, available=3, correct=0, incorrect=0, recent_lags_blocks=lags)
    )
    assert stats.lag_blocks == expected


@FAST
@given(
    st.lists(st.integers(0, 1_000), min_size=3, max_size=3),
    st.integers(0, 2),
    st.integers(0, 10**9),
)
def test_one_spike_among_three_recent_lags_stays_within_the_other_two(
    lags: list[int], at: int, spike: int
) -> None:
    spiked = list(lags)
    spiked[at] = spike
    lag = per_probe(ProbeSamples(3, 3, 0, 0, recent_lags_blocks=spiked)).lag_blocks
    others = [x for i, x in enumerate(spiked) if i != at]
    assert lag is not None and min(others) <= lag <= max(others)


def test_per_probe_nothing_measured_is_none() -> None:
    stats = per_probe(ProbeSamples(total=0, available=0, correct=0, incorrect=0))
    assert stats == ProbeStats(None, None, None, None, None, 0)
    stats = per_probe(ProbeSamples(total=4, available=0, correct=0, incorrect=0))
    assert stats.availability == 0.0
    assert stats.latency_p50_ms is None and stats.lag_blocks is None
    assert stats.correctness is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"total": 2, "available": 3, "correct": 0, "incorrect": 0},
        {"total": 2, "available": -1, "correct": 0, "incorrect": 0},
        {"total": 2, "available": 2, "correct": 2, "incorrect": 1},
        {"total": 2, "available": 2, "correct": 0, "incorrect": 0, "latencies_ms": [-1.0]},
        {"total": 2, "available": 2, "correct": 0, "incorrect": 0, "recent_lags_blocks": [-1]},
        {"total": 2, "available": 2, "correct": 0, "incorrect": 0, "errors": {"timeout": -1}},
    ],
)
def test_probe_samples_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ProbeSamples(**kwargs)  # type: ignore[arg-type]


def test_probe_stats_validation() -> None:
    with pytest.raises(ValueError):
        ProbeStats(1.5, None, None, None, None, 1)
    with pytest.raises(ValueError):
        ProbeStats(1.0, math.nan, None, None, None, 1)


# --- across probes ----------------------------------------------------------------------------


def _ps(
    a: float | None, lat: float | None, lag: float | None, c: float | None, n: int = 10
) -> ProbeStats:
    return ProbeStats(a, lat, lat, lag, c, n)


def test_across_probes_median_ignores_none() -> None:
    stats = across_probes(
        [
            _ps(1.0, 10, 0, 1.0),
            _ps(0.875, 20, 1, None),
            _ps(0.5, None, 3, 0.5),
            _ps(0.75, 40, None, None),
            _ps(None, None, None, None, n=0),  # a probe that saw nothing
        ],
        [{"timeout": 1}, {"timeout": 2, "wrong_hash": 1}],
    )
    assert stats == EndpointStats(
        availability=0.8125,  # median of 1.0, 0.875, 0.5, 0.75
        latency_p50_ms=20.0,  # median of 10, 20, 40
        latency_p95_ms=20.0,
        lag_blocks=1.0,
        correctness=None,  # measured by 2 of the 4 sampling probes: no majority, unknown
        samples=40,
        probes=4,
        errors={"timeout": 3, "wrong_hash": 1},
    )


def test_across_probes_needs_a_majority_of_sampling_probes_per_quantity() -> None:
    three_of_four = [_ps(1.0, 10, 0, 1.0), _ps(1.0, 10, 0, 0.5), _ps(1.0, 10, 0, None)]
    assert across_probes([*three_of_four, _ps(1.0, 10, 0, 0.0)]).correctness == 0.5
    assert across_probes([*three_of_four, _ps(1.0, 10, 0, None)]).correctness is None
    # A probe without samples is not counted in the majority.
    assert across_probes([*three_of_four[:2], _ps(None, None, None, None, 0)]).correctness == 0.75


def test_across_probes_all_none_and_single_mapping() -> None:
    stats = across_probes([_ps(None, None, None, None, n=0)], {"transport": 4})
    assert stats.availability is None and stats.correctness is None
    assert stats.probes == 0 and stats.samples == 0
    assert dict(stats.errors) == {"transport": 4}
    assert across_probes([]).probes == 0


def test_endpoint_stats_from_samples() -> None:
    a = ProbeSamples(4, 4, 4, 0, [1, 2, 3, 4], [0], {})
    b = ProbeSamples(4, 2, 2, 0, [5, 5], [2], {"timeout": 2})
    stats = endpoint_stats([a, b])
    assert stats.availability == 0.75
    assert stats.lag_blocks == 1.0
    assert stats.samples == 8 and stats.probes == 2
    assert dict(stats.errors) == {"timeout": 2}


def test_across_probes_keeps_each_probes_age_freshest_first() -> None:
    def aged(age: float | None, n: int = 10) -> ProbeStats:
        return ProbeStats(1.0, 1.0, 1.0, 0.0, 1.0, n, age_s=age)

    stats = across_probes([aged(200.0), aged(5.0), aged(None), aged(90.0), aged(1.0, n=0)])
    assert stats.ages_s == (5.0, 90.0, 200.0)  # probes without samples or age left out
    assert stats.age_s == 90.0  # the median, for display
    with pytest.raises(ValueError):
        EndpointStats(1.0, 1.0, 1.0, 0.0, 1.0, 1, 1, ages_s=[-1.0])


# --- robustness of the median -----------------------------------------------------------------

fraction = st.floats(0, 1)
latency = st.floats(0, 10_000)
lag = st.floats(0, 1_000)
honest_probe = st.builds(
    ProbeStats, fraction, latency, latency, lag, fraction, st.integers(1, 1000)
)
# An adversary may report anything valid, including "not measured".
adversarial_probe = st.builds(
    ProbeStats,
    st.none() | fraction,
    st.none() | latency,
    st.none() | latency,
    st.none() | lag,
    st.none() | fraction,
    st.integers(0, 1000),
)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 4).flatmap(
        lambda f: st.tuples(
            st.lists(honest_probe, min_size=f + 1, max_size=f + 1),
            st.lists(adversarial_probe, min_size=f, max_size=f),
            st.randoms(),
        )
    )
)
def test_f_of_2f_plus_1_adversarial_probes_stay_within_honest_range(
    case: tuple[list[ProbeStats], list[ProbeStats], random.Random],
) -> None:
    honest, adversarial, rnd = case
    probes = honest + adversarial
    rnd.shuffle(probes)  # the order of probes must not matter either
    stats = across_probes(probes)
    for name in ("availability", "latency_p50_ms", "latency_p95_ms", "lag_blocks", "correctness"):
        values = [getattr(p, name) for p in honest]
        got = getattr(stats, name)
        assert got is not None
        assert min(values) <= got <= max(values), name
