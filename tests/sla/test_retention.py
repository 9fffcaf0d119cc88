"""Retention: raw results and batches go after retention_days, except batches an attestation
commits to and anything not rolled up yet; minute rollups and hour rollups on their own spans."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, func, select

from monitor.attestations.models import Attestation, AttestationBatch
from monitor.db.models import Batch, Result
from monitor.db.session import session_scope
from monitor.settings import Settings
from monitor.sla.job import run_retention, run_rollups
from monitor.sla.models import ProbeMinuteRow, SubjectHour, SubjectMinute
from tests.sla.support import T0, make_fleet, post, result


def count(engine: Engine, table: type) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def test_retention_keeps_what_is_attested_rolled_up_or_recent(
    engine: Engine, settings: Settings
) -> None:
    fleet = make_fleet(engine)
    a, b, c = fleet.probes
    old = [
        post(
            engine,
            p,
            [result(fleet, "alpha", T0 + timedelta(seconds=10))],
            created=T0 + timedelta(seconds=30),
        )
        for p in (a, b, c)
    ]
    recent_at = T0 + timedelta(days=20)
    post(engine, a, [result(fleet, "alpha", recent_at)], created=recent_at + timedelta(seconds=1))
    run_rollups(engine, settings, now=recent_at)
    with session_scope(engine) as session:  # an attestation commits to probe a's old batch
        attested = session.scalar(select(Batch).where(Batch.body == old[0]))
        assert attested is not None
        session.add(
            Attestation(
                id=1,
                chain_id=1,
                operator_id="alpha",
                period_start=T0,
                period_end=T0 + timedelta(hours=1),
                issued_at=T0 + timedelta(hours=2),
                evidence_root="0x" + "00" * 32,
                batch_count=1,
                policy_hash="0x" + "00" * 32,
                policy="{}",
                violations="[]",
                signer="0x" + "00" * 20,
                typed_data="{}",
                signature="0x" + "00" * 65,
            )
        )
        session.flush()
        session.add(AttestationBatch(attestation_id=1, batch_id=attested.id))
    # a late batch about the old minute arrives and is not rolled up yet
    late_created = T0 + timedelta(minutes=50)
    post(engine, b, [result(fleet, "alpha", T0 + timedelta(minutes=20))], created=late_created)
    assert (count(engine, Batch), count(engine, Result)) == (5, 5)

    summary = run_retention(engine, settings, now=recent_at)  # 14 days of raw data
    assert (summary.results, summary.batches) == (3, 2)
    with session_scope(engine) as session:
        kept = set(session.scalars(select(Batch.body)))
        assert old[0] in kept and old[1] not in kept and old[2] not in kept
        assert (
            session.scalar(select(func.count()).select_from(Result)) == 2
        )  # recent + not rolled up
    assert count(engine, SubjectMinute) == 2 and count(engine, ProbeMinuteRow) == 4

    run_rollups(engine, settings, now=recent_at)  # the late batch is counted, then may go
    assert run_retention(engine, settings, now=recent_at).results == 1
    summary = run_retention(engine, settings, now=T0 + timedelta(days=40))
    assert summary.minute_rows > 0 and summary.hour_rows == 0
    assert count(engine, SubjectMinute) == 1  # the recent minute: 20 days old, within 35
    assert count(engine, SubjectHour) == 2  # hours: kept 400 days
    assert count(engine, Batch) == 1  # only the attested batch is left
