"""Rollups equal the raw aggregate, late batches correct the minutes they observed, and every
batch is counted exactly once; on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from monitor.db.models import Batch
from monitor.db.session import session_scope
from monitor.sla.models import ProbeMinuteRow, SubjectHour, SubjectMinute
from monitor.sla.rollup import roll_up
from monitor.sla.service import period_figures
from monitor.sla.targets import subject_targets
from tests.sla.support import CHAIN, T0, Fleet, make_fleet, post, raw_figures, result

MINUTES = 100  # 10:37 to 12:17: two hour boundaries, partial hours at both ends


def rollup_all(engine: Engine) -> int:
    total = 0
    for _ in range(100):
        with session_scope(engine) as session:
            n = roll_up(session, limit=40).batches  # small runs: many transactions
        total += n
        if n == 0:
            return total
    raise AssertionError("roll_up did not catch up in 100 runs")


def rolled_figures(engine: Engine, operator: str, start: datetime, end: datetime):  # type: ignore[no-untyped-def]
    from monitor.db.models import Chain, Operator

    with session_scope(engine) as session:
        targets = subject_targets(session.get(Chain, CHAIN), session.get(Operator, operator))  # type: ignore[arg-type]
        figures, _ = period_figures(
            session, chain_id=CHAIN, operator_id=operator, start=start, end=end, targets=targets
        )
    return figures


def noisy_history(engine: Engine, fleet: Fleet, seed: int) -> None:
    """Every probe, every minute, two checks of each operator with random faults; some minutes
    a probe is silent (quorum-less minutes), some answers late in their minute."""
    rng = random.Random(seed)
    for minute in range(MINUTES):
        at = T0 + timedelta(minutes=minute)
        for account in fleet.probes:
            if rng.random() < 0.15:
                continue  # this probe missed the minute
            results = []
            for operator in ("alpha", "bravo"):
                for check in range(2):
                    results.append(
                        result(
                            fleet,
                            operator,
                            at + timedelta(seconds=10 + 30 * check + rng.random() * 19),
                            ok=rng.random() > (0.05 if operator == "alpha" else 0.4),
                            lag=rng.choice([0, 0, 1, 3]) if operator == "bravo" else 0,
                            ms=rng.choice([20.0, 45.5, 120.25, 260.0, 900.0]),
                            correct=rng.random() > 0.02,
                        )
                    )
            post(engine, account, results, created=at + timedelta(seconds=59))


PERIODS = [
    (T0, T0 + timedelta(minutes=MINUTES)),  # all, two partial hours and one whole
    (T0 + timedelta(minutes=23), T0 + timedelta(minutes=83)),  # 11:00 to 12:00 exactly
    (T0 + timedelta(minutes=5), T0 + timedelta(minutes=17)),  # inside one hour
    (T0 + timedelta(minutes=20), T0 + timedelta(minutes=90)),  # 10:57 to 12:07
    (T0 - timedelta(hours=2), T0 + timedelta(hours=3)),  # wider than the data
]


def test_rollups_equal_the_raw_aggregate(engine: Engine) -> None:
    fleet = make_fleet(engine)
    noisy_history(engine, fleet, seed=7)
    assert rollup_all(engine) > 200
    for operator in ("alpha", "bravo"):
        for start, end in PERIODS:
            raw, _ = raw_figures(engine, operator, start, end)
            assert rolled_figures(engine, operator, start, end) == raw, (operator, start, end)
    # the data has every kind of minute
    with session_scope(engine) as session:
        states = dict(
            session.execute(
                select(SubjectMinute.state, func.count()).group_by(SubjectMinute.state)
            ).all()
        )
    assert set(states) == {"up", "down", "insufficient"}, states


def test_a_late_batch_corrects_the_minutes_it_observed(engine: Engine) -> None:
    fleet = make_fleet(engine)
    a, b, _ = fleet.probes
    minute = T0 + timedelta(minutes=3)
    post(
        engine,
        a,
        [result(fleet, "alpha", minute + timedelta(seconds=5))],
        created=minute + timedelta(seconds=59),
    )
    rollup_all(engine)
    with session_scope(engine) as session:
        row = session.get(SubjectMinute, (CHAIN, "alpha", minute))
        assert row is not None and row.state == "insufficient"  # one probe: no quorum
    # probe b was cut off; its outbox delivers 40 minutes later
    late = [result(fleet, "alpha", minute + timedelta(seconds=20), ok=False)]
    post(engine, b, late, created=minute + timedelta(minutes=40))
    assert rollup_all(engine) == 1
    with session_scope(engine) as session:
        row = session.get(SubjectMinute, (CHAIN, "alpha", minute))
        assert row is not None and (row.state, row.probes) == ("up", 2)  # 1 of 2 down: no majority
        hour = session.get(SubjectHour, (CHAIN, "alpha", minute.replace(minute=0)))
        assert hour is not None and (hour.up, hour.down) == (1, 0)
    raw, _ = raw_figures(engine, "alpha", T0, T0 + timedelta(hours=1))
    assert rolled_figures(engine, "alpha", T0, T0 + timedelta(hours=1)) == raw


def test_each_batch_is_counted_once(engine: Engine) -> None:
    fleet = make_fleet(engine)
    body = post(engine, fleet.probes[0], [result(fleet, "alpha", T0)], created=T0)
    assert rollup_all(engine) == 1
    assert rollup_all(engine) == 0  # nothing left: a second run adds nothing
    from monitor.ingest.service import ingest_batch

    with session_scope(engine) as session:  # the probe resends it (lost acknowledgement)
        ack = ingest_batch(
            session,
            body=body.encode(),
            now=T0 + timedelta(minutes=5),
            clock_skew=timedelta(seconds=60),
            max_results=100,
        )
    assert ack.duplicate
    assert rollup_all(engine) == 0
    with session_scope(engine) as session:
        samples = session.scalar(select(func.sum(ProbeMinuteRow.samples)))
        assert samples == 1
        assert session.scalar(select(func.count()).where(Batch.rolled_up.is_(False))) == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_rolling_up_in_any_order_of_arrival_gives_the_same_rollups(
    engine: Engine, seed: int
) -> None:
    """Batches of one hour rolled up one at a time in a shuffled arrival order: the same
    minutes and hours as the raw aggregate."""
    fleet = make_fleet(engine)
    rng = random.Random(seed)
    batches = [
        (account, minute)
        for minute in range(0, 30, 3)
        for account in fleet.probes
        if rng.random() > 0.2
    ]
    rng.shuffle(batches)
    for account, minute in batches:
        at = T0 + timedelta(minutes=minute)
        post(
            engine,
            account,
            [result(fleet, "bravo", at + timedelta(seconds=30), lag=rng.choice([0, 5]))],
            created=T0 + timedelta(minutes=45),
        )
        with session_scope(engine) as session:
            roll_up(session, limit=1)
    raw, states = raw_figures(engine, "bravo", T0, T0 + timedelta(minutes=30))
    assert rolled_figures(engine, "bravo", T0, T0 + timedelta(minutes=30)) == raw
    with session_scope(engine) as session:
        rolled = {
            int((r.minute - T0).total_seconds()) // 60: r.state
            for r in session.scalars(
                select(SubjectMinute).where(SubjectMinute.operator_id == "bravo")
            )
        }
    assert rolled == states
