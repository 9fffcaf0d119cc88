"""Deterministic scoring (issue 8): two collectors fed the same signed batches, in different
orders and at different times, one of them down for a while, end with the same runs at the same
evaluation times: statuses, scores and weights to the last digit, hysteresis included. One of
the two is PostgreSQL when the fixture's database is, the other SQLite."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from monitor.db.models import Score, ScoringRun
from monitor.db.session import make_engine, session_scope
from monitor.ingest.schemas import ProbeResult
from monitor.ingest.service import store_batch
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.scoring.job import scheduled_scoring
from monitor.settings import Settings
from monitor.signing.eip712 import sign_batch
from tests.conftest import Network, make_settings
from tests.support.results import answered
from tests.test_api import endpoint_ids

START = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
ROUND_S = 5
ROUNDS = 32  # 160 s of checks
TICK_S = 5  # scoring interval


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _result(
    endpoint_id: int, operator_id: str, chain_id: int, at: datetime, rnd: int, rng: random.Random
) -> ProbeResult:
    """alpha healthy; bravo lags 20 blocks in rounds 8-15 (excluded, then held by hysteresis and
    ramped back); charlie serves a wrong hash in rounds 4-6; delta's latency wanders."""
    head = 10_000 + rnd * ROUND_S
    lag = 20 if operator_id == "bravo" and 8 <= rnd <= 15 else rng.choice((0, 0, 0, 1))
    wrong = operator_id == "charlie" and 4 <= rnd <= 6
    latency_us = rng.randint(20_000, 60_000) + (
        rng.randint(0, 900_000) if operator_id == "delta" else 0
    )
    known = lag <= 3  # a node below the check height is not judged
    return answered(
        endpoint_id=endpoint_id,
        operator_id=operator_id,
        chain_id=chain_id,
        observed_at_ms=_ms(at),
        error="wrong_hash" if wrong else None,
        latency_us=latency_us,
        head=head,
        lag=lag,
        block_hash=("0x" + ("ee" if wrong else "aa") * 32) if known else None,
        correct=(not wrong) if known else None,
    )


@dataclass(frozen=True)
class Delivery:
    arrives: datetime
    body: bytes


def _batches(engine: Engine, network: Network) -> list[Delivery]:
    """One signed batch per probe and round, arriving a second after the round."""
    ids = endpoint_ids(engine)
    rng = random.Random(8)
    out = []
    for rnd in range(ROUNDS):
        at = START + timedelta(seconds=rnd * ROUND_S)
        for probe in network.probes:
            results = [
                _result(ids[op], op, network.chain_id, at + timedelta(milliseconds=i), rnd, rng)
                for i, op in enumerate(sorted(ids))
            ]
            batch = sign_batch(probe, results, created_at_ms=_ms(at) + 500)
            out.append(Delivery(at + timedelta(seconds=1), batch.model_dump_json().encode()))
    return out


def _run(
    engine: Engine, settings: Settings, deliveries: list[Delivery], ticks: list[datetime]
) -> None:
    """Store each batch when it arrives and tick the scheduled job at ``ticks``, in time order."""
    events = sorted(
        [(d.arrives, 0, i) for i, d in enumerate(deliveries)]
        + [(t, 1, i) for i, t in enumerate(ticks)]
    )
    for at, kind, i in events:
        if kind == 0:
            with session_scope(engine) as session:
                store_batch(
                    session,
                    body=deliveries[i].body,
                    now=at,
                    clock_skew=timedelta(seconds=60),
                    max_results=1000,
                )
        else:
            assert scheduled_scoring(engine, settings, now=at) is not None


def _runs(engine: Engine) -> dict[tuple[int, int, datetime], list[tuple[object, ...]]]:
    """Every stored score, by run. Not ``status_since``: how long a status has held goes back
    to the collector's first run (docs/decentralization.md)."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(ScoringRun.chain_id, ScoringRun.window_s, ScoringRun.as_of, Score)
            .join(Score, Score.run_id == ScoringRun.id)
            .order_by(ScoringRun.as_of, Score.endpoint_id)
        ).all()
    out: dict[tuple[int, int, datetime], list[tuple[object, ...]]] = {}
    for chain_id, window_s, as_of, s in rows:
        out.setdefault((chain_id, window_s, as_of), []).append(
            (
                s.endpoint_id,
                s.status,
                s.score,
                s.weight,
                s.weight_bps,
                s.reasons,
                s.availability,
                s.latency_p50_ms,
                s.latency_p95_ms,
                s.lag_blocks,
                s.correctness,
                s.samples,
                s.factors,
            )
        )
    return out


@pytest.fixture
def second_engine(sqlite_template: Path, tmp_path: Path, network: Network) -> Iterator[Engine]:
    path = tmp_path / "second.db"
    shutil.copy(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    with session_scope(engine) as session:
        apply_registry(session, registry=load_registry(network.registry_file))
    yield engine
    engine.dispose()


def test_same_batches_any_order_any_time_give_the_same_runs(
    engine: Engine, second_engine: Engine, network: Network, database_url: str
) -> None:
    assert endpoint_ids(engine) == endpoint_ids(second_engine)  # ids come from the registry
    settings = make_settings(
        database_url, scoring_interval_s=TICK_S, scoring_settle_s=2.0, scoring_replay_s=600.0
    )
    deliveries = _batches(engine, network)
    end = START + timedelta(seconds=ROUNDS * ROUND_S + 60)
    ticks = [
        START + timedelta(seconds=s) for s in range(0, int((end - START).total_seconds()), TICK_S)
    ]
    _run(engine, settings, deliveries, ticks)

    # The second: the batches shuffled, a third of them 10-40 s late (an outbox catching up,
    # a peer's sync); ticks offset by 2.5 s; the job down for 40 s in the middle.
    rng = random.Random(1)
    late = [
        Delivery(d.arrives + timedelta(seconds=rng.choice((0, 0, 10, 25, 40))), d.body)
        for d in deliveries
    ]
    rng.shuffle(late)
    down = (START + timedelta(seconds=80), START + timedelta(seconds=120))
    offset_ticks = [
        t + timedelta(seconds=2.5)
        for t in ticks
        if not down[0] <= t + timedelta(seconds=2.5) < down[1]
    ]
    offset_ticks.append(end)
    _run(second_engine, settings, late, offset_ticks)

    first, second = _runs(engine), _runs(second_engine)
    common = sorted(set(first) & set(second))
    # every bucket of both windows while checks came in (the first ticks and the last differ)
    span = {k for k in first if START <= k[2] <= START + timedelta(seconds=ROUNDS * ROUND_S)}
    assert len(span) == 2 * (ROUNDS * ROUND_S // TICK_S + 1)
    assert span <= set(common)
    for key in common:
        assert first[key] == second[key], key
    # and the history was exercised: bravo excluded, then recovering, then ok
    statuses = {row[1] for runs in first.values() for row in runs}
    assert {"ok", "excluded", "recovering"} <= statuses
