"""Verify a signed batch and store it with its results, idempotently, all or nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_utils import keccak
from pydantic import ValidationError
from sqlalchemy import ARRAY, BigInteger, Engine, any_, bindparam, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from monitor.db.models import Batch, Endpoint, Result
from monitor.db.session import session_scope
from monitor.exceptions import (
    BatchConflict,
    ClockSkew,
    MalformedRequest,
    PayloadTooLarge,
)
from monitor.ingest.schemas import BatchAck, ProbeResult, SignedBatch
from monitor.registry.service import require_active_probe
from monitor.settings import Settings
from monitor.signing.eip712 import verify_batch

# Observations may precede the batch's creation by at most this much (a round plus slack), and
# may not follow it beyond a little clock jitter inside one process.
MAX_ROUND_SPAN = timedelta(hours=1)
OBSERVED_AFTER_CREATED_TOLERANCE = timedelta(seconds=2)

# The results columns a batch fills, in the order of the rows built below (COPY's column list).
RESULT_COLUMNS = (
    "batch_id",
    "probe_id",
    "endpoint_id",
    "operator_id",
    "chain_id",
    "observed_at",
    "ok",
    "error",
    "latency_ms",
    "head",
    "reference_head",
    "lag_blocks",
    "lag_seconds",
    "check_height",
    "block_hash",
    "correct",
)
_COPY_RESULTS = f"COPY {Result.__tablename__} ({', '.join(RESULT_COLUMNS)}) FROM STDIN"


def batch_hash(body: bytes) -> str:
    """How a stored batch is named in attestations: keccak256 of its exact bytes, 0x hex."""
    return "0x" + keccak(body).hex()


def parse_batch(body: bytes) -> SignedBatch:
    try:
        return SignedBatch.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MalformedRequest(f"{where}: {first['msg']}{more}", code="malformed_batch") from None


def _ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class Ingested:
    """What :func:`store_batch` did: the acknowledgement, and the results it stored (none for a
    duplicate), for the caller's metrics once the transaction has committed."""

    ack: BatchAck
    results: Sequence[ProbeResult]


def ingest_batch(
    session: Session, *, body: bytes, now: datetime, clock_skew: timedelta, max_results: int
) -> BatchAck:
    """Verify and store ``body`` (the raw JSON). Raises a RequestError and writes nothing on any
    problem; an exact resend of a stored batch is acknowledged with ``duplicate=True``."""
    return store_batch(
        session, body=body, now=now, clock_skew=clock_skew, max_results=max_results
    ).ack


def receive_batch(engine: Engine, *, body: bytes, settings: Settings) -> Ingested:
    """One batch in its own transaction, as POST /v1/batches and the peer sync
    (monitor.ingest.sync) take it alike: the size limit, then :func:`store_batch` at the current
    time. A race lost to the same batch arriving at once on another connection is retried: it
    is then acknowledged as a duplicate."""
    if len(body) > settings.max_body_bytes:
        raise PayloadTooLarge(f"body of {len(body)} bytes; the limit is {settings.max_body_bytes}")

    def store() -> Ingested:
        with session_scope(engine) as session:
            return store_batch(
                session,
                body=body,
                now=datetime.now(UTC),
                clock_skew=timedelta(seconds=settings.clock_skew_s),
                max_results=settings.max_results_per_batch,
            )

    try:
        return store()
    except IntegrityError:
        return store()


def store_batch(
    session: Session, *, body: bytes, now: datetime, clock_skew: timedelta, max_results: int
) -> Ingested:
    """:func:`ingest_batch`, returning the stored results as well."""
    batch = parse_batch(body)
    message = batch.message
    if len(batch.results) > max_results:
        raise PayloadTooLarge(
            f"{len(batch.results)} results in one batch; the limit is {max_results}"
        )
    signer = verify_batch(batch)  # results hash, count, then the signature itself
    signature = batch.signature.lower()  # hex case carries no meaning; compare and store one form

    probe = require_active_probe(session, address=signer)

    created_at = _ms(message.createdAt)
    if created_at > now + clock_skew:
        raise ClockSkew(
            f"batch created {(created_at - now).total_seconds():.1f} s in the future; "
            f"allowed clock skew is {clock_skew.total_seconds():g} s",
            code="batch_from_future",
        )

    existing = session.scalar(
        select(Batch).where(Batch.probe_id == probe.id, Batch.batch_id == message.batchId)
    )
    if existing is not None:
        if existing.results_hash == message.resultsHash and existing.signature == signature:
            ack = BatchAck(
                batch_id=message.batchId,
                probe=signer,
                results=existing.result_count,
                duplicate=True,
            )
            return Ingested(ack, ())
        raise BatchConflict(f"batch {message.batchId} was already stored with other content")

    owners = _owners(session, {r.endpoint_id for r in batch.results})
    rows: list[tuple[Any, ...]] = []  # RESULT_COLUMNS but the first (batch_id)
    for i, r in enumerate(batch.results):
        owner = owners.get(r.endpoint_id)
        if owner is None:
            raise MalformedRequest(
                f"results[{i}]: endpoint {r.endpoint_id} is unknown", code="unknown_endpoint"
            )
        if owner != (r.operator_id, r.chain_id):
            raise MalformedRequest(
                f"results[{i}]: endpoint {r.endpoint_id} belongs to operator "
                f"{owner[0]} on chain {owner[1]}",
                code="endpoint_mismatch",
            )
        observed_at = _ms(r.observed_at_ms)
        if not (
            created_at - MAX_ROUND_SPAN
            <= observed_at
            <= created_at + OBSERVED_AFTER_CREATED_TOLERANCE
        ):
            raise MalformedRequest(
                f"results[{i}]: observed_at is not within the hour before the batch's createdAt",
                code="observed_at_inconsistent",
            )
        rows.append(result_row(r, probe_id=probe.id, observed_at=observed_at))

    stored = Batch(
        probe_id=probe.id,
        batch_id=message.batchId,
        created_at=created_at,
        received_at=now,
        results_hash=message.resultsHash,
        signature=signature,
        result_count=len(rows),
        body=body.decode(),
        body_hash=batch_hash(body),
    )
    session.add(stored)
    session.flush()
    if rows:
        _insert_results(session, [(stored.id, *row) for row in rows])
    ack = BatchAck(batch_id=message.batchId, probe=signer, results=len(rows), duplicate=False)
    return Ingested(ack, batch.results)


def result_row(r: ProbeResult, *, probe_id: int, observed_at: datetime) -> tuple[Any, ...]:
    """One result as stored: the values of RESULT_COLUMNS but the first (batch_id)."""
    return (
        probe_id,
        r.endpoint_id,
        r.operator_id,
        r.chain_id,
        observed_at,
        r.ok,
        r.error,
        None if r.latency_us is None else r.latency_us / 1000,
        r.head,
        r.reference_head,
        r.lag_blocks,
        None if r.lag_ms is None else r.lag_ms / 1000,
        r.check_height,
        r.block_hash,
        r.correct,
    )


def _owners(session: Session, endpoint_ids: set[int]) -> dict[int, tuple[str, int]]:
    """Endpoint id -> (operator, chain) for those of ``endpoint_ids`` that exist. PostgreSQL gets
    the ids as one array parameter: thousands of IN placeholders cost psycopg milliseconds of
    query parsing per batch."""
    if session.get_bind().dialect.name == "postgresql":
        ids = bindparam("ids", sorted(endpoint_ids), type_=ARRAY(BigInteger))
        condition = Endpoint.id == any_(ids)
    else:
        condition = Endpoint.id.in_(endpoint_ids)
    query = select(Endpoint.id, Endpoint.operator_id, Endpoint.chain_id).where(condition)
    return {row.id: (row.operator_id, row.chain_id) for row in session.execute(query)}


def _insert_results(session: Session, rows: list[tuple[Any, ...]]) -> None:
    """Rows of RESULT_COLUMNS into the session's transaction: on PostgreSQL (psycopg 3) with one
    ``COPY ... FROM STDIN`` on the session's own connection, elsewhere (SQLite) with one
    executemany. Either way nothing is kept unless the whole transaction commits."""
    connection = session.connection()
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        import psycopg

        driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
        try:
            with driver.cursor() as cursor, cursor.copy(_COPY_RESULTS) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            # As SQLAlchemy would have raised it: IntegrityError, OperationalError (503), ...
            raise DBAPIError.instance(_COPY_RESULTS, None, exc, psycopg.Error) from exc
        return
    session.execute(
        insert(Result.__table__),  # type: ignore[arg-type]
        [dict(zip(RESULT_COLUMNS, row, strict=True)) for row in rows],
    )
