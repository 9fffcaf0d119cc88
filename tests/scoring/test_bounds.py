"""The bound on what lying probes can do (docs/scoring.md, "Threat model and bounds").

Model: a few endpoints of one chain, each seen by 2f+1 probes (f from 1 to 3). f+1 probes are
honest: their raw samples (:class:`ProbeSamples`) are drawn around the endpoint's true behaviour
with realistic noise (their own failures, network path, another continent, a block more or less
of lag, a check judged or not, an older newest check). f probes lie: each reports, per endpoint,
*any* per_probe-able samples (all down, all perfect, absurd latency, huge lag, all incorrect, a
vote for stalled or syncing, nothing at all, or arbitrary numbers).

Everything goes through the public pipeline, ``endpoint_stats -> score_endpoint -> weights``, with
the default ``Policy()``. The property:

1. each statistic of an endpoint is the median over probes, so it lies within the range of the
   honest probes' values;
2. every factor is monotone and every exclusion is a threshold on one of those statistics (or a
   majority vote), so the endpoint's score lies within ``[s_lo, s_hi]``: the scores of the
   endpoint as its worst and as its best honest probe on every quantity at once;
3. hence its weight lies within ``[s_lo_i / (s_lo_i + sum_j s_hi_j), s_hi_i / (s_hi_i +
   sum_j s_lo_j)]`` (j the other endpoints), whatever the liars do; an endpoint that all its
   honest probes find healthy is never excluded and one they all find broken never included;
4. when the honest probes agree exactly, the interval is a point: the liars move nothing.

Precondition (what "honest" must provide): on every quantity, the honest probes that measured it
outnumber the liars who report it. Here all f+1 honest probes measure every quantity;
``test_min_probes_2f_plus_1_keeps_the_bound_when_honest_probes_fall_silent`` covers silent honest
probes; a quantity that only a minority of the reporting probes measured is unknown
(``test_a_quantity_the_honest_probes_could_not_judge_is_not_the_liars_to_decide``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.scoring.aggregate import EndpointStats, ProbeSamples, endpoint_stats, per_probe
from monitor.scoring.policy import ChainTargets, Policy, Score, score_endpoint, weights

TARGETS = ChainTargets(latency_p95_ms=250.0, max_lag_blocks=2, block_time_s=12.0)
POLICY = Policy()
EPS = 1e-9
FAST = settings(max_examples=50, deadline=None)

# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    """How an endpoint really behaves."""

    availability: float
    p95_ms: float
    lag_blocks: int
    correctness: float
    age_s: float  # how old the probes' newest check is, before each probe's own delay
    stalled: bool


def truth_strategy(ages_s: Sequence[float]) -> st.SearchStrategy[Truth]:
    return st.builds(
        Truth,
        availability=st.one_of(st.floats(0.95, 1.0), st.floats(0.3, 1.0)),
        p95_ms=st.one_of(st.floats(5.0, 400.0), st.floats(1.0, 3_000.0)),
        lag_blocks=st.sampled_from([0, 0, 0, 1, 2, 5, 12]),
        correctness=st.sampled_from([1.0, 1.0, 1.0, 0.99, 0.9, 0.0]),
        age_s=st.sampled_from(ages_s),
        stalled=st.sampled_from([False] * 7 + [True]),
    )


# Probes report every few seconds: the newest check is at most stale_after_s (60 s) old, and the
# freshness factor is 1 whichever probe's age counts. Staleness: test_staleness_... below.
truths = truth_strategy([0.0, 0.0, 5.0, 30.0])
stale_truths = truth_strategy([0.0, 50.0, 70.0, 100.0, 130.0])


@st.composite
def honest(draw: st.DrawFn, t: Truth) -> ProbeSamples:
    """What an honest probe records of an endpoint that behaves like ``t``."""
    total = draw(st.integers(20, 60))
    # Its own failures and network: a few points of availability either way, at least one answer.
    a = t.availability + draw(st.floats(-0.03, 0.03))
    available = min(total, max(1, round(total * a)))
    # Its network path: up to 200 ms further away (another continent), and jitter.
    distance_ms = draw(st.sampled_from([0.0, 0.0, 30.0, 120.0, 200.0]))
    latencies = [
        t.p95_ms * draw(st.floats(0.3, 1.2)) + distance_ms
        for _ in range(min(available, draw(st.integers(1, 6))))
    ]
    lags = [
        max(0, t.lag_blocks + draw(st.sampled_from([-1, 0, 0, 0, 1])))
        for _ in range(draw(st.integers(1, 3)))
    ]
    # It judged some of its answers (a vote with a quorum), at least one.
    judged = draw(st.integers(1, available))
    incorrect = round(judged * (1.0 - t.correctness)) + draw(st.sampled_from([0, 0, 0, 1]))
    incorrect = min(judged, incorrect)
    latest = draw(st.sampled_from([None, None, None, None, "timeout"]))
    if t.stalled or draw(st.integers(0, 9)) == 0:  # a stalled node, or an honest disagreement
        latest = draw(st.sampled_from(["stalled", "syncing"]))
    return ProbeSamples(
        total=total,
        available=available,
        correct=judged - incorrect,
        incorrect=incorrect,
        latencies_ms=latencies,
        recent_lags_blocks=lags,
        errors={"timeout": total - available} if total > available else {},
        latest_error=latest,
        age_s=t.age_s + draw(st.floats(0.0, 20.0)),
    )


LIES: tuple[ProbeSamples, ...] = (
    ProbeSamples(0, 0, 0, 0),  # nothing at all
    ProbeSamples(60, 0, 0, 0, errors={"timeout": 60}, latest_error="timeout"),  # all down
    ProbeSamples(60, 60, 60, 0, [0.0], [0], age_s=0.0),  # all perfect
    ProbeSamples(60, 60, 0, 60, [50.0], [0], {"wrong_hash": 60}, "wrong_hash"),  # all incorrect
    ProbeSamples(60, 60, 60, 0, [1e7, 1e7], [0]),  # absurd latency
    ProbeSamples(60, 60, 60, 0, [50.0], [10**9], latest_error="stalled"),  # huge lag, stalled
    ProbeSamples(10_000, 10_000, 10_000, 0, [0.0], [0], latest_error="syncing", age_s=1e9),
)


@st.composite
def arbitrary_lie(draw: st.DrawFn) -> ProbeSamples:
    total = draw(st.integers(0, 10_000))
    judged = draw(st.integers(0, total))
    correct = draw(st.integers(0, judged))
    return ProbeSamples(
        total=total,
        available=draw(st.integers(0, total)),
        correct=correct,
        incorrect=judged - correct,
        latencies_ms=draw(st.lists(st.floats(0.0, 1e7), max_size=4)),
        recent_lags_blocks=draw(st.lists(st.integers(0, 10**9), max_size=3)),
        errors=draw(st.dictionaries(st.sampled_from(["timeout", "wrong_hash"]), st.integers(0, 9))),
        latest_error=draw(st.sampled_from([None, "stalled", "syncing", "timeout"])),
        age_s=draw(st.none() | st.floats(0.0, 1e9)),
    )


lie = st.sampled_from(LIES) | arbitrary_lie()


@dataclass(frozen=True)
class Fleet:
    f: int
    honest: list[list[ProbeSamples]]  # per endpoint, its f+1 honest probes
    liars: list[list[ProbeSamples]]  # per endpoint, its f lying probes


@st.composite
def fleets(draw: st.DrawFn, truth: st.SearchStrategy[Truth] = truths) -> Fleet:
    f = draw(st.integers(1, 3))
    honest_views, liar_views = [], []
    for _ in range(draw(st.integers(2, 4))):
        t = draw(truth)
        honest_views.append([draw(honest(t)) for _ in range(f + 1)])
        liar_views.append([draw(lie) for _ in range(f)])
    return Fleet(f, honest_views, liar_views)


# --- the bound --------------------------------------------------------------------------------

QUANTITIES = ("availability", "latency_p50_ms", "latency_p95_ms", "lag_blocks", "correctness")


def extreme(samples: Sequence[ProbeSamples], best: bool) -> EndpointStats:
    """The endpoint as its best (or worst) honest probe on every quantity at once."""
    stats = [per_probe(s) for s in samples]
    high, low = (max, min) if best else (min, max)

    def pick(name: str, how: Callable[[list[float]], float]) -> float | None:
        values = [v for v in (getattr(s, name) for s in stats) if v is not None]
        return how(values) if values else None

    kinds = [{s.latest_error} for s in samples]
    # Worst: every vote any honest probe cast, by all; best: only those all of them cast.
    votes = set.intersection(*kinds) if best else set.union(*kinds)
    return EndpointStats(
        availability=pick("availability", high),
        latency_p50_ms=pick("latency_p50_ms", low),
        latency_p95_ms=pick("latency_p95_ms", low),
        lag_blocks=pick("lag_blocks", low),
        correctness=pick("correctness", high),
        samples=sum(s.total for s in samples),
        probes=len(samples),
        latest_errors={kind: len(samples) for kind in votes if kind is not None},
        age_s=pick("age_s", low),
    )


def score_of(stats: EndpointStats, policy: Policy = POLICY) -> Score:
    return score_endpoint(stats, TARGETS, policy)


def value(score: Score) -> float:
    return score.score or 0.0


def weight_bounds(lo: list[float], hi: list[float]) -> list[tuple[float, float]]:
    """``[s_lo_i / (s_lo_i + sum_j s_hi_j), s_hi_i / (s_hi_i + sum_j s_lo_j)]`` per endpoint."""
    out = []
    for i in range(len(lo)):
        others_hi, others_lo = sum(hi) - hi[i], sum(lo) - lo[i]
        w_min = lo[i] / (lo[i] + others_hi) if lo[i] > 0 else 0.0
        w_max = hi[i] / (hi[i] + others_lo) if hi[i] > 0 else 0.0
        out.append((w_min, w_max))
    return out


@FAST
@given(fleets())
def test_each_statistic_stays_within_the_honest_range(fleet: Fleet) -> None:
    for honest_samples, lies in zip(fleet.honest, fleet.liars, strict=True):
        actual = endpoint_stats([*honest_samples, *lies])
        views = [per_probe(s) for s in honest_samples]
        for name in (*QUANTITIES, "age_s"):
            values = [getattr(v, name) for v in views]
            assert min(values) <= getattr(actual, name) <= max(values), name


@FAST
@given(fleets())
def test_f_lying_probes_of_2f_plus_1_keep_every_weight_within_the_honest_bound(
    fleet: Fleet,
) -> None:
    assert_within_bound(fleet, POLICY)


def assert_within_bound(fleet: Fleet, policy: Policy) -> None:
    actual = weights(
        {
            i: score_of(endpoint_stats([*h, *lies]), policy).score
            for i, (h, lies) in enumerate(zip(fleet.honest, fleet.liars, strict=True))
        }
    )
    lo = [value(score_of(extreme(h, best=False), policy)) for h in fleet.honest]
    hi = [value(score_of(extreme(h, best=True), policy)) for h in fleet.honest]
    for i, (w_min, w_max) in enumerate(weight_bounds(lo, hi)):
        assert lo[i] <= hi[i]
        assert w_min - EPS <= actual[i] <= w_max + EPS, (i, lo, hi, actual)


@FAST
@given(fleets(stale_truths))
def test_staleness_is_bounded_with_min_probes_f_plus_1(fleet: Fleet) -> None:
    """How old an endpoint's data is counts for its freshness factor and for ``stale_data``.
    With ``min_probes = f + 1`` (the guidance for 2f+1 probes), f liars reporting a fresh or an
    ancient newest check, or nothing, keep that age within the honest probes' range too."""
    assert_within_bound(fleet, Policy(min_probes=fleet.f + 1))


@FAST
@given(fleets())
def test_liars_neither_exclude_an_honest_endpoint_nor_include_a_broken_one(
    fleet: Fleet,
) -> None:
    for honest_samples, lies in zip(fleet.honest, fleet.liars, strict=True):
        actual = score_of(endpoint_stats([*honest_samples, *lies]))
        worst = score_of(extreme(honest_samples, best=False))
        best = score_of(extreme(honest_samples, best=True))
        if worst.status == "ok":  # healthy by every honest probe's account
            assert actual.status == "ok", (actual.reasons, worst.reasons)
        if best.status == "excluded":  # broken by every honest probe's account
            assert actual.status == "excluded", (actual.reasons, best.reasons)
            assert value(actual) == 0.0


@FAST
@given(st.data())
def test_when_honest_probes_agree_liars_move_nothing(data: st.DataObject) -> None:
    f = data.draw(st.integers(1, 3))
    honest_only, with_liars = {}, {}
    for i in range(data.draw(st.integers(2, 4))):
        view = data.draw(honest(data.draw(truths)))
        honest_only[i] = score_of(endpoint_stats([view] * (f + 1)))
        lies = [data.draw(lie) for _ in range(f)]
        with_liars[i] = score_of(endpoint_stats([view] * (f + 1) + lies))
    for i in honest_only:
        assert honest_only[i].status == with_liars[i].status
        assert honest_only[i].score == with_liars[i].score
    assert weights({i: s.score for i, s in honest_only.items()}) == weights(
        {i: s.score for i, s in with_liars.items()}
    )


# --- min_probes -------------------------------------------------------------------------------


@FAST
@given(st.data())
def test_min_probes_2f_plus_1_keeps_the_bound_when_honest_probes_fall_silent(
    data: st.DataObject,
) -> None:
    """3f+1 probes, f of them liars, min_probes = 2f+1: however many honest probes are silent
    (down, cut off), an endpoint that is scored at all has at least f+1 honest probes among the
    2f+1 or more it counts, so the median stays in their range; with at most f probes silent in
    all, it is not short of probes."""
    f = data.draw(st.integers(1, 3))
    policy = Policy(min_probes=2 * f + 1)
    t = data.draw(truths)
    silent_honest = data.draw(st.integers(0, 2 * f + 1))
    present = [data.draw(honest(t)) for _ in range(2 * f + 1 - silent_honest)]
    lies = [data.draw(lie) for _ in range(f)]
    score = score_endpoint(endpoint_stats([*present, *lies]), TARGETS, policy)
    silent = silent_honest + sum(1 for s in lies if s.total == 0)
    if silent <= f:
        assert "insufficient_probes" not in score.reasons
    if "insufficient_probes" in score.reasons:
        return
    views = [per_probe(s) for s in present]
    for name in QUANTITIES:
        values = [getattr(v, name) for v in views]
        assert min(values) <= getattr(score.stats, name) <= max(values), name


def test_with_min_probes_1_one_silent_honest_probe_hands_the_median_to_a_liar() -> None:
    """Why min_probes matters: 2f+1 = 3 probes, one honest probe cut off, the other honest one
    and the liar are two values whose median is their mean."""
    healthy = ProbeSamples(30, 30, 30, 0, [80.0], [0])
    liar = ProbeSamples(30, 0, 0, 0, errors={"timeout": 30})  # "down"
    cut_off = ProbeSamples(0, 0, 0, 0)
    stats = endpoint_stats([healthy, cut_off, liar])
    assert stats.availability == 0.5  # outside the honest range {1.0}
    assert stats.latency_p95_ms is None  # measured by 1 of the 2 reporting probes: unknown
    assert score_endpoint(stats, TARGETS, POLICY).score == pytest.approx(0.5**8)
    strict = score_endpoint(stats, TARGETS, Policy(min_probes=3))
    assert strict.score is None and "insufficient_probes" in strict.reasons


def test_a_quantity_the_honest_probes_could_not_judge_is_not_the_liars_to_decide() -> None:
    unjudged = ProbeSamples(30, 30, 0, 0, [80.0], [0])  # healthy; no quorum, nothing judged
    liar = ProbeSamples(30, 30, 0, 30, [80.0], [0])  # "all incorrect"
    stats = endpoint_stats([unjudged, unjudged, liar])
    assert stats.correctness is None  # measured by 1 of 3: no majority, unknown
    score = score_endpoint(stats, TARGETS, POLICY)
    assert score.status == "ok", score.reasons
    # Two honest probes that did judge outvote the liar as before.
    judged = ProbeSamples(30, 30, 30, 0, [80.0], [0])
    assert endpoint_stats([judged, judged, liar]).correctness == 1.0


def test_the_bound_is_tight_enough_to_mean_something() -> None:
    """Sanity of the model: when the honest probes disagree (50 ms near, 250 ms far) one liar
    of three moves the weight, and to exactly the ends of the interval."""
    near, far = ProbeSamples(30, 30, 30, 0, [50.0], [0]), ProbeSamples(30, 30, 30, 0, [250.0], [0])
    other = value(score_of(endpoint_stats([ProbeSamples(30, 30, 30, 0, [100.0], [0])] * 3)))

    def weight_with(liar: ProbeSamples) -> float:
        return weights({0: value(score_of(endpoint_stats([near, far, liar]))), 1: other})[0]

    lo = value(score_of(extreme([near, far], best=False)))
    hi = value(score_of(extreme([near, far], best=True)))
    (w_min, w_max), _ = weight_bounds([lo, other], [hi, other])
    assert weight_with(ProbeSamples(30, 30, 30, 0, [1e6], [0])) == pytest.approx(w_min)
    assert weight_with(ProbeSamples(30, 30, 30, 0, [0.0], [0])) == pytest.approx(w_max)
    assert w_max - w_min > 0.1
