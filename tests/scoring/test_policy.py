from __future__ import annotations

import math
from typing import get_args

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from monitor.ingest.schemas import ErrorKind
from monitor.scoring.aggregate import EndpointStats
from monitor.scoring.config import ScoringConfig
from monitor.scoring.policy import (
    BASIS_POINTS,
    ERROR_REASONS,
    INCORRECT,
    INSUFFICIENT_PROBES,
    INSUFFICIENT_SAMPLES,
    LAG_EXCEEDED,
    STALE_DATA,
    STALLED,
    SYNCING,
    UNAVAILABLE,
    ChainTargets,
    Policy,
    Score,
    basis_points,
    explain,
    score_endpoint,
    weights,
)

FAST = settings(max_examples=80, deadline=None)

MAINNET = ChainTargets(latency_p95_ms=250.0, max_lag_blocks=2, block_time_s=12.0)
POLICY = Policy()


def ep(
    availability: float | None = 1.0,
    p95: float | None = 0.0,
    lag: float | None = 0.0,
    correctness: float | None = 1.0,
    samples: int = 100,
    probes: int = 3,
    errors: dict[str, int] | None = None,
) -> EndpointStats:
    return EndpointStats(
        availability=availability,
        latency_p50_ms=p95,
        latency_p95_ms=p95,
        lag_blocks=lag,
        correctness=correctness,
        samples=samples,
        probes=probes,
        errors=errors or {},
    )


# --- factors and defaults ---------------------------------------------------------------------


def test_perfect_endpoint_scores_one() -> None:
    s = score_endpoint(ep(), MAINNET, POLICY)
    assert s.score == 1.0 and s.status == "ok" and s.reasons == ()
    assert s.factors == dict.fromkeys(
        ("availability", "latency", "lag", "correctness", "freshness"), 1.0
    )
    assert s.lag_seconds == 0.0


def test_each_factor_halves_at_its_documented_point() -> None:
    assert score_endpoint(ep(availability=0.917), MAINNET, POLICY).factors[
        "availability"
    ] == pytest.approx(0.5, abs=1e-3)
    assert score_endpoint(ep(p95=250.0), MAINNET, POLICY).factors["latency"] == 0.5
    assert score_endpoint(ep(lag=2.0), MAINNET, POLICY).factors["lag"] == 0.5
    assert score_endpoint(ep(lag=4.0), MAINNET, POLICY).factors["lag"] == 0.25
    assert score_endpoint(ep(correctness=0.96), MAINNET, POLICY).factors["correctness"] == 0.96


def test_latency_ref_overrides_sla() -> None:
    s = score_endpoint(ep(p95=100.0), MAINNET, Policy(latency_ref_ms=100.0))
    assert s.factors["latency"] == 0.5


def test_score_is_product_of_factors() -> None:
    s = score_endpoint(ep(availability=0.99, p95=300.0, lag=1.0, correctness=0.97), MAINNET, POLICY)
    want = 0.99**8 * (250 / 550) * 0.5**0.5 * 0.97
    assert s.score == pytest.approx(want, rel=1e-12)
    assert s.lag_seconds == 12.0


def test_unjudged_correctness_is_neutral_not_excluded() -> None:
    s = score_endpoint(ep(correctness=None), MAINNET, POLICY)
    assert s.status == "ok" and s.factors["correctness"] == 1.0 and s.score == 1.0


# --- exclusions and reasons -------------------------------------------------------------------


def test_incorrect_is_excluded_with_score_zero() -> None:
    s = score_endpoint(ep(correctness=0.9, errors={"wrong_hash": 3}), MAINNET, POLICY)
    assert s.status == "excluded" and s.score == 0.0
    assert s.reasons == (INCORRECT, "wrong_hash")
    assert weights({"bad": s.score, "good": 0.3}) == {"bad": 0.0, "good": 1.0}


def test_just_at_min_correctness_is_not_excluded() -> None:
    assert score_endpoint(ep(correctness=0.95), MAINNET, POLICY).status == "ok"


def test_unavailable_is_excluded_with_score_zero() -> None:
    s = score_endpoint(ep(availability=0.4, errors={"timeout": 60}), MAINNET, POLICY)
    assert (s.status, s.score, s.reasons) == ("excluded", 0.0, (UNAVAILABLE, "timeout"))
    s = score_endpoint(ep(availability=0.4, correctness=0.0), MAINNET, POLICY)
    assert s.reasons == (INCORRECT, UNAVAILABLE)


@pytest.mark.parametrize(
    ("stats", "reason"),
    [
        (ep(samples=2), INSUFFICIENT_SAMPLES),
        (ep(probes=0), INSUFFICIENT_PROBES),
        (ep(availability=None, samples=0, probes=0), INSUFFICIENT_PROBES),
        # too little data even to exclude as incorrect
        (ep(correctness=0.0, samples=1), INSUFFICIENT_SAMPLES),
    ],
)
def test_insufficient_data_scores_none_and_weighs_zero(stats: EndpointStats, reason: str) -> None:
    s = score_endpoint(stats, MAINNET, POLICY)
    assert s.status == "excluded" and s.score is None and s.reasons[0] == reason
    assert weights({"new": s.score, "old": 0.5}) == {"new": 0.0, "old": 1.0}


def test_min_probes() -> None:
    s = score_endpoint(ep(probes=2), MAINNET, Policy(min_probes=3))
    assert s.score is None and s.reasons == (INSUFFICIENT_PROBES,)


def test_no_sample_in_the_window_is_insufficient_samples_never_a_last_good_score() -> None:
    nothing = EndpointStats(None, None, None, None, None, samples=0, probes=0)
    s = score_endpoint(nothing, MAINNET, POLICY)
    assert (s.status, s.score) == ("excluded", None)
    assert s.reasons == (INSUFFICIENT_PROBES, INSUFFICIENT_SAMPLES)  # every code that applies
    s = score_endpoint(nothing, MAINNET, Policy(min_probes=0))
    assert s.reasons == (INSUFFICIENT_SAMPLES,)


def test_error_reasons_most_frequent_first_unknown_kinds_ignored() -> None:
    errors = {"timeout": 1, "malformed": 5, "wrong_chain": 5, "gremlins": 9, "transport": 0}
    s = score_endpoint(ep(availability=0.98, errors=errors), MAINNET, POLICY)
    assert s.status == "ok"
    assert s.reasons == ("malformed", "wrong_chain", "timeout")


def test_error_reasons_cover_every_ingest_error_kind() -> None:
    assert set(ERROR_REASONS) == set(get_args(ErrorKind))


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError):
        ChainTargets(latency_p95_ms=250.0, max_lag_blocks=0, block_time_s=12.0)
    with pytest.raises(ValueError):
        Policy(min_availability=1.5)
    with pytest.raises(ValueError):
        Policy(latency_ref_ms=0.0)


# --- monotonicity -----------------------------------------------------------------------------

availability = st.floats(0, 1)
latency = st.floats(0, 100_000)
lag = st.floats(0, 10_000)
correctness = st.none() | st.floats(0, 1)
other_scores = st.lists(st.none() | st.floats(0, 1), max_size=6)


def _score(stats: EndpointStats) -> float:
    s = score_endpoint(stats, MAINNET, POLICY).score
    assert s is not None and 0.0 <= s <= 1.0
    return s


def _weight(own: float, others: list[float | None]) -> float:
    scores: dict[int, float | None] = {i + 1: s for i, s in enumerate(others)}
    scores[0] = own
    return weights(scores)[0]


@FAST
@given(availability, availability, latency, lag, correctness, other_scores)
def test_worse_availability_never_scores_or_weighs_higher(
    a1: float, a2: float, p95: float, lg: float, c: float | None, others: list[float | None]
) -> None:
    worse, better = sorted((a1, a2))
    s_worse = _score(ep(availability=worse, p95=p95, lag=lg, correctness=c))
    s_better = _score(ep(availability=better, p95=p95, lag=lg, correctness=c))
    assert s_worse <= s_better
    assert _weight(s_worse, others) <= _weight(s_better, others)


@FAST
@given(latency, latency, availability, lag, correctness, other_scores)
def test_higher_latency_never_scores_or_weighs_higher(
    p1: float, p2: float, a: float, lg: float, c: float | None, others: list[float | None]
) -> None:
    better, worse = sorted((p1, p2))
    s_worse = _score(ep(availability=a, p95=worse, lag=lg, correctness=c))
    s_better = _score(ep(availability=a, p95=better, lag=lg, correctness=c))
    assert s_worse <= s_better
    assert _weight(s_worse, others) <= _weight(s_better, others)


@FAST
@given(lag, lag, availability, latency, correctness, other_scores)
def test_higher_lag_never_scores_or_weighs_higher(
    l1: float, l2: float, a: float, p95: float, c: float | None, others: list[float | None]
) -> None:
    better, worse = sorted((l1, l2))
    s_worse = _score(ep(availability=a, p95=p95, lag=worse, correctness=c))
    s_better = _score(ep(availability=a, p95=p95, lag=better, correctness=c))
    assert s_worse <= s_better
    assert _weight(s_worse, others) <= _weight(s_better, others)


@FAST
@given(st.floats(0, 1), st.floats(0, 1), other_scores)
def test_weight_is_monotone_in_own_score(s1: float, s2: float, others: list[float | None]) -> None:
    lo, hi = sorted((s1, s2))
    assert _weight(lo, others) <= _weight(hi, others)


# --- weights and basis points -----------------------------------------------------------------

scores_map = st.dictionaries(
    st.integers(0, 10_000), st.none() | st.floats(0, 1) | st.just(0.0), max_size=25
)


@FAST
@given(scores_map)
def test_weights_sum_to_one_and_basis_points_to_10000(scores: dict[int, float | None]) -> None:
    w = weights(scores)
    bp = basis_points(w)
    assert w.keys() == scores.keys() == bp.keys()
    assert all(not math.isnan(x) and 0.0 <= x <= 1.0 for x in w.values())
    if any(s for s in scores.values()):
        assert math.fsum(w.values()) == pytest.approx(1.0, abs=1e-9)
        assert sum(bp.values()) == BASIS_POINTS
    else:
        assert all(x == 0.0 for x in w.values())
        assert all(x == 0 for x in bp.values())
    for key, s in scores.items():
        if not s:
            assert w[key] == 0.0 and bp[key] == 0
        # Largest remainder: each share is within one unit of its exact quota.
        if any(w.values()):
            assert abs(bp[key] - w[key] * BASIS_POINTS) < 1 + 1e-6


@FAST
@given(st.dictionaries(st.text(max_size=3), st.floats(0, 1e6), min_size=1, max_size=10))
def test_basis_points_normalises_any_weights(w: dict[str, float]) -> None:
    assume(any(w.values()))
    assert sum(basis_points(w).values()) == BASIS_POINTS


def test_all_zero_gives_all_zero_not_nan() -> None:
    assert weights({"a": 0.0, "b": None, "c": 0.0}) == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert basis_points({"a": 0.0, "b": 0.0}) == {"a": 0, "b": 0}
    assert weights({}) == {} and basis_points({}) == {}


def test_basis_points_ties_broken_by_key_order() -> None:
    # 10000 / 3 = 3333.33 each: the one unit left over goes to the smallest key.
    assert basis_points({"c": 1.0, "a": 1.0, "b": 1.0}) == {"c": 3333, "a": 3334, "b": 3333}
    assert basis_points({3: 1.0, 2: 1.0, 1: 1.0}) == {3: 3333, 2: 3333, 1: 3334}
    # 10000 / 7 = 1428.57: 4 units left, to the 4 smallest keys.
    bp = basis_points(dict.fromkeys(range(7), 1.0))
    assert bp == {0: 1429, 1: 1429, 2: 1429, 3: 1429, 4: 1428, 5: 1428, 6: 1428}


def test_basis_points_largest_remainder() -> None:
    # Quotas 6666.67 / 3333.33 / 0: floor gives 6666 + 3333, the unit goes to the larger remainder.
    assert basis_points({"a": 2.0, "b": 1.0, "c": 0.0}) == {"a": 6667, "b": 3333, "c": 0}


def test_weights_and_basis_points_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        weights({"a": -0.1})
    with pytest.raises(ValueError):
        weights({"a": math.nan})
    with pytest.raises(ValueError):
        basis_points({"a": math.inf})


# --- the worked example of docs/scoring.md ----------------------------------------------------


def test_worked_example() -> None:
    endpoints = {
        "healthy": ep(p95=1.0),
        "slow": ep(p95=300.0),
        "lagging": ep(p95=1.0, lag=4.0),
        "wrong-fork": ep(p95=1.0, correctness=0.0, errors={"wrong_hash": 60}),
    }
    scores = {k: score_endpoint(v, MAINNET, POLICY) for k, v in endpoints.items()}
    assert scores["healthy"].score == pytest.approx(0.996016, abs=1e-6)
    assert scores["slow"].score == pytest.approx(0.454545, abs=1e-6)
    assert scores["lagging"].score == pytest.approx(0.249004, abs=1e-6)
    assert scores["lagging"].lag_seconds == 48.0
    assert scores["wrong-fork"].score == 0.0
    assert scores["wrong-fork"].reasons == (INCORRECT, "wrong_hash")
    w = weights({k: s.score for k, s in scores.items()})
    assert w["healthy"] == pytest.approx(0.586042, abs=1e-6)
    assert w["slow"] == pytest.approx(0.267448, abs=1e-6)
    assert w["lagging"] == pytest.approx(0.146510, abs=1e-6)
    assert w["wrong-fork"] == 0.0
    assert basis_points(w) == {"healthy": 5860, "slow": 2675, "lagging": 1465, "wrong-fork": 0}


# --- issue 4: exponents, presets, exclusions, freshness, explanations --------------------------


def test_factor_weights_are_exponents_and_presets_trade_speed_for_freshness() -> None:
    slow_fresh = ep(p95=250.0, lag=0.0)  # latency factor 0.5, lag factor 1
    fast_late = ep(p95=0.0, lag=2.0)  # latency factor 1, lag factor 0.5
    balanced = Policy()
    assert score_endpoint(slow_fresh, MAINNET, balanced).score == pytest.approx(0.5)
    assert score_endpoint(fast_late, MAINNET, balanced).score == pytest.approx(0.5)
    fastest = Policy.from_config(ScoringConfig(preset="prefer_fastest"))
    freshest = Policy.from_config(ScoringConfig(preset="prefer_freshest"))
    assert score_endpoint(slow_fresh, MAINNET, fastest).score == pytest.approx(0.25)
    assert score_endpoint(fast_late, MAINNET, fastest).score == pytest.approx(0.5**0.5)
    assert score_endpoint(slow_fresh, MAINNET, freshest).score == pytest.approx(0.5**0.5)
    assert score_endpoint(fast_late, MAINNET, freshest).score == pytest.approx(0.25)
    # A factor weighted 0 does not count at all; named weights override the preset's.
    no_latency = Policy.from_config(ScoringConfig(preset="prefer_fastest", weights={"latency": 0}))
    assert score_endpoint(slow_fresh, MAINNET, no_latency).score == pytest.approx(1.0)


def test_scoring_config_is_validated() -> None:
    from pydantic import ValidationError

    for bad in (
        {"preset": "prefer_cheapest"},
        {"weights": {"latency": -1}},
        {"weights": {"price": 1}},
        {"min_probes": 0},
    ):
        with pytest.raises(ValidationError):
            ScoringConfig.model_validate(bad)


def test_lag_beyond_the_limit_is_excluded() -> None:
    # limit: 4 x the SLA's 2 blocks
    assert score_endpoint(ep(lag=8.0), MAINNET, POLICY).status == "ok"
    s = score_endpoint(ep(lag=8.5), MAINNET, POLICY)
    assert (s.status, s.score, s.reasons) == ("excluded", 0.0, (LAG_EXCEEDED,))


def stale_ep(kind: str, probes_saying: int, probes: int = 3) -> EndpointStats:
    return EndpointStats(
        availability=1.0,
        latency_p50_ms=1.0,
        latency_p95_ms=1.0,
        lag_blocks=0.0,
        correctness=1.0,
        samples=100,
        probes=probes,
        latest_errors={kind: probes_saying},
    )


@pytest.mark.parametrize("kind", [STALLED, SYNCING])
def test_stalled_or_syncing_by_a_majority_of_probes_is_excluded(kind: str) -> None:
    assert score_endpoint(stale_ep(kind, 1), MAINNET, POLICY).status == "ok"  # one probe of 3
    s = score_endpoint(stale_ep(kind, 2), MAINNET, POLICY)
    assert (s.status, s.score, s.reasons[0]) == ("excluded", 0.0, kind)


def test_old_data_decays_then_is_stale() -> None:
    def at(age_s: float) -> Score:
        stats = EndpointStats(
            availability=1.0,
            latency_p50_ms=0.0,
            latency_p95_ms=0.0,
            lag_blocks=0.0,
            correctness=1.0,
            samples=100,
            probes=3,
            age_s=age_s,
        )
        return score_endpoint(stats, MAINNET, POLICY)  # stale_after_s = 60

    assert at(60.0).score == 1.0
    assert at(90.0).score == pytest.approx(0.5)
    assert at(119.0).score == pytest.approx(1 / 60)
    s = at(120.0)
    assert (s.status, s.score, s.reasons) == ("excluded", None, (STALE_DATA,))


def test_staleness_reads_the_min_probes_th_freshest_probe() -> None:
    """Default min_probes = 1: the endpoint's newest sample, whichever probe sent it (one probe
    still reporting keeps it fresh). min_probes = 2 of 3: the second freshest probe, so one
    probe alone can neither keep it fresh nor, by going silent, make it stale."""

    def at(*ages: float, min_probes: int = 1) -> Score:
        stats = EndpointStats(1.0, 0.0, 0.0, 0.0, 1.0, samples=90, probes=3, ages_s=ages)
        return score_endpoint(stats, MAINNET, Policy(min_probes=min_probes))

    assert at(5.0, 500.0, 500.0).score == 1.0
    assert at(5.0, 500.0, 500.0).age_s == 5.0
    assert at(90.0, 500.0, 500.0).score == pytest.approx(0.5)  # (2 - 90/60)
    assert at(121.0, 130.0, 500.0).reasons == (STALE_DATA,)
    assert at(5.0, 500.0, 500.0, min_probes=2).reasons == (STALE_DATA,)  # one liar: not fresh
    two = at(5.0, 75.0, 500.0, min_probes=2)  # one silent probe: still scored, decaying
    assert two.status == "ok" and two.score == pytest.approx(0.75)
    assert explain(two)["freshness"]["value"] == 75.0


def test_exponents_on_hand_computed_factors() -> None:
    # p95 = SLA (latency 0.5), lag = 2 x SLA (0.25), availability 0.95 (0.95^8), correctness 0.98
    stats = ep(availability=0.95, p95=250.0, lag=4.0, correctness=0.98)
    balanced = score_endpoint(stats, MAINNET, POLICY).score
    assert balanced == pytest.approx(0.95**8 * 0.5 * 0.25 * 0.98)
    custom = ScoringConfig(weights={"availability": 0.5, "latency": 2, "lag": 0, "correctness": 3})
    s = score_endpoint(stats, MAINNET, Policy.from_config(custom))
    assert s.score == pytest.approx((0.95**8) ** 0.5 * 0.5**2 * 1.0 * 0.98**3)
    explained = explain(s)
    assert explained["lag"] == {"value": 4.0, "sub_score": 0.25, "weight": 0.0, "share": 0.0}
    total = 0.5 * 8 * math.log(0.95) + 2 * math.log(0.5) + 3 * math.log(0.98)
    assert explained["latency"]["share"] == pytest.approx(2 * math.log(0.5) / total)
    assert sum(f["share"] or 0.0 for f in explained.values()) == pytest.approx(1.0)


def test_explain_shares_say_which_factor_costs_the_traffic() -> None:
    s = score_endpoint(ep(p95=250.0, lag=2.0), MAINNET, POLICY)  # 0.5 x 0.5
    explained = explain(s)
    assert explained["latency"] == {"value": 250.0, "sub_score": 0.5, "weight": 1.0, "share": 0.5}
    assert explained["lag"]["share"] == pytest.approx(0.5)
    assert explained["availability"]["share"] == 0.0
    perfect = explain(score_endpoint(ep(), MAINNET, POLICY))
    assert all(f["share"] == 0.0 for f in perfect.values())
    dead = explain(score_endpoint(ep(availability=0.0), MAINNET, Policy(min_availability=0.0)))
    assert dead["availability"]["share"] == 1.0


@FAST
@given(
    st.floats(0.5, 1.0),
    st.floats(0.0, 5_000.0),
    st.floats(0.0, 8.0),
    st.floats(0.95, 1.0),
)
def test_explain_shares_sum_to_one(a: float, p95: float, lag: float, c: float) -> None:
    s = score_endpoint(ep(availability=a, p95=p95, lag=lag, correctness=c), MAINNET, POLICY)
    shares = [f["share"] for f in explain(s).values()]
    assert all(0.0 <= x <= 1.0 for x in shares if x is not None)
    if s.score is not None and s.score < 1.0:
        assert sum(x for x in shares if x is not None) == pytest.approx(1.0)
