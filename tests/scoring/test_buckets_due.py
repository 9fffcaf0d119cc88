"""The scheduled job's evaluation times (monitor.scoring.job.buckets_due): on a fixed grid, after
runs made off it too, never behind a later run, and with late data found however it was run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from monitor.db.models import ScoringRun
from monitor.db.session import session_scope
from monitor.scoring.job import buckets_due
from tests.conftest import Network

NOW = datetime(2026, 11, 30, 12, 0, 37, tzinfo=UTC)


def _run(engine: Engine, network: Network, as_of: datetime, through: int | None) -> None:
    with session_scope(engine) as session:
        session.add(
            ScoringRun(
                chain_id=network.chain_id,
                window_s=300,
                as_of=as_of,
                duration_ms=1.0,
                batches_through=through,
            )
        )


def _due(engine: Engine, now: datetime = NOW) -> list[datetime]:
    with session_scope(engine) as session:
        buckets, _ = buckets_due(session, now=now, interval_s=15, settle_s=10, replay_s=60)
    return buckets


def test_buckets_are_on_the_grid_whatever_ran_before(engine: Engine, network: Network) -> None:
    at = datetime(2026, 11, 30, 12, 0, 15, tzinfo=UTC)  # 12:00:37 - 10 s, on the 15 s grid
    assert _due(engine) == [at]  # nothing scored yet: the current bucket only
    # a run made off the grid (an older version scored "now"): the next ones are on it
    _run(engine, network, datetime(2026, 11, 30, 11, 59, 33, 500_000, tzinfo=UTC), 0)
    assert _due(engine) == [at - timedelta(seconds=s) for s in (30, 15, 0)]
    _run(engine, network, at, 0)
    assert _due(engine) == []  # scored already, nothing late
    # a run later than the current bucket (the settle time was raised) does not stop the job
    _run(engine, network, at + timedelta(minutes=5), 0)
    assert _due(engine, NOW + timedelta(seconds=15)) == [at + timedelta(seconds=15)]


def test_missed_buckets_are_caught_up_as_far_as_the_replay_reaches(
    engine: Engine, network: Network
) -> None:
    _run(engine, network, datetime(2026, 11, 30, 11, 0, tzinfo=UTC), 0)  # down for an hour
    due = _due(engine)
    assert due[-1] == datetime(2026, 11, 30, 12, 0, 15, tzinfo=UTC)
    assert due[0] == due[-1] - timedelta(seconds=60)  # replay_s
    assert all((b - due[0]).total_seconds() % 15 == 0 for b in due)
