"""POST /v1/batches and GET /v1/batches: thin. The posted body is read with a size cap, the
rest is the service's; each request is counted (monitor.metrics.IngestMetrics): stored once
committed, refused by its code. GET serves the stored batches, a page at a time, to peers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool

from monitor.db.session import session_scope
from monitor.exceptions import MonitorError, PayloadTooLarge
from monitor.ingest.feed import DEFAULT_LIMIT, MAX_LIMIT, batches_since, parse_cursor
from monitor.ingest.schemas import BatchAck, BatchPage
from monitor.ingest.service import Ingested, receive_batch
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
    return await run_in_threadpool(
        lambda: receive_batch(request.app.state.engine, body=body, settings=settings)
    )


@router.get(
    "/v1/batches",
    response_model=BatchPage,
    summary="The stored signed batches, in the order this collector stored them (for peers)",
    responses={422: {"description": "malformed cursor or limit"}},
)
async def list_batches(
    request: Request,
    since: str = Query(
        "0", max_length=64, description="`next` of the previous page; 0: from the start"
    ),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="batches per page, at most"),
) -> Response:
    sequence = parse_cursor(since)
    settings = request.app.state.settings

    def load() -> str:
        settled = datetime.now(UTC) - timedelta(seconds=settings.batches_settle_s)
        with session_scope(request.app.state.engine) as session:
            page = batches_since(session, since=sequence, limit=limit, settled_before=settled)
        # Written by hand, off the event loop (megabytes): each body a JSON string of its bytes.
        return json.dumps(
            {
                "batches": [{"hash": b.hash, "body": b.body} for b in page.batches],
                "next": page.next,
                "more": page.more,
            },
            separators=(",", ":"),
        )

    return Response(await run_in_threadpool(load), media_type="application/json")
