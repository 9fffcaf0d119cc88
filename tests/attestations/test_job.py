"""The daily job: yesterday's attestation for every subject with evidence, issued once, and it
verifies offline."""

from __future__ import annotations

import json
from datetime import timedelta

from eth_account import Account
from sqlalchemy import Engine, func, select

from monitor.attestations.job import attest_previous_day
from monitor.attestations.models import Attestation, AttestationBatch
from monitor.attestations.schemas import BundleOut
from monitor.attestations.service import attestation_out, bundle_page
from monitor.attestations.verify import problems, verify_bundle
from monitor.db.session import session_scope
from tests.sla.support import T0, make_fleet, post, result


def test_yesterday_is_attested_once_per_subject_with_evidence(engine: Engine) -> None:
    fleet = make_fleet(engine)
    for m in range(5):  # alpha checked by every probe for five minutes; bravo never
        at = T0 + timedelta(minutes=m)
        for account in fleet.probes:
            post(
                engine,
                account,
                [result(fleet, "alpha", at + timedelta(seconds=30))],
                created=at + timedelta(seconds=50),
            )
    account = Account.create()
    now = T0.replace(hour=0, minute=0) + timedelta(days=1, hours=2)
    ids = attest_previous_day(engine, account=account, now=now, retention_days=14)
    assert len(ids) == 1  # bravo has no evidence that day: skipped
    assert attest_previous_day(engine, account=account, now=now, retention_days=14) == []
    with session_scope(engine) as session:
        row = session.get(Attestation, ids[0])
        assert row is not None and row.operator_id == "alpha"
        assert (row.period_start, row.period_end) == (
            T0.replace(hour=0, minute=0),
            T0.replace(hour=0, minute=0) + timedelta(days=1),
        )
        assert session.scalar(select(func.count()).select_from(AttestationBatch)) == 15
        bundle = BundleOut(
            format="monitor-attestation-bundle/1",
            attestation=attestation_out(session, row),
            batches=[body for _, body in bundle_page(session, row.id, after="", limit=100)],
        )
    checks = verify_bundle(bundle, signer=account.address)
    assert problems(checks) == [], [c for c in checks]
    figures = json.loads(bundle.attestation.model_dump_json())["typed_data"]["message"]["figures"]
    assert (figures["up"], figures["totalMinutes"]) == (5, 1440)
