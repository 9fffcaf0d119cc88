"""The bound on what lying probes can do (docs/scoring.md, "Threat model and bounds").

With 2f+1 probes of which f lie (report anything at all, or nothing), every statistic of an
endpoint is the median over probes, so it lies within the range of the f+1 honest probes' values.
Every factor is monotone, so the endpoint's score lies between the score of its worst honest
values and that of its best, ``[s_lo, s_hi]``; its weight lies between
``s_lo_i / (s_lo_i + sum_j s_hi_j)`` and ``s_hi_i / (s_hi_i + sum_j s_lo_j)`` (j the other
endpoints). When the honest probes agree exactly the interval is a point: the liars move nothing.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.scoring.aggregate import EndpointStats, ProbeStats, across_probes
from monitor.scoring.policy import Policy, score_endpoint, weights
from tests.scoring.test_policy import MAINNET

POLICY = Policy()
EPS = 1e-9


@st.composite
def truth(draw: st.DrawFn) -> tuple[float, float, float, float]:
    return (
        draw(st.floats(0.3, 1.0)),  # availability
        draw(st.floats(1.0, 3_000.0)),  # p95 ms
        draw(st.floats(0.0, 12.0)),  # lag blocks
        draw(st.sampled_from([1.0, 1.0, 0.99, 0.9, 0.0])),  # correctness
    )


@st.composite
def honest(draw: st.DrawFn, t: tuple[float, float, float, float]) -> ProbeStats:
    """What an honest probe measures: the truth with realistic noise (its own network path)."""
    a, p95, lag, c = t
    return ProbeStats(
        availability=min(1.0, max(0.0, a + draw(st.floats(-0.02, 0.02)))),
        latency_p50_ms=p95 / 2,
        latency_p95_ms=p95 * draw(st.floats(0.9, 1.3)),
        lag_blocks=max(0.0, lag + draw(st.sampled_from([-1.0, 0.0, 0.0, 1.0]))),
        correctness=c,
        samples=30,
    )


def _maybe(values: st.SearchStrategy[float]) -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), values)


liar = st.builds(
    ProbeStats,
    availability=_maybe(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)),
    latency_p50_ms=_maybe(st.floats(0.0, 1e6)),
    latency_p95_ms=_maybe(st.sampled_from([0.0, 1e6]) | st.floats(0.0, 1e6)),
    lag_blocks=_maybe(st.sampled_from([0.0, 1e6]) | st.floats(0.0, 1e6)),
    correctness=_maybe(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)),
    samples=st.sampled_from([0, 30, 10_000]),
    latest_error=st.sampled_from([None, "stalled", "syncing"]),
)


def extreme(stats: list[ProbeStats], best: bool) -> EndpointStats:
    """The endpoint as its best (or worst) honest probe on every quantity at once."""
    pick_high, pick_low = (max, min) if best else (min, max)
    return EndpointStats(
        availability=pick_high(s.availability for s in stats if s.availability is not None),
        latency_p50_ms=pick_low(s.latency_p50_ms for s in stats if s.latency_p50_ms is not None),
        latency_p95_ms=pick_low(s.latency_p95_ms for s in stats if s.latency_p95_ms is not None),
        lag_blocks=pick_low(s.lag_blocks for s in stats if s.lag_blocks is not None),
        correctness=pick_high(s.correctness for s in stats if s.correctness is not None),
        samples=sum(s.samples for s in stats),
        probes=len(stats),
    )


def score(stats: EndpointStats) -> float:
    s = score_endpoint(stats, MAINNET, POLICY).score
    return 0.0 if s is None else s


@st.composite
def fleet(draw: st.DrawFn) -> tuple[list[list[ProbeStats]], list[list[ProbeStats]]]:
    f = draw(st.integers(1, 3))
    endpoints = draw(st.integers(2, 4))
    honest_views, liar_views = [], []
    for _ in range(endpoints):
        t = draw(truth())
        honest_views.append([draw(honest(t)) for _ in range(f + 1)])
        liar_views.append([draw(liar) for _ in range(f)])
    return honest_views, liar_views


@settings(max_examples=150, deadline=None)
@given(fleet())
def test_f_lying_probes_of_2f_plus_1_keep_every_weight_within_the_honest_bound(
    views: tuple[list[list[ProbeStats]], list[list[ProbeStats]]],
) -> None:
    honest_views, liar_views = views
    actual = weights(
        {
            i: score_endpoint(across_probes(h + lies), MAINNET, POLICY).score
            for i, (h, lies) in enumerate(zip(honest_views, liar_views, strict=True))
        }
    )
    lo = [score(extreme(h, best=False)) for h in honest_views]
    hi = [score(extreme(h, best=True)) for h in honest_views]
    for i in range(len(honest_views)):
        others_hi = sum(hi) - hi[i]
        others_lo = sum(lo) - lo[i]
        w_min = lo[i] / (lo[i] + others_hi) if lo[i] + others_hi > 0 else 0.0
        w_max = hi[i] / (hi[i] + others_lo) if hi[i] + others_lo > 0 else 1.0
        assert w_min - EPS <= actual[i] <= w_max + EPS, (i, lo, hi, actual)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_when_honest_probes_agree_liars_move_nothing(data: st.DataObject) -> None:
    f = data.draw(st.integers(1, 3))
    endpoints = data.draw(st.integers(2, 4))
    honest_only, with_liars = {}, {}
    for i in range(endpoints):
        view = data.draw(honest(data.draw(truth())))
        honest_only[i] = score_endpoint(across_probes([view] * (f + 1)), MAINNET, POLICY)
        liars = [data.draw(liar) for _ in range(f)]
        with_liars[i] = score_endpoint(across_probes([view] * (f + 1) + liars), MAINNET, POLICY)
    assert weights({i: s.score for i, s in honest_only.items()}) == weights(
        {i: s.score for i, s in with_liars.items()}
    )
    for i in honest_only:
        # Liars can neither exclude an honest endpoint nor include a broken one.
        assert honest_only[i].status == with_liars[i].status
        assert math.isclose(honest_only[i].score or 0.0, with_liars[i].score or 0.0)


# --- the figures quoted in docs/scoring.md ------------------------------------------------------

TARGETS = MAINNET
# endpoint: (availability, p95 ms, lag blocks) as the honest probes' median sees it
FLEET = {
    "fast": (0.999, 80.0, 0.0),
    "average": (0.995, 150.0, 0.0),
    "slow": (0.99, 300.0, 1.0),
    "late": (0.999, 100.0, 3.0),
}


def _fleet_score(a: float, p95: float, lag: float) -> float:
    return score(EndpointStats(a, p95 / 2, p95, lag, 1.0, 90, 3))


def worst_case_shift(d_availability: float, d_latency: float, d_lag: float) -> float:
    """The largest weight change (in weight units) f liars of 2f+1 can cause in FLEET when the
    honest probes' views of each endpoint spread by the given amounts around the median."""
    mid = {k: _fleet_score(*v) for k, v in FLEET.items()}
    lo = {
        k: _fleet_score(max(0.0, a - d_availability), p * (1 + d_latency), g + d_lag)
        for k, (a, p, g) in FLEET.items()
    }
    hi = {
        k: _fleet_score(min(1.0, a + d_availability), p / (1 + d_latency), max(0.0, g - d_lag))
        for k, (a, p, g) in FLEET.items()
    }
    w = weights(mid)
    worst = 0.0
    for k in FLEET:
        others = [j for j in FLEET if j != k]
        w_min = lo[k] / (lo[k] + sum(hi[j] for j in others))
        w_max = hi[k] / (hi[k] + sum(lo[j] for j in others))
        worst = max(worst, w[k] - w_min, w_max - w[k])
    return worst


def test_documented_figures() -> None:
    assert worst_case_shift(0.0, 0.0, 0.0) == 0.0
    assert round(worst_case_shift(0.002, 0.05, 0.0) * 100, 1) == 1.5
    assert round(worst_case_shift(0.01, 0.10, 1.0) * 100, 1) == 16.4
    assert round(worst_case_shift(0.01, 0.10, 0.0) * 100, 1) == 4.3
