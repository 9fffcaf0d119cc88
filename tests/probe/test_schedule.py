"""The pacing schedule (monitor.probe.schedule): pure functions, no clock, no network."""

from __future__ import annotations

import bisect
from collections import Counter

import pytest

from monitor.probe.schedule import Pacer, Schedule

SEED = bytes.fromhex("ab" * 20)
OTHER_SEED = bytes.fromhex("cd" * 20)


def test_offsets_are_stable_per_endpoint_and_probe() -> None:
    a, b = Schedule(10.0, SEED), Schedule(10.0, SEED)
    assert [a.offset_s(e) for e in range(100)] == [b.offset_s(e) for e in range(100)]
    assert all(0 <= a.offset_s(e) < 10.0 for e in range(1000))
    # Another probe visits the same endpoints at other moments (not in unison)...
    other = Schedule(10.0, OTHER_SEED)
    apart = sum(abs(a.offset_s(e) - other.offset_s(e)) > 0.1 for e in range(1000))
    assert apart > 950
    # ...and closes its rounds at another phase.
    assert a.phase_s != other.phase_s


def test_offsets_are_spread_evenly_at_ten_thousand_endpoints() -> None:
    schedule = Schedule(10.0, SEED)
    bins = Counter(int(schedule.offset_s(e) / 0.1) for e in range(10_000))  # 100 bins of 0.1 s
    assert len(bins) == 100
    mean = 10_000 / 100
    assert max(bins.values()) <= 1.5 * mean
    assert min(bins.values()) >= 0.5 * mean


@pytest.mark.parametrize("latency_s", [0.05, 0.3])
def test_calls_in_flight_stay_bounded(latency_s: float) -> None:
    """With every call taking ``latency_s``, the most in flight at any moment stays near the
    average N * latency / interval: no burst."""
    n, interval = 10_000, 10.0
    starts = sorted(Schedule(interval, SEED).offset_s(e) for e in range(n))
    most = max(bisect.bisect_left(starts, t + latency_s) - i for i, t in enumerate(starts))
    average = n * latency_s / interval
    assert most <= 1.5 * average + 10


def test_every_endpoint_once_per_round_inside_its_window() -> None:
    schedule = Schedule(10.0, SEED)
    endpoints = range(1, 501)
    for round_ in (0, 1, 177_000_000):
        slots = schedule.slots(round_, endpoints)
        assert sorted(e for _, e in slots) == list(endpoints)
        start = schedule.start(round_)
        assert all(start <= t < start + 10.0 for t, _ in slots)
        assert all(schedule.round_of(t) == round_ for t, _ in slots)
        assert [t for t, _ in slots] == sorted(t for t, _ in slots)
    # Each endpoint exactly one interval after its previous visit.
    for e in endpoints:
        assert schedule.slot(8, e) - schedule.slot(7, e) == pytest.approx(10.0)


def drive(pacer: Pacer, times: list[float]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    visits: list[tuple[int, int]] = []
    missed: list[tuple[int, int]] = []
    for now in times:
        v, m = pacer.due(now)
        visits += v
        missed += m
    return visits, missed


def test_the_pacer_hands_each_visit_out_once_at_its_slot() -> None:
    schedule = Schedule(1.0, SEED)
    endpoints = frozenset(range(50))
    pacer = Pacer(schedule, endpoints)
    t0 = schedule.start(1000) + 0.5  # started mid-round: the first round is the next one
    times = [t0 + i * 0.01 for i in range(400)]  # 4 s in 10 ms steps
    visits, missed = drive(pacer, times)
    assert missed == []
    per_round = Counter(r for r, _ in visits)
    # 1000 was under way at the start: not begun; 1004 is not over at the end.
    assert [per_round[r] for r in (1000, 1001, 1002, 1003)] == [0, 50, 50, 50]
    assert 0 < per_round[1004] < 50
    assert len(set(visits)) == len(visits)


def test_a_late_round_never_stacks_on_the_next() -> None:
    """A probe stalled past its round's end skips what it missed: the next call hands out only
    the visits of the moment, never the whole missed round at once."""
    schedule = Schedule(1.0, SEED)
    endpoints = frozenset(range(200))
    pacer = Pacer(schedule, endpoints, max_late_s=0.05)
    start = schedule.start(500)
    pacer.start(start - 0.5)
    visits, missed = drive(pacer, [start + 0.1])
    assert visits  # round 500's first slots
    # Stalled for 2.5 s: into round 502.
    visits, missed = pacer.due(start + 2.6)
    assert all(r == 502 for r, _ in visits)
    assert len(visits) <= 20  # the last 50 ms of slots at most (10 expected), not 200 or 400
    assert {r for r, _ in missed} == {500, 501, 502}
    assert sum(1 for r, _ in missed if r == 501) == 200
    # Nothing handed out twice; nothing of a closed round handed out later.
    later, _ = pacer.due(start + 2.7)
    assert all(r == 502 for r, _ in later)


def test_endpoints_added_and_removed_between_calls() -> None:
    schedule = Schedule(1.0, SEED)
    pacer = Pacer(schedule, frozenset(range(10)), max_late_s=10.0)
    start = schedule.start(20)
    pacer.start(start - 0.1)
    first, _ = pacer.due(start + 0.5)
    newcomers = frozenset(range(10, 20))
    missed = pacer.set_endpoints(frozenset(range(5)) | newcomers, start + 0.5)
    # A newcomer whose slot in this round is past is missed this round, not visited late.
    assert {e for _, e in missed} == {e for e in newcomers if schedule.offset_s(e) < 0.5}
    rest, _ = pacer.due(start + 0.999)
    handed = {e for _, e in first + rest}
    assert {e for _, e in rest} <= set(range(5)) | newcomers
    assert not ({e for _, e in rest} & {e for _, e in first})
    assert {e for e in newcomers if schedule.offset_s(e) >= 0.5} <= handed
    nxt, _ = pacer.due(start + 1.999)  # the next round (late is fine here: max_late_s)
    assert sorted(e for _, e in nxt) == sorted(set(range(5)) | newcomers)
