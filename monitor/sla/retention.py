"""Retention (docs/sla.md, "Retention"): raw results and raw batches for ``retention_days``,
except batches an attestation commits to; minute rollups and hour rollups for their own spans.
Nothing is removed before it is rolled up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, delete, exists, select
from sqlalchemy.orm import Session

from monitor.attestations.models import AttestationBatch
from monitor.db.models import Batch, Result
from monitor.sla.models import ProbeHour, ProbeMinuteRow, SubjectHour, SubjectMinute


def _delete(session: Session, statement: Delete) -> int:
    result = session.execute(statement.execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount


@dataclass(frozen=True)
class RetentionSummary:
    results: int
    batches: int
    minute_rows: int
    hour_rows: int


def enforce_retention(
    session: Session,
    *,
    now: datetime,
    raw: timedelta,
    minutes: timedelta,
    hours: timedelta,
) -> RetentionSummary:
    cutoff = now - raw
    rolled_up = select(Batch.id).where(Batch.rolled_up.is_(True))
    results = _delete(
        session, delete(Result).where(Result.observed_at < cutoff, Result.batch_id.in_(rolled_up))
    )
    attested = exists().where(AttestationBatch.batch_id == Batch.id)
    still_has_results = exists().where(Result.batch_id == Batch.id)
    batches = _delete(
        session,
        delete(Batch).where(
            Batch.received_at < cutoff, Batch.rolled_up.is_(True), ~attested, ~still_has_results
        ),
    )
    minute_rows = _delete(
        session, delete(ProbeMinuteRow).where(ProbeMinuteRow.minute < now - minutes)
    ) + _delete(session, delete(SubjectMinute).where(SubjectMinute.minute < now - minutes))
    hour_rows = _delete(session, delete(ProbeHour).where(ProbeHour.hour < now - hours)) + _delete(
        session, delete(SubjectHour).where(SubjectHour.hour < now - hours)
    )
    return RetentionSummary(results, batches, minute_rows, hour_rows)
