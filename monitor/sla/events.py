"""Breach events: when a subject's rolling SLA (the last ``breach_window``) crosses a target, an
event opens; when the target is met again, it closes. Each start and end is queued for the
webhook (monitor.sla.webhook), never sent from here, so nothing waits on the receiver."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.db.models import Chain, Endpoint, Operator
from monitor.sla.judge import SlaFigures, SlaTargets
from monitor.sla.models import BreachEvent, WebhookDelivery
from monitor.sla.rollup import minute_of
from monitor.sla.service import period_figures
from monitor.sla.targets import subject_targets


@dataclass(frozen=True)
class Crossing:
    figure: int | None
    threshold: int
    unit: str


def _crossings(f: SlaFigures, t: SlaTargets) -> dict[str, Crossing]:
    return {
        "availability": Crossing(f.availability_ppm, t.availability_ppm, "ppm"),
        "latency_p95": Crossing(f.latency_p95_ms, t.latency_p95_ms, "ms"),
        "lag": Crossing(f.lag_compliance_ppm, t.availability_ppm, "ppm"),
        "correctness": Crossing(f.correctness_ppm, t.correctness_ppm, "ppm"),
    }


def _describe(target: str, c: Crossing, window: timedelta) -> str:
    def show(value: int | None) -> str:
        if value is None:
            return "unmeasured"
        return f"{value / 10_000:.4g} %" if c.unit == "ppm" else f"{value} ms"

    relation = "above" if target == "latency_p95" else "below"
    minutes = int(window.total_seconds()) // 60
    return (
        f"{target} {show(c.figure)} over the last {minutes} min, "
        f"{relation} the target {show(c.threshold)}"
    )


def event_payload(kind: str, event: BreachEvent) -> str:
    return json.dumps(
        {
            "type": kind,
            "event": {
                "id": event.id,
                "operator_id": event.operator_id,
                "chain_id": event.chain_id,
                "target": event.target,
                "started_at": event.started_at.isoformat(),
                "ended_at": event.ended_at.isoformat() if event.ended_at else None,
                "reason": event.reason,
                "figure": event.figure,
                "threshold": event.threshold,
            },
        },
        sort_keys=True,
    )


def subjects(session: Session) -> list[tuple[Chain, Operator]]:
    """Active operators on the active chains where they have an active endpoint."""
    rows = session.execute(
        select(Chain, Operator)
        .join(Endpoint, Endpoint.chain_id == Chain.chain_id)
        .join(Operator, Operator.id == Endpoint.operator_id)
        .where(Chain.active.is_(True), Operator.active.is_(True), Endpoint.active.is_(True))
        .distinct()
        .order_by(Chain.chain_id, Operator.id)
    ).all()
    return [(chain, operator) for chain, operator in rows]


def evaluate_breaches(
    session: Session, *, now: datetime, window: timedelta, webhook: bool
) -> list[BreachEvent]:
    """Open and close events for every subject; returns the events opened or closed."""
    end = minute_of(now)
    start = end - window
    changed: list[BreachEvent] = []
    open_events = {
        (e.chain_id, e.operator_id, e.target): e
        for e in session.scalars(select(BreachEvent).where(BreachEvent.ended_at.is_(None)))
    }
    for chain, operator in subjects(session):
        targets = subject_targets(chain, operator)
        figures, _ = period_figures(
            session,
            chain_id=chain.chain_id,
            operator_id=operator.id,
            start=start,
            end=end,
            targets=targets,
        )
        for target, crossing in _crossings(figures, targets).items():
            verdict = figures.verdicts[target]
            current = open_events.get((chain.chain_id, operator.id, target))
            if verdict == "breached" and current is None:
                event = BreachEvent(
                    chain_id=chain.chain_id,
                    operator_id=operator.id,
                    target=target,
                    started_at=now,
                    reason=_describe(target, crossing, window),
                    figure=crossing.figure,
                    threshold=crossing.threshold,
                )
                session.add(event)
                session.flush()
                changed.append(event)
                if webhook:
                    _queue(session, "breach_started", event, now)
            elif verdict == "met" and current is not None:
                current.ended_at = now
                changed.append(current)
                if webhook:
                    _queue(session, "breach_ended", current, now)
    session.flush()
    return changed


def _queue(session: Session, kind: str, event: BreachEvent, now: datetime) -> None:
    session.add(
        WebhookDelivery(
            event_id=event.id,
            kind=kind,
            payload=event_payload(kind, event),
            attempts=0,
            next_attempt_at=now,
        )
    )


def list_events(
    session: Session,
    *,
    operator_id: str | None,
    chain_id: int | None,
    since: datetime | None,
    open_only: bool,
    limit: int,
) -> list[BreachEvent]:
    query = select(BreachEvent).order_by(BreachEvent.started_at.desc(), BreachEvent.id.desc())
    if operator_id is not None:
        query = query.where(BreachEvent.operator_id == operator_id)
    if chain_id is not None:
        query = query.where(BreachEvent.chain_id == chain_id)
    if since is not None:
        query = query.where((BreachEvent.ended_at.is_(None)) | (BreachEvent.ended_at >= since))
    if open_only:
        query = query.where(BreachEvent.ended_at.is_(None))
    return list(session.scalars(query.limit(limit)))
