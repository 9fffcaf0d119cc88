"""Pull the signed batches this collector lacks from its peers (``MONITOR_PEERS``), every
``sync_interval_s`` (docs/operations.md, "Peers").

From each peer, pages of ``GET /v1/batches`` from the cursor stored for it (``peer_cursors``),
at most ``MAX_PAGES`` a tick. Every batch goes through the same verification and storage as a
``POST /v1/batches`` (monitor.ingest.service.receive_batch): a peer is never trusted, only the
probes' signatures are. A batch this collector refuses (unknown probe, bad signature, malformed,
conflict, ...) is counted and logged with its code, never stored, and the cursor moves past it:
one bad batch must not block a peer forever (see the docs for taking one again). A peer that is
down or answers something other than a page of batches stops its sync for this tick with nothing
of that page stored and the cursor where it was; so does a database outage. With several
replicas on one PostgreSQL, one of them syncs at a time (monitor.db.locks)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
from apscheduler.schedulers.base import BaseScheduler
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from monitor.db.locks import run_once
from monitor.db.session import session_scope
from monitor.exceptions import MalformedRequest, PeerError, RequestError
from monitor.ingest.feed import PAGE_MAX_BYTES
from monitor.ingest.models import PeerCursor
from monitor.ingest.schemas import BatchEntry, BatchPage
from monitor.ingest.service import batch_hash, receive_batch
from monitor.settings import Settings

if TYPE_CHECKING:
    from monitor.metrics import JobMetrics, PeerMetrics

log = logging.getLogger("monitor.sync")

JOB = "peer_sync"
PAGE_LIMIT = 500  # batches asked for per page (the peer may serve fewer)
MAX_PAGES = 20  # per peer and tick: a long backlog is caught up over several ticks
START = "0"  # the cursor of a peer never synced with
LOGGED_REFUSALS = 10  # per peer and tick, one line each; the rest in the tick's summary


@dataclass
class PeerSync:
    """What one tick did with one peer."""

    peer: str
    pages: int = 0
    pulled: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # code -> batches
    error: str | None = None  # the code that stopped it early (PeerError, database, bug)
    cursor: str = START  # where the next tick asks from


def response_cap(settings: Settings) -> int:
    """The largest page read: PAGE_MAX_BYTES of bodies, or one body of up to the batch size
    limit, each JSON-escaped (at most doubled for the ASCII of a batch), plus the envelope."""
    return 2 * (PAGE_MAX_BYTES + settings.max_body_bytes) + 64 * 1024


def fetch_page(
    client: httpx.Client, *, peer: str, cursor: str, limit: int, timeout_s: float, max_bytes: int
) -> BatchPage:
    """One page from ``peer``, read whole within ``timeout_s`` and ``max_bytes``; PeerError
    otherwise."""
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    try:
        with client.stream(
            "GET",
            f"{peer}/v1/batches",
            params={"since": cursor, "limit": limit},
            timeout=timeout_s,
        ) as response:
            if response.status_code != 200:
                raise PeerError(f"answered HTTP {response.status_code}", code="peer_http_status")
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise PeerError(f"answer over {max_bytes} bytes", code="peer_too_large")
                if time.monotonic() > deadline:  # a trickle: each read in time, not the whole
                    raise PeerError(f"no whole answer within {timeout_s:g} s")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise PeerError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
    try:
        return BatchPage.model_validate_json(b"".join(chunks))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise PeerError(
            f"not a page of batches: {where}: {first['msg']}", code="peer_malformed"
        ) from None


def load_cursor(engine: Engine, *, peer: str) -> str:
    with session_scope(engine) as session:
        row = session.get(PeerCursor, peer)
        return START if row is None else row.cursor


def record(
    engine: Engine,
    *,
    peer: str,
    now: datetime,
    cursor: str | None = None,
    success: bool = False,
    error: str | None = None,
) -> None:
    """Store the peer's new cursor, a successful sync or an error (one peer, one row)."""
    with session_scope(engine) as session:
        row = session.get(PeerCursor, peer)
        if row is None:
            row = PeerCursor(peer_url=peer, cursor=START)
            session.add(row)
        if cursor is not None:
            row.cursor = cursor
        if success:
            row.last_success_at, row.last_error = now, None
        if error is not None:
            row.last_error_at, row.last_error = now, error[:2000]


def take(
    engine: Engine,
    settings: Settings,
    *,
    peer: str,
    entry: BatchEntry,
    outcome: PeerSync,
    metrics: PeerMetrics | None,
) -> None:
    """Verify and store one pulled batch exactly as if its probe had posted it; a refusal is
    counted and logged. Database errors and bugs propagate: they stop the sync."""
    outcome.pulled += 1
    if metrics is not None:
        metrics.pulled.labels(peer).inc()
    body = entry.body.encode()
    try:
        if batch_hash(body) != entry.hash:
            raise MalformedRequest(
                f"the peer names it {entry.hash}, its body hashes to {batch_hash(body)}",
                code="hash_mismatch",
            )
        ingested = receive_batch(engine, body=body, settings=settings)
    except RequestError as exc:
        outcome.refused[exc.code] += 1
        if metrics is not None:
            metrics.refusal(peer, exc.code)
        # Each one named, up to a few a tick; a peer serving thousands gets them summed up.
        level = logging.WARNING if outcome.refused.total() <= LOGGED_REFUSALS else logging.DEBUG
        log.log(level, "peer %s: batch %s refused (%s): %s", peer, entry.hash, exc.code, exc)
        return
    if ingested.ack.duplicate:
        outcome.duplicates += 1
    else:
        outcome.stored += 1
    if metrics is not None:
        metrics.stored.labels(peer, "duplicate" if ingested.ack.duplicate else "accepted").inc()


def sync_peer(
    engine: Engine,
    settings: Settings,
    *,
    peer: str,
    client: httpx.Client,
    metrics: PeerMetrics | None = None,
    page_limit: int = PAGE_LIMIT,
    max_pages: int = MAX_PAGES,
) -> PeerSync:
    """Pull from ``peer`` what it has after the stored cursor: at most ``max_pages`` pages,
    the cursor stored after each whole page."""
    outcome = PeerSync(peer, cursor=load_cursor(engine, peer=peer))
    detail = ""  # what stopped it, for peer_cursors.last_error
    try:
        for _ in range(max_pages):
            page = fetch_page(
                client,
                peer=peer,
                cursor=outcome.cursor,
                limit=page_limit,
                timeout_s=settings.peer_timeout_s,
                max_bytes=response_cap(settings),
            )
            if page.next == outcome.cursor and (page.batches or page.more):
                raise PeerError("a page that does not move the cursor", code="peer_malformed")
            outcome.pages += 1
            for entry in page.batches:
                take(engine, settings, peer=peer, entry=entry, outcome=outcome, metrics=metrics)
            if page.next != outcome.cursor:
                record(engine, peer=peer, now=datetime.now(UTC), cursor=page.next)
                outcome.cursor = page.next
            if not page.more:
                break
    except PeerError as exc:
        outcome.error, detail = exc.code, f"{exc.code}: {exc.message}"
        log.warning("peer %s: sync stopped (%s): %s; retried next tick", peer, exc.code, exc)
    except (OperationalError, InterfaceError) as exc:
        outcome.error = detail = "database_unavailable"
        log.warning("peer %s: sync stopped: database unavailable (%s)", peer, type(exc).__name__)
    except Exception:  # a bug: this peer waits for the next tick, the others still sync
        outcome.error = detail = "internal_error"
        log.exception("peer %s: sync failed", peer)
    now = datetime.now(UTC)
    try:
        if outcome.error is None:
            record(engine, peer=peer, now=now, success=True)
        else:
            record(engine, peer=peer, now=now, error=detail)
    except (OperationalError, InterfaceError):  # the database is down: nothing to record it in
        log.warning("peer %s: sync outcome not recorded: database unavailable", peer)
    if metrics is not None:
        if outcome.error is None:
            metrics.last_success.labels(peer).set(now.timestamp())
        else:
            metrics.failures.labels(peer, outcome.error).inc()
    if outcome.pulled:
        log.log(
            logging.WARNING if outcome.refused else logging.INFO,
            "peer %s: %d pulled, %d stored, %d already held, refused: %s",
            peer,
            outcome.pulled,
            outcome.stored,
            outcome.duplicates,
            dict(outcome.refused) or "none",
        )
    return outcome


def sync_peers(
    engine: Engine,
    settings: Settings,
    *,
    metrics: JobMetrics | None = None,
    page_limit: int = PAGE_LIMIT,
    max_pages: int = MAX_PAGES,
) -> list[PeerSync]:
    """One pass over every configured peer, in order; one failing never stops the others."""
    peer_metrics = None if metrics is None else metrics.peers
    if peer_metrics is not None:
        peer_metrics.track(settings.peers)
    with httpx.Client(timeout=settings.peer_timeout_s) as client:
        return [
            sync_peer(
                engine,
                settings,
                peer=peer,
                client=client,
                metrics=peer_metrics,
                page_limit=page_limit,
                max_pages=max_pages,
            )
            for peer in settings.peers
        ]


def scheduled_sync(
    engine: Engine, settings: Settings, *, metrics: JobMetrics | None = None
) -> list[PeerSync] | None:
    """One scheduled tick, or None when another replica is syncing (it takes the same cursors
    from the database, so nothing is pulled twice at once)."""
    outcomes: list[PeerSync] = []

    def work() -> None:
        outcomes.extend(sync_peers(engine, settings, metrics=metrics))

    return outcomes if run_once(engine, JOB, work) else None


def add_sync_job(
    scheduler: BaseScheduler,
    engine: Engine,
    settings: Settings,
    *,
    metrics: JobMetrics | None = None,
) -> None:
    """Schedule the sync beside the other jobs; nothing without peers."""
    if not settings.peers:
        return
    if metrics is not None:
        metrics.peers.track(settings.peers)
    scheduler.add_job(
        _guarded(lambda: scheduled_sync(engine, settings, metrics=metrics)),
        "interval",
        seconds=settings.sync_interval_s,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        id=JOB,
    )


def _guarded(work: Callable[[], object]) -> Callable[[], None]:
    def tick() -> None:
        try:
            work()
        except (OperationalError, InterfaceError) as exc:  # the lock or a cursor: retried
            log.warning("%s skipped: database unavailable (%s)", JOB, type(exc).__name__)
        except Exception:  # keep the schedule alive
            log.exception("%s failed", JOB)

    return tick
