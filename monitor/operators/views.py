"""GET /v1/operators and /v1/operators/{id}: the registry plus each endpoint's current status."""

from __future__ import annotations

import json

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from monitor.db.models import Chain, Endpoint, Operator, Score
from monitor.db.session import session_scope
from monitor.exceptions import NotFound
from monitor.registry.service import public_url
from monitor.scoring.service import latest_run
from monitor.settings import parse_window

router = APIRouter(tags=["operators"])


class EndpointStatus(BaseModel):
    endpoint_id: int
    chain_id: int
    endpoint: str  # scheme://host[:port]
    active: bool
    status: str  # "ok" | "excluded" | "unscored"
    score: float | None
    weight: float | None
    reasons: list[str]


class OperatorOut(BaseModel):
    id: str
    name: str
    active: bool
    endpoints: list[EndpointStatus]


def _operators(request: Request, operator_id: str | None) -> list[OperatorOut]:
    window_s = parse_window(request.app.state.settings.windows[0])
    with session_scope(request.app.state.engine) as session:
        query = select(Operator).order_by(Operator.id)
        if operator_id is not None:
            query = query.where(Operator.id == operator_id)
        operators = session.scalars(query).all()
        if operator_id is not None and not operators:
            raise NotFound(
                f"operator {operator_id!r} is not in the registry", code="unknown_operator"
            )
        endpoints = session.scalars(
            select(Endpoint)
            .where(Endpoint.operator_id.in_([o.id for o in operators]))
            .order_by(Endpoint.id)
        ).all()
        current: dict[int, Score] = {}
        active_chains = set(session.scalars(select(Chain.chain_id).where(Chain.active.is_(True))))
        for chain_id in {e.chain_id for e in endpoints} & active_chains:
            run = latest_run(session, chain_id=chain_id, window_s=window_s)
            if run is not None:
                current.update(
                    (s.endpoint_id, s)
                    for s in session.scalars(select(Score).where(Score.run_id == run.id))
                )
        by_operator: dict[str, list[EndpointStatus]] = {o.id: [] for o in operators}
        for e in endpoints:
            s = current.get(e.id) if e.active else None
            by_operator[e.operator_id].append(
                EndpointStatus(
                    endpoint_id=e.id,
                    chain_id=e.chain_id,
                    endpoint=public_url(e.url),
                    active=e.active,
                    status=s.status if s else "unscored",
                    score=s.score if s else None,
                    weight=s.weight if s else None,
                    reasons=json.loads(s.reasons) if s else [],
                )
            )
        return [
            OperatorOut(id=o.id, name=o.name, active=o.active, endpoints=by_operator[o.id])
            for o in operators
        ]


@router.get(
    "/v1/operators",
    response_model=list[OperatorOut],
    summary="Every operator with its endpoints' current status",
)
async def list_operators(request: Request) -> list[OperatorOut]:
    return await run_in_threadpool(_operators, request, None)


@router.get(
    "/v1/operators/{operator_id}",
    response_model=OperatorOut,
    summary="One operator with its endpoints' current status",
)
async def get_operator(request: Request, operator_id: str = Path()) -> OperatorOut:
    return (await run_in_threadpool(_operators, request, operator_id))[0]
