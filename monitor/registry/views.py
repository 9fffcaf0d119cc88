"""GET /v1/targets: only for registered probes, because endpoint URLs carry API keys."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from monitor.db.session import session_scope
from monitor.probe.targets import Targets
from monitor.registry.service import require_active_probe, targets
from monitor.signing.eip712 import verify_request_headers

router = APIRouter(tags=["probes"])


@router.get(
    "/v1/targets",
    response_model=Targets,
    summary="What to probe (signed request from a registered probe; see docs/signing.md)",
    responses={
        401: {"description": "missing or bad signature"},
        403: {"description": "unknown probe"},
    },
)
async def get_targets(request: Request) -> Targets:
    settings = request.app.state.settings
    address = verify_request_headers(
        request.headers,
        method="GET",
        path="/v1/targets",
        now_ms=time.time_ns() // 1_000_000,
        max_skew_ms=int(settings.request_skew_s * 1000),
    )

    def read() -> Targets:
        with session_scope(request.app.state.engine) as session:
            require_active_probe(session, address=address)
            return targets(session)

    return await run_in_threadpool(read)
