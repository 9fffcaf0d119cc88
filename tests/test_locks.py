"""Scheduled jobs across replicas (monitor.db.locks): one run at a time per job on PostgreSQL,
released after the run (also when it fails); no lock on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from monitor.db.locks import interval_start, job_key, job_lock, run_once
from monitor.db.session import make_engine


def test_keys_are_stable_and_distinct() -> None:
    assert job_key("scoring") == job_key("scoring")
    keys = {job_key(n) for n in ("scoring", "rollups", "retention", "attestations", "webhooks")}
    assert len(keys) == 5
    assert all(-(2**63) <= k < 2**63 for k in keys)


def test_interval_slots_are_counted_from_the_epoch() -> None:
    t = datetime(2026, 11, 30, 12, 0, 7, 500_000, tzinfo=UTC)
    assert interval_start(t, 15) == datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    assert interval_start(t, 1) == datetime(2026, 11, 30, 12, 0, 7, tzinfo=UTC)
    assert interval_start(t, 0.5) == t


def test_one_run_at_a_time_per_job(engine: Engine, database_url: str) -> None:
    other = make_engine(database_url)  # another replica: its own connections
    ran: list[str] = []
    try:
        with job_lock(engine, "scoring") as mine:
            assert mine
            if engine.dialect.name == "postgresql":
                assert not run_once(other, "scoring", lambda: ran.append("other"))
            else:  # one process: no lock
                assert run_once(other, "scoring", lambda: ran.append("other"))
            assert run_once(other, "rollups", lambda: ran.append("rollups"))  # another job
        assert run_once(other, "scoring", lambda: ran.append("after"))  # released
        assert not run_once(other, "scoring", lambda: ran.append("not due"), due=lambda: False)

        def fails() -> None:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            run_once(engine, "scoring", fails)
        assert run_once(other, "scoring", lambda: ran.append("after failure"))
    finally:
        other.dispose()
    expected = ["rollups", "after", "after failure"]
    if engine.dialect.name != "postgresql":
        expected.insert(0, "other")
    assert ran == expected
