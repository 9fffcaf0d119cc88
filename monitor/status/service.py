"""What the status page shows, read from what the jobs precomputed: the latest scoring run of each
chain (statuses, weights, lag, latency), the SLA rollups (uptime, this month's report) and the
breach events. Raw results are never read; full endpoint URLs never leave (public_url)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.db.models import Chain, Endpoint, Operator, ScoringRun
from monitor.db.models import Score as ScoreRow
from monitor.registry.service import public_url
from monitor.scoring.service import latest_run, run_scores
from monitor.sla.events import list_events
from monitor.sla.rollup import minute_of
from monitor.sla.service import SlaReport, sla_report, uptime

UPTIMES = ("24h", "30d")  # the uptime windows the page shows (monitor.sla.service.UPTIME_WINDOWS)
COLORS = 8  # series colours in status.css (.s0 .. .s7), by the operator's place on its chain
HISTORY_SPAN = timedelta(hours=1)
HISTORY_POINTS = 120  # per series at most: one per 30 s bucket of the hour
RECENT_EVENTS = 20


@dataclass(frozen=True)
class EndpointRow:
    endpoint: str  # scheme://host[:port]
    status: str  # ok | recovering | excluded | unscored
    reasons: tuple[str, ...]
    score: float | None
    weight: float | None
    availability: float | None
    lag_blocks: float | None
    latency_p95_ms: float | None


@dataclass(frozen=True)
class Uptime:
    availability_ppm: int | None
    verdict: str  # met | breached | insufficient_data


@dataclass(frozen=True)
class OperatorRow:
    operator_id: str
    name: str
    color: int
    endpoints: tuple[EndpointRow, ...]
    uptime: dict[str, Uptime]

    @property
    def weight(self) -> float | None:
        """The operator's share of the chain's traffic: its endpoints' weights summed."""
        weights = [e.weight for e in self.endpoints if e.weight is not None]
        return sum(weights) if weights else None


@dataclass(frozen=True)
class ChainStatus:
    chain_id: int
    name: str
    as_of: datetime | None  # of the latest scoring run; None before the first
    operators: tuple[OperatorRow, ...]

    def count(self, status: str) -> int:
        return sum(e.status == status for o in self.operators for e in o.endpoints)


@dataclass(frozen=True)
class Series:
    operator_id: str
    name: str
    color: int
    points: tuple[tuple[int, float], ...]  # (unix ms, weight)


@dataclass(frozen=True)
class History:
    chain_id: int
    start: datetime
    end: datetime
    series: tuple[Series, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "chain_id": self.chain_id,
            "start_ms": _ms(self.start),
            "end_ms": _ms(self.end),
            "series": [
                {
                    "operator_id": s.operator_id,
                    "name": s.name,
                    "color": s.color,
                    "points": [list(p) for p in s.points],
                }
                for s in self.series
            ],
        }


@dataclass(frozen=True)
class EventRow:
    chain_id: int
    target: str
    started_at: datetime
    ended_at: datetime | None
    reason: str


@dataclass(frozen=True)
class ChainSla:
    chain_id: int
    name: str
    active: bool
    endpoints: tuple[EndpointRow, ...]
    uptime: dict[str, Uptime]
    report: SlaReport


@dataclass(frozen=True)
class OperatorDetail:
    operator_id: str
    name: str
    active: bool
    chains: tuple[ChainSla, ...]
    events: tuple[EventRow, ...]


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _scores(session: Session, run: ScoringRun | None) -> dict[int, ScoreRow]:
    """endpoint id -> its score in ``run``."""
    if run is None:
        return {}
    return {s.endpoint_id: s for s in run_scores(session, run_id=run.id)}


def _endpoint_row(endpoint: Endpoint, score: ScoreRow | None) -> EndpointRow:
    if score is None:
        return EndpointRow(public_url(endpoint.url), "unscored", (), None, None, None, None, None)
    return EndpointRow(
        endpoint=public_url(endpoint.url),
        status=score.status,
        reasons=tuple(json.loads(score.reasons)),
        score=score.score,
        weight=score.weight,
        availability=score.availability,
        lag_blocks=score.lag_blocks,
        latency_p95_ms=score.latency_p95_ms,
    )


def _uptimes(
    session: Session, *, operator_id: str, chain_id: int, now: datetime
) -> dict[str, Uptime]:
    out = {}
    for window in UPTIMES:
        f = uptime(session, operator_id=operator_id, chain_id=chain_id, window=window, now=now)
        out[window] = Uptime(f.availability_ppm, f.verdicts["availability"])
    return out


def _chain_operators(session: Session, *, chain_id: int) -> list[tuple[Operator, list[Endpoint]]]:
    """The chain's active operators with their active endpoints, by operator id: the order that
    gives each its colour."""
    rows = session.execute(
        select(Operator, Endpoint)
        .join(Endpoint, Endpoint.operator_id == Operator.id)
        .where(
            Endpoint.chain_id == chain_id,
            Endpoint.active.is_(True),
            Operator.active.is_(True),
        )
        .order_by(Operator.id, Endpoint.id)
    ).all()
    grouped: dict[str, tuple[Operator, list[Endpoint]]] = {}
    for operator, endpoint in rows:
        grouped.setdefault(operator.id, (operator, []))[1].append(endpoint)
    return list(grouped.values())


def chain_statuses(session: Session, *, window_s: int, now: datetime) -> list[ChainStatus]:
    """Every active chain with its operators as the latest run (``window_s``) scored them."""
    out = []
    for chain in session.scalars(
        select(Chain).where(Chain.active.is_(True)).order_by(Chain.chain_id)
    ):
        run = latest_run(session, chain_id=chain.chain_id, window_s=window_s)
        scores = _scores(session, run)
        operators = tuple(
            OperatorRow(
                operator_id=operator.id,
                name=operator.name,
                color=i % COLORS,
                endpoints=tuple(_endpoint_row(e, scores.get(e.id)) for e in endpoints),
                uptime=_uptimes(session, operator_id=operator.id, chain_id=chain.chain_id, now=now),
            )
            for i, (operator, endpoints) in enumerate(
                _chain_operators(session, chain_id=chain.chain_id)
            )
        )
        out.append(
            ChainStatus(
                chain_id=chain.chain_id,
                name=chain.name,
                as_of=run.as_of if run else None,
                operators=operators,
            )
        )
    return out


def active_chain(session: Session, *, chain_id: int) -> Chain | None:
    chain = session.get(Chain, chain_id)
    return chain if chain is not None and chain.active else None


def weight_history(
    session: Session,
    *,
    chain_id: int,
    window_s: int,
    now: datetime,
    span: timedelta = HISTORY_SPAN,
    points: int = HISTORY_POINTS,
) -> History:
    """Each current operator's weight (its endpoints' summed) in the chain's runs over the last
    ``span``, at most about ``points`` per operator: the last run of each equal slice of the time
    from the first of those runs to now."""
    since = now - span
    operators = _chain_operators(session, chain_id=chain_id)
    rows = session.execute(
        select(ScoringRun.id, ScoringRun.as_of, ScoreRow.operator_id, func.sum(ScoreRow.weight))
        .join(ScoreRow, ScoreRow.run_id == ScoringRun.id)
        .where(
            ScoringRun.chain_id == chain_id,
            ScoringRun.window_s == window_s,
            ScoringRun.as_of >= since,
            ScoringRun.as_of <= now,
        )
        .group_by(ScoringRun.id, ScoringRun.as_of, ScoreRow.operator_id)
        .order_by(ScoringRun.as_of, ScoringRun.id)
    ).all()
    # Slices of what there is (a collector started a minute ago has a minute to show).
    first = rows[0][1] if rows else since
    slice_s = max((now - first).total_seconds() / points, 0.001)
    by_operator: dict[str, dict[int, tuple[int, float]]] = defaultdict(dict)
    for _, as_of, operator_id, weight in rows:
        # Rows come oldest first: the last run of a slice is the one kept.
        slot = int((as_of - first).total_seconds() // slice_s)
        by_operator[operator_id][slot] = (_ms(as_of), round(float(weight), 6))
    series = tuple(
        Series(
            operator_id=operator.id,
            name=operator.name,
            color=i % COLORS,
            points=tuple(point for _, point in sorted(by_operator[operator.id].items())),
        )
        for i, (operator, _) in enumerate(operators)
    )
    return History(chain_id=chain_id, start=first, end=now, series=series)


def operator_detail(
    session: Session, *, operator_id: str, window_s: int, now: datetime
) -> OperatorDetail | None:
    """The operator's endpoints, uptime and this month's SLA report per chain it serves, and
    its recent breach events; None when it is not in the registry."""
    operator = session.get(Operator, operator_id)
    if operator is None:
        return None
    endpoints = session.scalars(
        select(Endpoint).where(Endpoint.operator_id == operator_id).order_by(Endpoint.id)
    ).all()
    by_chain: dict[int, list[Endpoint]] = defaultdict(list)
    for endpoint in endpoints:
        by_chain[endpoint.chain_id].append(endpoint)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = max(minute_of(now), month + timedelta(minutes=1))  # a month's first minute: one minute
    chains = []
    for chain_id in sorted(by_chain):
        chain = session.get(Chain, chain_id)
        if chain is None:
            continue
        run = latest_run(session, chain_id=chain_id, window_s=window_s) if chain.active else None
        scores = _scores(session, run)
        chains.append(
            ChainSla(
                chain_id=chain_id,
                name=chain.name,
                active=chain.active,
                endpoints=tuple(
                    _endpoint_row(e, scores.get(e.id) if e.active else None)
                    for e in by_chain[chain_id]
                ),
                uptime=_uptimes(session, operator_id=operator_id, chain_id=chain_id, now=now),
                report=sla_report(
                    session, operator_id=operator_id, chain_id=chain_id, start=month, end=end
                ),
            )
        )
    events = tuple(
        EventRow(e.chain_id, e.target, e.started_at, e.ended_at, e.reason)
        for e in list_events(
            session,
            operator_id=operator_id,
            chain_id=None,
            since=None,
            open_only=False,
            limit=RECENT_EVENTS,
        )
    )
    return OperatorDetail(
        operator_id=operator.id,
        name=operator.name,
        active=operator.active,
        chains=tuple(chains),
        events=events,
    )
