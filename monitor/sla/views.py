"""GET /v1/sla/{operator}, /v1/uptime/{operator}, /v1/badges/{operator}/uptime/{window}.svg and
/v1/events: thin; the answers come from the rollups (monitor.sla.service)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from monitor.db.models import Endpoint, Operator
from monitor.db.session import session_scope
from monitor.exceptions import MalformedRequest, NotFound
from monitor.sla.badge import badge_svg
from monitor.sla.events import list_events
from monitor.sla.judge import PPM
from monitor.sla.schemas import EventOut, SlaReportOut, UptimeOut, UptimeWindowOut
from monitor.sla.service import UPTIME_WINDOWS, sla_report, subject, uptime
from monitor.sla.targets import subject_targets

router = APIRouter(tags=["sla"])

OPERATOR = Path(pattern=r"^[a-z0-9-]{1,64}$", description="the operator's id in the registry")
CHAIN = Query(
    None, gt=0, le=2**63 - 1, description="required when the operator serves several chains"
)

START = Query(None, description="ISO 8601 with a zone; default: this month's start (UTC)")
END = Query(None, description="ISO 8601 with a zone, exclusive; default: now")
SINCE = Query(None, description="events still open or ended since then (ISO 8601)")


def _chain_of(session: Session, operator_id: str, chain_id: int | None) -> int:
    if session.get(Operator, operator_id) is None:
        raise NotFound(f"operator {operator_id!r} is not in the registry", code="unknown_operator")
    if chain_id is not None:
        return chain_id
    chains = sorted(
        set(session.scalars(select(Endpoint.chain_id).where(Endpoint.operator_id == operator_id)))
    )
    if len(chains) != 1:
        raise MalformedRequest(
            f"operator {operator_id!r} serves chains {chains}: give chain_id",
            code="chain_id_required",
        )
    return chains[0]


def _aware(value: datetime | None, name: str) -> datetime | None:
    """A time with its zone, in UTC; a clear 422 for one without a zone or out of range."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise MalformedRequest(f"{name}: give a time zone (e.g. a trailing Z)", code="bad_period")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise MalformedRequest(f"{name}: out of range", code="bad_period") from None


@router.get(
    "/v1/sla/{operator_id}",
    response_model=SlaReportOut,
    summary="An operator's SLA on a chain over a period, with verdicts and the penalty advice",
)
async def get_sla(
    request: Request,
    operator_id: str = OPERATOR,
    chain_id: int | None = CHAIN,
    start: datetime | None = START,
    end: datetime | None = END,
) -> SlaReportOut:
    now = datetime.now(UTC)
    start, end = _aware(start, "start"), _aware(end, "end")
    end = end or now
    start = start or end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)

    def load() -> SlaReportOut:
        with session_scope(request.app.state.engine) as session:
            chain = _chain_of(session, operator_id, chain_id)
            report = sla_report(
                session, operator_id=operator_id, chain_id=chain, start=start, end=end
            )
            return SlaReportOut.of(report)

    return await run_in_threadpool(load)


def _uptime(request: Request, operator_id: str, chain_id: int | None) -> UptimeOut:
    now = datetime.now(UTC)
    with session_scope(request.app.state.engine) as session:
        chain_id = _chain_of(session, operator_id, chain_id)
        chain, operator = subject(session, operator_id=operator_id, chain_id=chain_id)
        windows = {}
        for window in UPTIME_WINDOWS:
            f = uptime(session, operator_id=operator_id, chain_id=chain_id, window=window, now=now)
            windows[window] = UptimeWindowOut(
                uptime=None if f.availability_ppm is None else f.availability_ppm / PPM,
                up=f.up,
                down=f.down,
                insufficient=f.insufficient,
                verdict=f.verdicts["availability"],
            )
        return UptimeOut(
            operator_id=operator_id,
            chain_id=chain_id,
            as_of=now,
            target=subject_targets(chain, operator).availability_ppm / PPM,
            windows=windows,
        )


@router.get(
    "/v1/uptime/{operator_id}",
    response_model=UptimeOut,
    summary="An operator's uptime on a chain over 1h, 24h, 7d, 30d and 365d",
)
async def get_uptime(
    request: Request, operator_id: str = OPERATOR, chain_id: int | None = CHAIN
) -> UptimeOut:
    return await run_in_threadpool(_uptime, request, operator_id, chain_id)


@router.get(
    "/v1/badges/{operator_id}/uptime/{window}.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
    summary="An uptime badge (SVG) for a README or a status page",
)
async def get_badge(
    request: Request,
    operator_id: str = OPERATOR,
    window: str = Path(description=f"one of {', '.join(UPTIME_WINDOWS)}"),
    chain_id: int | None = CHAIN,
) -> Response:
    def load() -> tuple[str, str]:
        with session_scope(request.app.state.engine) as session:
            chain = _chain_of(session, operator_id, chain_id)
            f = uptime(session, operator_id=operator_id, chain_id=chain, window=window, now=now)
            value = "no data" if f.availability_ppm is None else _percent(f.availability_ppm)
            return value, f.verdicts["availability"]

    now = datetime.now(UTC)
    value, verdict = await run_in_threadpool(load)
    return Response(
        badge_svg(f"uptime {window}", value, verdict),
        media_type="image/svg+xml",
        headers={"Cache-Control": "max-age=60"},
    )


def _percent(value_ppm: int) -> str:
    # Rounded down, so 99.999 % never shows as 100 %.
    return f"{value_ppm // 10 / 1000:.3f}".rstrip("0").rstrip(".") + "%"


@router.get(
    "/v1/events",
    response_model=list[EventOut],
    summary="Breach events, newest first",
)
async def get_events(
    request: Request,
    operator_id: str | None = Query(None, pattern=r"^[a-z0-9-]{1,64}$"),
    chain_id: int | None = Query(None, gt=0, le=2**63 - 1),
    since: datetime | None = SINCE,
    open: bool = Query(False, description="only events still open"),
    limit: int = Query(100, ge=1, le=1000),
) -> list[EventOut]:
    since = _aware(since, "since")

    def load() -> list[EventOut]:
        with session_scope(request.app.state.engine) as session:
            return [
                EventOut.model_validate(e, from_attributes=True)
                for e in list_events(
                    session,
                    operator_id=operator_id,
                    chain_id=chain_id,
                    since=since,
                    open_only=open,
                    limit=limit,
                )
            ]

    return await run_in_threadpool(load)
