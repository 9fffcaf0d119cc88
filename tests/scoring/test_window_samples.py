"""The scoring job reads its window aggregated in SQL (counts, newest check, newest lags, the
latencies at the ranks the percentiles read): the same statistics, to the bit, as from every row
read in Python (the previous way, kept here as the reference), on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, case, func, insert, select
from sqlalchemy.orm import Session

from monitor.db.models import Batch, Chain, Endpoint, Operator, Probe, Result
from monitor.db.session import session_scope
from monitor.scoring.aggregate import (
    ProbeSamples,
    per_probe,
    percentile,
    percentile_of_ranks,
    percentile_ranks,
)
from monitor.scoring.service import _window_samples

END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)


def reference_samples(
    session: Session, *, chain_id: int, start: datetime, end: datetime, recent: int
) -> dict[int, dict[int, ProbeSamples]]:
    """Every row of the window read in Python, newest first (ties by id)."""
    in_window = and_(
        Result.chain_id == chain_id, Result.observed_at >= start, Result.observed_at < end
    )
    counts = session.execute(
        select(
            Result.endpoint_id,
            Result.probe_id,
            func.count(),
            func.sum(case((Result.ok, 1), else_=0)),
            func.sum(case((Result.correct.is_(True), 1), else_=0)),
            func.sum(case((Result.correct.is_(False), 1), else_=0)),
        )
        .where(in_window)
        .group_by(Result.endpoint_id, Result.probe_id)
    ).all()
    errors: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    latencies: dict[tuple[int, int], list[float]] = defaultdict(list)
    lags: dict[tuple[int, int], list[int]] = defaultdict(list)
    newest: dict[tuple[int, int], tuple[datetime, str | None]] = {}
    for endpoint_id, probe_id, observed_at, ok, error, latency_ms, lag_blocks in session.execute(
        select(
            Result.endpoint_id,
            Result.probe_id,
            Result.observed_at,
            Result.ok,
            Result.error,
            Result.latency_ms,
            Result.lag_blocks,
        )
        .where(in_window)
        .order_by(Result.observed_at.desc(), Result.id.desc())
    ):
        key = (endpoint_id, probe_id)
        newest.setdefault(key, (observed_at, error))
        if error is not None:
            errors[key][error] = errors[key].get(error, 0) + 1
        if not ok:
            continue
        if latency_ms is not None:
            latencies[key].append(latency_ms)
        if lag_blocks is not None and len(lags[key]) < recent:
            lags[key].append(lag_blocks)
    samples: dict[int, dict[int, ProbeSamples]] = defaultdict(dict)
    for endpoint_id, probe_id, total, ok, correct, incorrect in counts:
        key = (endpoint_id, probe_id)
        observed_at, latest_error = newest[key]
        samples[endpoint_id][probe_id] = ProbeSamples(
            total=total,
            available=ok or 0,
            correct=correct or 0,
            incorrect=incorrect or 0,
            latencies_ms=latencies.get(key, ()),
            recent_lags_blocks=lags.get(key, ()),
            errors=errors.get(key, {}),
            latest_error=latest_error,
            age_s=max(0.0, (end - observed_at).total_seconds()),
        )
    return samples


def seed(engine: Engine, rng: random.Random) -> None:
    with session_scope(engine) as session:
        session.add(
            Chain(
                chain_id=7,
                name="c",
                block_time_s=2,
                confirmations=3,
                sla_availability=0.99,
                sla_latency_p95_ms=500,
                sla_max_lag_blocks=3,
            )
        )
        session.add(Operator(id="op", name="Op"))
        session.flush()
        for i in range(6):
            session.add(Endpoint(operator_id="op", chain_id=7, url=f"http://127.0.0.1/{i}"))
        for i in range(4):
            session.add(Probe(address=f"0x{i:040x}", name=f"p{i}", region="r"))
        session.flush()
        endpoints = session.scalars(select(Endpoint.id)).all()
        probes = session.scalars(select(Probe.id)).all()
        batch_ids = []
        for n, probe_id in enumerate(probes):
            batch = Batch(
                probe_id=probe_id,
                batch_id=f"b{n}",
                created_at=END,
                results_hash="0x" + "00" * 32,
                signature="0x" + "00" * 65,
                result_count=0,
                body="{}",
                body_hash=f"0x{n:064x}",
            )
            session.add(batch)
            session.flush()
            batch_ids.append(batch.id)
        rows = []
        for endpoint_id in endpoints:
            for probe_id, batch_id in zip(probes, batch_ids, strict=True):
                # some pairs with few checks (0, 1, 2 latencies), some many; ties on purpose:
                # latencies and times from small sets, times also outside the window
                checks = rng.choice([1, 2, 3, rng.randint(4, 60)])
                for _ in range(checks):
                    ok = rng.random() < 0.8
                    seconds = rng.choice([-1, 0, 1, 59, 60, 150, 299, 300, 301]) + rng.choice(
                        [0.0, 0.25, 0.5]
                    )
                    rows.append(
                        {
                            "batch_id": batch_id,
                            "probe_id": probe_id,
                            "endpoint_id": endpoint_id,
                            "operator_id": "op",
                            "chain_id": 7,
                            "observed_at": END - timedelta(seconds=seconds),
                            "ok": ok,
                            "error": None
                            if ok and rng.random() < 0.8
                            else rng.choice(["timeout", "syncing", "wrong_hash"])
                            if ok
                            else rng.choice(["timeout", "transport"]),
                            "latency_ms": rng.choice(
                                [None, 0.0, 12.5, 20.0, 33.3, 48.213, 100.0, 1e4 / 3]
                            )
                            if ok
                            else None,
                            "lag_blocks": rng.choice([None, 0, 0, 1, 2, 7]) if ok else None,
                            "correct": rng.choice([None, True, True, False]) if ok else None,
                        }
                    )
        session.execute(insert(Result), rows)


def test_sql_aggregation_gives_the_same_statistics_as_every_row(engine: Engine) -> None:
    rng = random.Random(20261130)
    seed(engine, rng)
    with session_scope(engine) as session:
        for recent in (1, 3, 5):
            args = {"chain_id": 7, "start": END - WINDOW, "end": END, "recent": recent}
            new = _window_samples(session, **args)  # type: ignore[arg-type]
            old = reference_samples(session, **args)  # type: ignore[arg-type]
            assert new.keys() == old.keys()
            pairs = 0
            for endpoint_id, by_probe in old.items():
                assert new[endpoint_id].keys() == by_probe.keys()
                for probe_id, reference in by_probe.items():
                    mine = new[endpoint_id][probe_id]
                    assert per_probe(mine) == per_probe(reference), (endpoint_id, probe_id)
                    assert dict(mine.errors) == dict(reference.errors)
                    assert mine.recent_lags_blocks == reference.recent_lags_blocks
                    pairs += 1
            assert pairs > 10


def test_percentile_of_ranks_reads_only_its_ranks() -> None:
    rng = random.Random(7)
    for n in range(1, 60):
        xs = sorted(rng.choice([0.0, 1.5, 2.0, 1e-9, 123.456, 1e4 / 3]) for _ in range(n))
        for q in (0, 25, 50, 95, 99, 100):
            ranks = percentile_ranks(n, q)
            value_at = {r: xs[r] for r in ranks}
            assert percentile_of_ranks(n, q, value_at.__getitem__) == percentile(xs, q)
        assert percentile_ranks(n, 50)[0] == (n - 1) // 2
        assert percentile_ranks(n, 95)[0] == (95 * (n - 1)) // 100
