"""Minutes and periods judged by hand-computed fixtures (docs/sla.md)."""

from __future__ import annotations

import pytest

from monitor.sla.judge import PPM, ProbeMinute, SlaTargets, evaluate, judge_minute

TARGETS = SlaTargets(
    availability_ppm=990_000, latency_p95_ms=250, max_lag_blocks=2, correctness_ppm=999_000
)


def pm(
    answered: int = 6, failed: int = 0, lag: int = 0, ms: int = 50, wrong: int = 0
) -> ProbeMinute:
    """A probe-minute: ``answered`` answers at ``lag`` blocks and ``ms`` ms, ``failed`` timeouts,
    ``wrong`` of the answers proven incorrect (the others correct)."""
    p = ProbeMinute()
    for i in range(answered):
        p.add(ok=True, correct=i >= wrong, lag_blocks=lag, latency_us=ms * 1000)
    for _ in range(failed):
        p.add(ok=False, correct=None, lag_blocks=None, latency_us=None)
    return p


def test_a_probe_flags_what_more_than_half_of_its_checks_show() -> None:
    assert pm().flags(TARGETS) == ()
    assert pm(answered=3, failed=3).flags(TARGETS) == ()  # half answered: still available
    assert pm(answered=2, failed=4).flags(TARGETS) == ("unavailable",)
    assert pm(lag=2).flags(TARGETS) == ()  # at the target: fresh
    assert pm(lag=3).flags(TARGETS) == ("lagging",)
    assert pm(wrong=1).flags(TARGETS) == ("incorrect",)  # one proven-wrong answer is enough


def test_a_minute_needs_min_probes_and_a_majority_to_raise_a_flag() -> None:
    assert judge_minute([pm()], TARGETS).state == "insufficient"  # one probe: no quorum
    assert judge_minute([pm(), ProbeMinute()], TARGETS).state == "insufficient"  # empty probe
    assert judge_minute([pm(), pm()], TARGETS).state == "up"
    # one liar of three cannot take a minute down...
    liar = pm(answered=0, failed=6)
    assert judge_minute([pm(), pm(), liar], TARGETS).state == "up"
    # ...nor keep a broken one up
    down = judge_minute([liar, liar, pm()], TARGETS)
    assert (down.state, down.reasons, down.probes, down.samples) == (
        "down",
        ("unavailable",),
        3,
        18,
    )
    # mixed complaints with no majority for any: up
    assert judge_minute([liar, pm(lag=9), pm()], TARGETS).state == "up"
    # two of two: both must agree for a flag (more than half)
    assert judge_minute([pm(lag=9), pm()], TARGETS).state == "up"
    assert judge_minute([pm(lag=9), pm(lag=9, wrong=1)], TARGETS).reasons == ("lagging",)


def test_a_period_by_hand() -> None:
    """10 minutes, 3 probes: 6 up, 1 down unavailable, 1 down lagging, 1 with one probe only
    (insufficient), 1 with no data at all (insufficient)."""
    healthy = {"a": pm(), "b": pm(), "c": pm(ms=120)}
    minutes = {m: dict(healthy) for m in range(6)}
    minutes[6] = {"a": pm(answered=0, failed=6), "b": pm(answered=1, failed=5), "c": pm()}
    minutes[7] = {"a": pm(lag=5), "b": pm(lag=5), "c": pm(lag=5)}
    minutes[8] = {"a": pm()}  # quorum-less: excluded from the denominator, counted apart
    figures, verdicts = evaluate(minutes, minutes=10, targets=TARGETS)
    assert verdicts[6].reasons == ("unavailable",) and verdicts[8].state == "insufficient"
    assert (figures.up, figures.down, figures.insufficient) == (6, 2, 2)
    assert figures.down_by_reason == {"unavailable": 1, "lagging": 1, "incorrect": 0}
    assert figures.availability_ppm == 6 * PPM // 8 == 750_000
    assert figures.lag_compliance_ppm == 7 * PPM // 8
    assert figures.correctness_ppm == PPM  # every judged answer correct
    # per probe p95 then the lower median: a and b at 50 ms, c at 120 -> 50
    assert (figures.latency_p50_ms, figures.latency_p95_ms) == (50, 50)
    assert figures.probes == 3
    assert figures.verdicts == {
        "availability": "breached",
        "latency_p95": "met",
        "lag": "breached",
        "correctness": "met",
    }


def test_too_little_coverage_gives_no_verdict() -> None:
    minutes = {m: {"a": pm(), "b": pm()} for m in range(4)}  # 4 of 10 minutes judged
    figures, _ = evaluate(minutes, minutes=10, targets=TARGETS)
    assert figures.availability_ppm == PPM
    assert set(figures.verdicts.values()) == {"insufficient_data"}
    figures, _ = evaluate(minutes, minutes=8, targets=TARGETS)  # half: enough
    assert figures.verdicts["availability"] == "met"


def test_correctness_is_the_lower_median_over_probes() -> None:
    minutes = {0: {"a": pm(wrong=6), "b": pm(), "c": pm()}}  # a liar calls everything wrong
    figures, verdicts = evaluate(minutes, minutes=1, targets=TARGETS)
    assert figures.correctness_ppm == PPM and verdicts[0].state == "up"
    minutes = {0: {"a": pm(wrong=3), "b": pm(wrong=3), "c": pm()}}
    figures, verdicts = evaluate(minutes, minutes=1, targets=TARGETS)
    assert figures.correctness_ppm == PPM // 2 and verdicts[0].reasons == ("incorrect",)


@pytest.mark.parametrize("ms,expected", [(250, "met"), (251, "breached")])
def test_latency_verdict_on_the_bucket_bound(ms: int, expected: str) -> None:
    minutes = {0: {"a": pm(ms=ms), "b": pm(ms=ms)}}
    figures, _ = evaluate(minutes, minutes=1, targets=TARGETS)
    assert figures.verdicts["latency_p95"] == expected
