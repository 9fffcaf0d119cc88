"""Daily attestations: once a UTC day has ended, every subject (an active operator on an active
chain where it has an active endpoint) gets an attestation of that day, issued once. A day with
no evidence for a subject is skipped; a later run does not retry days already attested."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select

from monitor.attestations.models import Attestation
from monitor.attestations.service import issue_attestation
from monitor.db.session import session_scope
from monitor.exceptions import NoEvidence
from monitor.sla.events import subjects

log = logging.getLogger("monitor.attestations")


def attest_previous_day(
    engine: Engine, *, account: LocalAccount, now: datetime, retention_days: float
) -> list[int]:
    """Issue the missing attestations of yesterday (UTC); returns the new attestation ids."""
    end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=1)
    with session_scope(engine) as session:
        wanted = [(c.chain_id, o.id) for c, o in subjects(session)]
        done = set(
            session.execute(
                select(Attestation.chain_id, Attestation.operator_id).where(
                    Attestation.period_start == start, Attestation.period_end == end
                )
            ).all()
        )
    issued = []
    for chain_id, operator_id in wanted:
        if (chain_id, operator_id) in done:
            continue
        try:
            with session_scope(engine) as session:  # one transaction per attestation
                row = issue_attestation(
                    session,
                    account=account,
                    operator_id=operator_id,
                    chain_id=chain_id,
                    start=start,
                    end=end,
                    now=now,
                    retention_days=retention_days,
                )
                issued.append(row.id)
        except NoEvidence:
            log.info("no evidence for %s on chain %d on %s", operator_id, chain_id, start.date())
    return issued
