"""Verify a signed batch and store it with its results, idempotently, all or nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eth_utils import keccak
from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from monitor.db.models import Batch, Endpoint, Result
from monitor.exceptions import (
    BatchConflict,
    ClockSkew,
    MalformedRequest,
    PayloadTooLarge,
)
from monitor.ingest.schemas import BatchAck, ProbeResult, SignedBatch
from monitor.registry.service import require_active_probe
from monitor.signing.eip712 import verify_batch

# Observations may precede the batch's creation by at most this much (a round plus slack), and
# may not follow it beyond a little clock jitter inside one process.
MAX_ROUND_SPAN = timedelta(hours=1)
OBSERVED_AFTER_CREATED_TOLERANCE = timedelta(seconds=2)


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

    endpoint_ids = {r.endpoint_id for r in batch.results}
    endpoints = {
        e.id: e for e in session.scalars(select(Endpoint).where(Endpoint.id.in_(endpoint_ids)))
    }
    rows = []
    for i, r in enumerate(batch.results):
        endpoint = endpoints.get(r.endpoint_id)
        if endpoint is None:
            raise MalformedRequest(
                f"results[{i}]: endpoint {r.endpoint_id} is unknown", code="unknown_endpoint"
            )
        if (endpoint.operator_id, endpoint.chain_id) != (r.operator_id, r.chain_id):
            raise MalformedRequest(
                f"results[{i}]: endpoint {r.endpoint_id} belongs to operator "
                f"{endpoint.operator_id} on chain {endpoint.chain_id}",
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
        rows.append(
            {
                "probe_id": probe.id,
                "endpoint_id": r.endpoint_id,
                "operator_id": r.operator_id,
                "chain_id": r.chain_id,
                "observed_at": observed_at,
                "ok": r.ok,
                "error": r.error,
                "latency_ms": None if r.latency_us is None else r.latency_us / 1000,
                "head": r.head,
                "reference_head": r.reference_head,
                "lag_blocks": r.lag_blocks,
                "lag_seconds": None if r.lag_ms is None else r.lag_ms / 1000,
                "check_height": r.check_height,
                "block_hash": r.block_hash,
                "correct": r.correct,
            }
        )

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
        for row in rows:
            row["batch_id"] = stored.id
        session.execute(insert(Result), rows)
    ack = BatchAck(batch_id=message.batchId, probe=signer, results=len(rows), duplicate=False)
    return Ingested(ack, batch.results)
