"""The scoring job's SQL side: read a chain's window of results, score, store a run; and read the
latest stored run for the API. SQL aggregates; monitor.scoring.aggregate/policy decide."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from monitor.db.models import Chain, Endpoint, Probe, ProbeScore, Result, ScoringRun
from monitor.db.models import Score as ScoreRow
from monitor.scoring.aggregate import EndpointStats, ProbeSamples, across_probes, per_probe
from monitor.scoring.config import ScoringConfig
from monitor.scoring.outliers import probe_outliers
from monitor.scoring.policy import (
    ChainTargets,
    Policy,
    Previous,
    Score,
    basis_points,
    explain,
    score_endpoint,
    weights,
    with_history,
)


@dataclass(frozen=True, slots=True)
class RunSummary:
    chain_id: int
    window_s: int
    run_id: int
    endpoints: int
    duration_ms: float


def _window_samples(
    session: Session, *, chain_id: int, start: datetime, end: datetime, recent: int
) -> dict[int, dict[int, ProbeSamples]]:
    """endpoint id -> probe id -> what that probe saw of it in [start, end).

    One pass of window functions in SQL reads a few rows per (endpoint, probe), not one per
    result: its newest check (with the pair's counts), its newest ``recent`` lags, and the
    latencies at the ranks the p50 and p95 read (aggregate.percentile_ranks), from which the
    percentiles are computed exactly as from all of them."""
    in_window = and_(
        Result.chain_id == chain_id, Result.observed_at >= start, Result.observed_at < end
    )
    pair = (Result.endpoint_id, Result.probe_id)
    errors: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    for endpoint_id, probe_id, error, n in session.execute(
        select(*pair, Result.error, func.count())
        .where(in_window, Result.error.is_not(None))
        .group_by(*pair, Result.error)
    ):
        errors[(endpoint_id, probe_id)][error] = n
    # Newest first, ties by id (a stable order). A lag is one of an available check's; a
    # latency too. Ranks among those (lag: newest first; latency: ascending, 0-based; ties are
    # equal values, so any order among them gives the same percentiles).
    newest_first = (Result.observed_at.desc(), Result.id.desc())
    has_lag = and_(Result.ok.is_(True), Result.lag_blocks.is_not(None))
    has_latency = and_(Result.ok.is_(True), Result.latency_ms.is_not(None))
    ranked = (
        select(
            *pair,
            Result.observed_at,
            Result.error,
            Result.lag_blocks,
            Result.latency_ms,
            func.row_number().over(partition_by=pair, order_by=newest_first).label("newest"),
            func.count().over(partition_by=pair).label("total"),
            func.sum(case((Result.ok, 1), else_=0)).over(partition_by=pair).label("ok"),
            func.sum(case((Result.correct.is_(True), 1), else_=0))
            .over(partition_by=pair)
            .label("correct"),
            func.sum(case((Result.correct.is_(False), 1), else_=0))
            .over(partition_by=pair)
            .label("incorrect"),
            case((has_lag, 1), else_=0).label("has_lag"),
            func.row_number()
            .over(partition_by=(*pair, has_lag), order_by=newest_first)
            .label("lag_rank"),
            case((has_latency, 1), else_=0).label("has_latency"),
            (
                func.row_number().over(
                    partition_by=(*pair, has_latency), order_by=Result.latency_ms
                )
                - 1
            ).label("latency_rank"),
            func.count().over(partition_by=(*pair, has_latency)).label("latencies"),
        )
        .where(in_window)
        .subquery()
    )
    c = ranked.c
    p50, p95 = (c.latencies - 1) // 2, (95 * (c.latencies - 1)) // 100  # percentile_ranks
    wanted = or_(
        c.newest == 1,
        and_(c.has_lag == 1, c.lag_rank <= recent),
        and_(
            c.has_latency == 1,
            or_(
                c.latency_rank == p50,
                c.latency_rank == p50 + 1,
                c.latency_rank == p95,
                c.latency_rank == p95 + 1,
            ),
        ),
    )
    heads: dict[tuple[int, int], tuple[datetime, str | None, int, int, int, int]] = {}
    lags: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    latency_count: dict[tuple[int, int], int] = {}
    at_rank: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
    newest = c.newest == 1
    rows = session.execute(
        select(
            c.endpoint_id,
            c.probe_id,
            # only the newest check's time and pair counts are read: no others sent
            case((newest, c.observed_at)),
            case((newest, c.error)),
            case((newest, c.total)),
            case((newest, c.ok)),
            case((newest, c.correct)),
            case((newest, c.incorrect)),
            case((and_(c.has_lag == 1, c.lag_rank <= recent), c.lag_rank)),
            c.lag_blocks,
            case((c.has_latency == 1, c.latency_rank)),
            c.latencies,
            c.latency_ms,
        ).where(wanted)
    ).tuples()
    for (
        endpoint_id,
        probe_id,
        observed_at,
        error,
        total,
        ok,
        correct,
        incorrect,
        lag_rank,
        lag_blocks,
        latency_rank,
        latencies,
        latency_ms,
    ) in rows:
        key = (endpoint_id, probe_id)
        if observed_at is not None:
            heads[key] = (observed_at, error, total, ok or 0, correct or 0, incorrect or 0)
        if lag_rank is not None:
            lags[key].append((lag_rank, lag_blocks))
        if latency_rank is not None:
            latency_count[key] = latencies
            at_rank[key][latency_rank] = latency_ms
    samples: dict[int, dict[int, ProbeSamples]] = defaultdict(dict)
    for key, (observed_at, latest_error, total, ok, correct, incorrect) in sorted(heads.items()):
        samples[key[0]][key[1]] = ProbeSamples(
            total=total,
            available=ok,
            correct=correct,
            incorrect=incorrect,
            recent_lags_blocks=[lag for _, lag in sorted(lags.get(key, ()))],
            errors=errors.get(key, {}),
            latest_error=latest_error,
            age_s=max(0.0, (end - observed_at).total_seconds()),
            latency_count=latency_count.get(key, 0),
            latency_at_rank=at_rank.get(key, {}),
        )
    return samples


def chain_policy(chain: Chain) -> Policy:
    """The chain's scoring policy, from the registry's ``scoring`` section stored with it."""
    return Policy.from_config(ScoringConfig.model_validate_json(chain.scoring or "{}"))


def _previous(
    session: Session, *, chain_id: int, window_s: int, as_of: datetime
) -> dict[int, Previous]:
    """Hysteresis reads the run just before ``as_of`` (by evaluation time, not by when it was
    stored): replaying a bucket with late data then folds the same history as the first time."""
    run = session.scalar(
        select(ScoringRun)
        .where(
            ScoringRun.chain_id == chain_id,
            ScoringRun.window_s == window_s,
            ScoringRun.as_of < as_of,
        )
        .order_by(ScoringRun.as_of.desc(), ScoringRun.id.desc())
        .limit(1)
    )
    if run is None:
        return {}
    return {
        s.endpoint_id: Previous(s.status, s.score, s.status_since or run.as_of)
        for s in run_scores(session, run_id=run.id)
    }


def score_chain(
    session: Session,
    *,
    chain: Chain,
    window_s: int,
    as_of: datetime,
    policy: Policy | None = None,
    batches_through: int | None = None,
) -> RunSummary:
    """Score every active endpoint of ``chain`` over ``[as_of - window, as_of)`` and store a run.

    ``policy`` defaults to the chain's own (registry); hysteresis reads the previous run."""
    started = time.perf_counter()
    policy = policy or chain_policy(chain)
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
    previous = _previous(session, chain_id=chain.chain_id, window_s=window_s, as_of=as_of)
    per_probe_stats = {
        eid: {pid: per_probe(s) for pid, s in by_probe.items()} for eid, by_probe in samples.items()
    }
    consensus: dict[int, EndpointStats] = {}
    scores: dict[int, tuple[Score, datetime]] = {}
    for e in endpoints:
        by_probe = samples.get(e.id, {})
        stats = across_probes(
            list(per_probe_stats.get(e.id, {}).values()), [s.errors for s in by_probe.values()]
        )
        consensus[e.id] = stats
        raw = score_endpoint(stats, targets, policy)
        scores[e.id] = with_history(
            raw, previous.get(e.id), as_of=as_of, targets=targets, policy=policy
        )
    shares = weights({eid: s.score for eid, (s, _) in scores.items()})
    bps = basis_points(shares)
    run = ScoringRun(
        chain_id=chain.chain_id,
        window_s=window_s,
        as_of=as_of,
        duration_ms=0.0,
        batches_through=batches_through,
    )
    session.add(run)
    session.flush()
    rows = []
    for endpoint in endpoints:
        s, since = scores[endpoint.id]
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
                "status_since": since,
                "reasons": json.dumps(s.reasons),
                "errors": json.dumps(dict(sorted(s.stats.errors.items()))),
                "factors": json.dumps(explain(s)),
            }
        )
    if rows:
        session.execute(insert(ScoreRow), rows)
    outliers = probe_outliers(per_probe_stats, consensus, targets)
    if outliers:
        session.execute(
            insert(ProbeScore),
            [
                {
                    "run_id": run.id,
                    "probe_id": o.probe_id,
                    "endpoints": o.endpoints,
                    "disagreements": o.disagreements,
                    "kinds": json.dumps(dict(sorted(o.disagreement_kinds.items()))),
                    "outlier_score": o.score,
                }
                for o in outliers.values()
            ],
        )
    run.duration_ms = (time.perf_counter() - started) * 1000
    return RunSummary(chain.chain_id, window_s, run.id, len(rows), run.duration_ms)


def score_all(
    session: Session,
    *,
    windows_s: list[int],
    as_of: datetime,
    policy: Policy | None = None,
    keep: timedelta = timedelta(days=1),
    batches_through: int | None = None,
) -> list[RunSummary]:
    """One job tick: every active chain (each with its own policy unless ``policy`` is given),
    every window; then drop runs older than ``keep``."""
    chains = session.scalars(select(Chain).where(Chain.active.is_(True))).all()
    summaries = [
        score_chain(
            session,
            chain=chain,
            window_s=w,
            as_of=as_of,
            policy=policy,
            batches_through=batches_through,
        )
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


def run_scores(session: Session, *, run_id: int) -> list[ScoreRow]:
    return list(
        session.scalars(
            select(ScoreRow).where(ScoreRow.run_id == run_id).order_by(ScoreRow.endpoint_id)
        )
    )


def run_probe_scores(session: Session, *, run_id: int) -> list[tuple[ProbeScore, Probe]]:
    rows = session.execute(
        select(ProbeScore, Probe)
        .join(Probe, Probe.id == ProbeScore.probe_id)
        .where(ProbeScore.run_id == run_id)
        .order_by(Probe.address)
    ).all()
    return [(score, probe) for score, probe in rows]
