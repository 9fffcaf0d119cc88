"""POST /v1/batches: thin; the body is read with a size cap, the rest is the service's. Each
request is counted (monitor.metrics.IngestMetrics): stored once committed, refused by its code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool

from monitor.db.session import session_scope
from monitor.exceptions import MonitorError, PayloadTooLarge
from monitor.ingest.schemas import BatchAck
from monitor.ingest.service import Ingested, store_batch
from monitor.metrics import IngestMetrics

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
    metrics: IngestMetrics = request.app.state.instruments.ingest
    with metrics.duration.time():
        try:
            ingested = await _ingest(request)
        except MonitorError as exc:
            metrics.refused(exc.code)
            raise
        except (OperationalError, InterfaceError):  # the app answers 503 database_unavailable
            metrics.refused("database_unavailable")
            raise
        except Exception:  # the app answers 500 internal_error
            metrics.refused("internal_error")
            raise
        metrics.stored(ingested)  # committed: counted once, whatever raced
        return ingested.ack


async def _ingest(request: Request) -> Ingested:
    settings = request.app.state.settings
    body = await read_body_capped(request, settings.max_body_bytes)

    def store() -> Ingested:
        with session_scope(request.app.state.engine) as session:
            return store_batch(
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
