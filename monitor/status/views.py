"""The status page: GET / (every active chain's operators), /status/operators/{id} (one
operator's SLA this month and its breach events), /status/api/history (the chart's data) and
/status/static/* (the page's CSS and JS). Server-rendered, nothing loaded from elsewhere, left out
of the OpenAPI schema: /v1 is the API, this is for people (docs/status.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool

from monitor.db.session import session_scope
from monitor.exceptions import NotFound
from monitor.settings import parse_window
from monitor.status.render import ASSETS, render
from monitor.status.service import (
    UPTIMES,
    ChainStatus,
    OperatorDetail,
    active_chain,
    chain_statuses,
    operator_detail,
    weight_history,
)

router = APIRouter(include_in_schema=False)

# Nothing but this origin, no inline script or style, no framing: the page cannot load anything
# from elsewhere even if a registry name slipped past the escaping.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
STATIC_MAX_AGE_S = 86_400  # asset URLs carry a hash of the content (render.static_url)


def _window(request: Request) -> tuple[str, int]:
    window: str = request.app.state.settings.windows[0]
    return window, parse_window(window)


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = render(template, root=request.scope.get("root_path", ""), **context)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def _unavailable(request: Request) -> HTMLResponse:
    response = _page(request, "unavailable.html", status_code=503, now=datetime.now(UTC))
    response.headers["Retry-After"] = "5"
    return response


@router.get("/", response_class=HTMLResponse)
async def status_page(request: Request) -> HTMLResponse:
    window, window_s = _window(request)
    now = datetime.now(UTC)

    def load() -> list[ChainStatus]:
        with session_scope(request.app.state.engine) as session:
            return chain_statuses(session, window_s=window_s, now=now)

    try:
        chains = await run_in_threadpool(load)
    except (OperationalError, InterfaceError):
        return _unavailable(request)
    return _page(request, "index.html", chains=chains, window=window, uptimes=UPTIMES, now=now)


@router.get("/status/operators/{operator_id}", response_class=HTMLResponse)
async def operator_page(request: Request, operator_id: str) -> HTMLResponse:
    window, window_s = _window(request)
    now = datetime.now(UTC)

    def load() -> OperatorDetail | None:
        if len(operator_id) > 64:  # registry ids are at most 64 characters
            return None
        with session_scope(request.app.state.engine) as session:
            return operator_detail(session, operator_id=operator_id, window_s=window_s, now=now)

    try:
        detail = await run_in_threadpool(load)
    except (OperationalError, InterfaceError):
        return _unavailable(request)
    if detail is None:
        return _page(request, "not_found.html", status_code=404, operator_id=operator_id, now=now)
    return _page(request, "operator.html", op=detail, window=window, uptimes=UPTIMES, now=now)


@router.get("/status/api/history")
async def history(request: Request, chain_id: int = Query(gt=0, le=2**63 - 1)) -> JSONResponse:
    """The chart's data: each operator's weight over the last hour (JSON errors, as on /v1)."""
    _, window_s = _window(request)
    now = datetime.now(UTC)

    def load() -> dict[str, object]:
        with session_scope(request.app.state.engine) as session:
            if active_chain(session, chain_id=chain_id) is None:
                raise NotFound(
                    f"chain {chain_id} is not active in the registry", code="unknown_chain"
                )
            return weight_history(session, chain_id=chain_id, window_s=window_s, now=now).as_dict()

    body = await run_in_threadpool(load)
    return JSONResponse(body, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.get("/status/static/{name}")
async def static(name: str) -> Response:
    asset = ASSETS.get(name)
    if asset is None:
        raise NotFound(f"no asset {name!r}", code="not_found")
    return Response(
        asset.body,
        media_type=asset.media_type,
        headers={**SECURITY_HEADERS, "Cache-Control": f"public, max-age={STATIC_MAX_AGE_S}"},
    )
