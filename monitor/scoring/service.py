"""The scoring job's SQL side: read a chain's window of results, score, store a run; and read the
latest stored run for the API. SQL aggregates; monitor.scoring.aggregate/policy decide."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, func, insert, select
from sqlalchemy.orm import Session

from monitor.db.models import Chain, Endpoint, Result, Score, ScoringRun
from monitor.scoring.aggregate import ProbeSamples, endpoint_stats
from monitor.scoring.policy import ChainTargets, Policy, basis_points, score_endpoint, weights


@dataclass(frozen=True, slots=True)
class RunSummary:
    chain_id: int
    window_s: int
    run_id: int
    endpoints: int
    duration_ms: float


def _window_samples(
    session: Session, *, chain_id: int, start: datetime, end: datetime, recent: int
) -> dict[int, list[ProbeSamples]]:
    """endpoint id -> one ProbeSamples per probe that checked it in [start, end)."""
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
    for endpoint_id, probe_id, error, n in session.execute(
        select(Result.endpoint_id, Result.probe_id, Result.error, func.count())
        .where(in_window, Result.error.is_not(None))
        .group_by(Result.endpoint_id, Result.probe_id, Result.error)
    ):
        errors[(endpoint_id, probe_id)][error] = n
    latencies: dict[tuple[int, int], list[float]] = defaultdict(list)
    lags: dict[tuple[int, int], list[int]] = defaultdict(list)
    # Newest first, so the first `recent` lags of each pair are the "now" lag.
    for endpoint_id, probe_id, latency_ms, lag_blocks in session.execute(
        select(Result.endpoint_id, Result.probe_id, Result.latency_ms, Result.lag_blocks)
        .where(in_window, Result.ok.is_(True))
        .order_by(Result.observed_at.desc())
    ):
        key = (endpoint_id, probe_id)
        if latency_ms is not None:
            latencies[key].append(latency_ms)
        if lag_blocks is not None and len(lags[key]) < recent:
            lags[key].append(lag_blocks)
    samples: dict[int, list[ProbeSamples]] = defaultdict(list)
    for endpoint_id, probe_id, total, ok, correct, incorrect in counts:
        key = (endpoint_id, probe_id)
        samples[endpoint_id].append(
            ProbeSamples(
                total=total,
                available=ok or 0,
                correct=correct or 0,
                incorrect=incorrect or 0,
                latencies_ms=latencies.get(key, ()),
                recent_lags_blocks=lags.get(key, ()),
                errors=errors.get(key, {}),
            )
        )
    return samples


def score_chain(
    session: Session, *, chain: Chain, window_s: int, as_of: datetime, policy: Policy
) -> RunSummary:
    """Score every active endpoint of ``chain`` over ``[as_of - window, as_of)`` and store a run."""
    started = time.perf_counter()
    endpoints = session.scalars(
        select(Endpoint)
        .where(Endpoint.chain_id == chain.chain_id, Endpoint.active.is_(True))
        .order_by(Endpoint.id)
    ).all()
    samples = _window_samples(
        session,
        chain_id=chain.chain_id,
        start=as_of - timedelta(seconds=window_s),
        end=as_of,
        recent=policy.recent_lag_checks,
    )
    targets = ChainTargets(
        latency_p95_ms=chain.sla_latency_p95_ms,
        max_lag_blocks=chain.sla_max_lag_blocks,
        block_time_s=chain.block_time_s,
    )
    scores = {
        e.id: score_endpoint(endpoint_stats(samples.get(e.id, [])), targets, policy)
        for e in endpoints
    }
    shares = weights({eid: s.score for eid, s in scores.items()})
    bps = basis_points(shares)
    run = ScoringRun(chain_id=chain.chain_id, window_s=window_s, as_of=as_of, duration_ms=0.0)
    session.add(run)
    session.flush()
    rows = []
    for endpoint in endpoints:
        s = scores[endpoint.id]
        rows.append(
            {
                "run_id": run.id,
                "endpoint_id": endpoint.id,
                "operator_id": endpoint.operator_id,
                "chain_id": chain.chain_id,
                "availability": s.stats.availability,
                "latency_p50_ms": s.stats.latency_p50_ms,
                "latency_p95_ms": s.stats.latency_p95_ms,
                "lag_blocks": s.stats.lag_blocks,
                "lag_seconds": s.lag_seconds,
                "correctness": s.stats.correctness,
                "samples": s.stats.samples,
                "probes": s.stats.probes,
                "score": s.score,
                "weight": shares[endpoint.id],
                "weight_bps": bps[endpoint.id],
                "status": s.status,
                "reasons": json.dumps(s.reasons),
                "errors": json.dumps(dict(sorted(s.stats.errors.items()))),
            }
        )
    if rows:
        session.execute(insert(Score), rows)
    run.duration_ms = (time.perf_counter() - started) * 1000
    return RunSummary(chain.chain_id, window_s, run.id, len(rows), run.duration_ms)


def score_all(
    session: Session,
    *,
    windows_s: list[int],
    as_of: datetime,
    policy: Policy,
    keep: timedelta = timedelta(days=1),
) -> list[RunSummary]:
    """One job tick: every active chain, every window; then drop runs older than ``keep``."""
    chains = session.scalars(select(Chain).where(Chain.active.is_(True))).all()
    summaries = [
        score_chain(session, chain=chain, window_s=w, as_of=as_of, policy=policy)
        for chain in chains
        for w in windows_s
    ]
    # scores go with their run (ON DELETE CASCADE; SQLite has foreign_keys=ON)
    session.execute(delete(ScoringRun).where(ScoringRun.as_of < as_of - keep))
    return summaries


def latest_run(session: Session, *, chain_id: int, window_s: int) -> ScoringRun | None:
    return session.scalar(
        select(ScoringRun)
        .where(ScoringRun.chain_id == chain_id, ScoringRun.window_s == window_s)
        .order_by(ScoringRun.id.desc())
        .limit(1)
    )


def run_scores(session: Session, *, run_id: int) -> list[Score]:
    return list(
        session.scalars(select(Score).where(Score.run_id == run_id).order_by(Score.endpoint_id))
    )
