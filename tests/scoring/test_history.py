"""No flapping: hysteresis and the recovery ramp (with_history), and what one bad round costs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitor.scoring.aggregate import ProbeSamples, endpoint_stats
from monitor.scoring.policy import (
    RECOVERING,
    UNAVAILABLE,
    ChainTargets,
    Policy,
    Previous,
    Score,
    score_endpoint,
    with_history,
)
from tests.scoring.test_policy import MAINNET, ep

POLICY = Policy()  # recovery_s = 60
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def step(score: Score, previous: Previous | None, at: datetime) -> tuple[Score, Previous]:
    out, since = with_history(score, previous, as_of=at, targets=MAINNET, policy=POLICY)
    return out, Previous(out.status, out.score, since)


def test_exclusion_acts_at_once_and_recovery_ramps_over_recovery_s() -> None:
    good, bad = (
        score_endpoint(ep(), MAINNET, POLICY),
        score_endpoint(ep(availability=0.3), MAINNET, POLICY),
    )
    s, prev = step(good, None, T0)
    assert (s.status, s.score) == ("ok", 1.0)
    s, prev = step(bad, prev, T0 + timedelta(seconds=15))
    assert (s.status, s.score, s.reasons[0]) == ("excluded", 0.0, UNAVAILABLE)
    excluded_since = prev.since
    s, prev = step(bad, prev, T0 + timedelta(seconds=30))
    assert prev.since == excluded_since  # still the same exclusion
    back = T0 + timedelta(seconds=45)
    s, prev = step(good, prev, back)
    assert (s.status, s.score, s.reasons) == ("recovering", 0.0, (RECOVERING,))
    s, prev = step(good, prev, back + timedelta(seconds=15))
    assert s.status == "recovering" and s.score == pytest.approx(0.25)
    s, prev = step(good, prev, back + timedelta(seconds=45))
    assert s.score == pytest.approx(0.75)
    s, prev = step(good, prev, back + timedelta(seconds=60))
    assert (s.status, s.score, s.reasons) == ("ok", 1.0, ())


def test_hysteresis_holds_an_endpoint_just_over_the_threshold() -> None:
    bad = score_endpoint(ep(availability=0.45), MAINNET, POLICY)  # threshold 0.5
    borderline = score_endpoint(ep(availability=0.55), MAINNET, POLICY)  # needs 0.6 to return
    _, prev = step(bad, None, T0)
    s, prev = step(borderline, prev, T0 + timedelta(seconds=15))
    assert (s.status, s.score, s.reasons[0]) == ("excluded", 0.0, RECOVERING)
    clear = score_endpoint(ep(availability=0.65), MAINNET, POLICY)
    s, _ = step(clear, prev, T0 + timedelta(seconds=30))
    assert s.status == "recovering"


def test_back_from_lack_of_data_needs_no_ramp() -> None:
    nothing = score_endpoint(ep(samples=0, probes=0, availability=None), MAINNET, POLICY)
    _, prev = step(nothing, None, T0)
    s, _ = step(score_endpoint(ep(), MAINNET, POLICY), prev, T0 + timedelta(seconds=15))
    assert (s.status, s.score) == ("ok", 1.0)


def test_one_bad_round_costs_a_bounded_share_and_excludes_nothing() -> None:
    """30 rounds in the window (5 min at 10 s), 3 probes. One round in which every probe timed
    out and saw a 10-block lag spike: availability 29/30 (factor 0.763), lag unmoved (median of
    the last 3); seen by one probe only: nothing moves at all."""
    targets = ChainTargets(latency_p95_ms=250.0, max_lag_blocks=2, block_time_s=12.0)

    def probe(bad_round: bool) -> ProbeSamples:
        return ProbeSamples(
            total=30,
            available=29 if bad_round else 30,
            correct=30,
            incorrect=0,
            latencies_ms=[20.0] * 29,
            recent_lags_blocks=[10, 0, 0] if bad_round else [0, 0, 0],
        )

    clean = score_endpoint(endpoint_stats([probe(False)] * 3), targets, POLICY)
    everyone = score_endpoint(endpoint_stats([probe(True)] * 3), targets, POLICY)
    one = score_endpoint(endpoint_stats([probe(True), probe(False), probe(False)]), targets, POLICY)
    assert everyone.status == "ok" and everyone.stats.lag_blocks == 0.0
    assert clean.score is not None and everyone.score is not None
    assert everyone.score / clean.score == pytest.approx((29 / 30) ** 8)  # -24 %, not to 0
    assert one.score == clean.score
