"""POST /v1/batches: thin; the body is read with a size cap, the rest is the service's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from monitor.db.session import session_scope
from monitor.exceptions import PayloadTooLarge
from monitor.ingest.schemas import BatchAck
from monitor.ingest.service import ingest_batch

router = APIRouter(tags=["ingest"])


async def read_body_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes; the limit is {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/v1/batches",
    response_model=BatchAck,
    summary="Submit a signed batch of probe results",
    responses={
        401: {"description": "bad signature"},
        403: {"description": "unknown probe"},
        409: {"description": "batch id reused"},
        413: {"description": "too large"},
        422: {"description": "malformed or from the future"},
    },
)
async def post_batch(request: Request) -> BatchAck:
    settings = request.app.state.settings
    body = await read_body_capped(request, settings.max_body_bytes)

    def store() -> BatchAck:
        with session_scope(request.app.state.engine) as session:
            return ingest_batch(
                session,
                body=body,
                now=datetime.now(UTC),
                clock_skew=timedelta(seconds=settings.clock_skew_s),
                max_results=settings.max_results_per_batch,
            )

    try:
        return await run_in_threadpool(store)
    except IntegrityError:
        # The same batch raced in on another connection and won: now it is a duplicate.
        return await run_in_threadpool(store)
