"""Issue, list and serve signed SLA attestations (docs/attestations.md).

An attestation states an operator's SLA figures on a chain over a period, computed from the raw
signed probe batches alone (monitor.attestations.evidence), commits to those batches with a
Merkle root, and is signed with the collector's key (EIP-712, domain ``monitor-collector``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from monitor.attestations.evidence import evaluate_evidence, unix_ms
from monitor.attestations.message import attestation_message
from monitor.attestations.models import Attestation, AttestationBatch, AttestationSignature
from monitor.attestations.schemas import (
    AttestationOut,
    AttestationSummary,
    Cosignature,
    EvidenceOut,
)
from monitor.db.models import Batch, Probe, Result
from monitor.exceptions import MalformedRequest, NoEvidence, NotFound
from monitor.signing.collector import attestation_typed_data, sign_typed
from monitor.sla.penalties import PenaltyPolicy, policy_hash, recommend
from monitor.sla.service import (
    MAX_PERIOD,
    penalty_policy,
    previous_violations,
    subject,
)
from monitor.sla.targets import subject_targets

MAX_LIST = 1000
BUNDLE_PAGE = 200


def check_period(start: datetime, end: datetime, *, now: datetime) -> tuple[datetime, datetime]:
    """Whole UTC minutes, not empty, at most MAX_PERIOD, over: else 422 ``bad_period``."""
    if start.tzinfo is None or end.tzinfo is None:
        raise MalformedRequest(
            "start and end need a time zone (e.g. a trailing Z)", code="bad_period"
        )
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if any(t.second or t.microsecond for t in (start, end)):
        raise MalformedRequest("start and end must be whole minutes", code="bad_period")
    if unix_ms(start) < 0:
        raise MalformedRequest("start must not be before 1970", code="bad_period")
    if end <= start:
        raise MalformedRequest("the period is empty: end must be after start", code="bad_period")
    if end - start > MAX_PERIOD:
        raise MalformedRequest(f"periods are at most {MAX_PERIOD.days} days", code="bad_period")
    if end > now:
        raise MalformedRequest(
            "the period has not ended: only a past period can be attested", code="bad_period"
        )
    return start, end


def _evidence_batches(
    session: Session, *, chain_id: int, operator_id: str, start: datetime, end: datetime
) -> Any:
    """(id, body) of every stored batch with a result of the subject observed in the period."""
    with_results = select(Result.batch_id).where(
        Result.chain_id == chain_id,
        Result.operator_id == operator_id,
        Result.observed_at >= start,
        Result.observed_at < end,
    )
    return session.execute(
        select(Batch.id, Batch.body).where(Batch.id.in_(with_results)).order_by(Batch.id)
    ).yield_per(500)


@dataclass(frozen=True)
class Computed:
    """An attestation computed from this collector's stored batches, not yet signed."""

    typed: dict[str, Any]  # the full EIP-712 typed data
    batch_ids: list[int]  # the evidence, as this collector's batches.id
    policy: PenaltyPolicy
    violations: list[str]  # the recommendation's violation kinds (the repeat lookup's input)


def compute_attestation(
    session: Session,
    *,
    operator_id: str,
    chain_id: int,
    start: datetime,
    end: datetime,
    now: datetime,
    issued_at: datetime,
    retention_days: float | None = None,
) -> Computed:
    """The attestation of ``[start, end)`` from the stored batches, dated ``issued_at``: what
    the issuer signs, and what a countersigning collector recomputes (``issued_at`` then the
    issuer's). Raises NotFound (404), MalformedRequest (422 ``bad_period``) or NoEvidence (409)."""
    chain, operator = subject(session, operator_id=operator_id, chain_id=chain_id)
    start, end = check_period(start, end, now=now)
    kept = (
        "raw results are kept for the retention period (MONITOR_RETENTION_DAYS)"
        if retention_days is None
        else f"raw results are kept for {retention_days:g} days (MONITOR_RETENTION_DAYS)"
    )
    if retention_days is not None and start < now - timedelta(days=retention_days):
        raise NoEvidence(
            f"the period starts before {now - timedelta(days=retention_days):%Y-%m-%dT%H:%M}Z: "
            f"{kept}, so its evidence may be gone and it cannot be attested"
        )
    batch_ids: list[int] = []

    def bodies() -> Iterator[str]:
        for batch_id, body in _evidence_batches(
            session, chain_id=chain_id, operator_id=operator_id, start=start, end=end
        ):
            batch_ids.append(batch_id)
            yield body

    targets = subject_targets(chain, operator)
    evidence = evaluate_evidence(
        bodies(),
        operator_id=operator_id,
        chain_id=chain_id,
        start=start,
        end=end,
        targets=targets,
        probes=list(session.scalars(select(Probe.address))),
    )
    if not batch_ids:
        raise NoEvidence(
            f"no stored batch has a result of operator {operator_id!r} on chain {chain_id} in "
            f"[{start:%Y-%m-%dT%H:%M}Z, {end:%Y-%m-%dT%H:%M}Z): nothing to attest; {kept}"
        )
    policy = penalty_policy(session)
    previous = previous_violations(
        session,
        chain_id=chain_id,
        operator_id=operator_id,
        before=start,
        lookback_days=policy.lookback_days,
    )
    recommendation = recommend(
        verdicts=evidence.figures.verdicts,
        longest_outage_minutes=evidence.longest_outage_minutes,
        previous=previous,
        policy=policy,
    )
    typed = attestation_typed_data(
        attestation_message(
            chain_id=chain_id,
            operator_id=operator_id,
            start=unix_ms(start) // 1000,
            end=unix_ms(end) // 1000,
            targets=targets,
            figures=evidence.figures,
            longest_outage_minutes=evidence.longest_outage_minutes,
            evidence_root=evidence.root,
            batch_count=len(evidence.batch_hashes),
            probes=evidence.probes,
            policy_hash=policy_hash(policy),
            recommendation=recommendation,
            issued_at=unix_ms(issued_at) // 1000,
        )
    )
    return Computed(typed, batch_ids, policy, [v.kind for v in recommendation.violations])


def store_attestation(
    session: Session, computed: Computed, *, issued_at: datetime, signer: str, signature: str
) -> Attestation:
    """Store a signed attestation with its evidence (then kept by retention)."""
    message = computed.typed["message"]
    row = Attestation(
        chain_id=message["subject"]["chainId"],
        operator_id=message["subject"]["operatorId"],
        period_start=datetime.fromtimestamp(message["period"]["start"], UTC),
        period_end=datetime.fromtimestamp(message["period"]["end"], UTC),
        issued_at=issued_at,
        evidence_root=message["evidenceRoot"],
        batch_count=message["batchCount"],
        policy_hash=message["policyHash"],
        policy=computed.policy.canonical(),
        violations=json.dumps(computed.violations),
        signer=signer,
        typed_data=json.dumps(computed.typed, separators=(",", ":")),
        signature=signature,
    )
    session.add(row)
    session.flush()
    session.execute(
        insert(AttestationBatch),
        [{"attestation_id": row.id, "batch_id": b} for b in computed.batch_ids],
    )
    return row


def issue_attestation(
    session: Session,
    *,
    account: LocalAccount,
    operator_id: str,
    chain_id: int,
    start: datetime,
    end: datetime,
    now: datetime,
    retention_days: float | None = None,
) -> Attestation:
    """Compute, sign and store the attestation of ``[start, end)``; its batches are then kept
    by retention. Raises NotFound (404), MalformedRequest (422 ``bad_period``) or NoEvidence
    (409) and stores nothing on any problem."""
    computed = compute_attestation(
        session,
        operator_id=operator_id,
        chain_id=chain_id,
        start=start,
        end=end,
        now=now,
        issued_at=now,
        retention_days=retention_days,
    )
    return store_attestation(
        session,
        computed,
        issued_at=now,
        signer=account.address,
        signature=sign_typed(account, computed.typed),
    )


# --- reading ------------------------------------------------------------------------------------


def get_attestation(session: Session, attestation_id: int) -> Attestation:
    row = session.get(Attestation, attestation_id)
    if row is None:
        raise NotFound(f"no attestation {attestation_id}", code="unknown_attestation")
    return row


def cosignatures(session: Session, attestation_id: int) -> list[Cosignature]:
    """The attestation's countersignatures, in the order they were added."""
    rows = session.execute(
        select(AttestationSignature.signer, AttestationSignature.signature)
        .where(AttestationSignature.attestation_id == attestation_id)
        .order_by(AttestationSignature.added_at, AttestationSignature.signer)
    )
    return [Cosignature(signer=signer, signature=signature) for signer, signature in rows]


def attestation_out(session: Session, row: Attestation) -> AttestationOut:
    return AttestationOut(
        id=row.id,
        typed_data=json.loads(row.typed_data),
        signature=row.signature,
        signer=row.signer,
        policy=json.loads(row.policy),
        cosignatures=cosignatures(session, row.id),
    )


def list_attestations(
    session: Session, *, operator_id: str | None, chain_id: int | None, limit: int
) -> list[AttestationSummary]:
    query = select(Attestation)
    if operator_id is not None:
        query = query.where(Attestation.operator_id == operator_id)
    if chain_id is not None:
        query = query.where(Attestation.chain_id == chain_id)
    query = query.order_by(Attestation.issued_at.desc(), Attestation.id.desc())
    return [
        AttestationSummary(
            id=row.id,
            operator_id=row.operator_id,
            chain_id=row.chain_id,
            start=row.period_start,
            end=row.period_end,
            issued_at=row.issued_at,
            evidence_root=row.evidence_root,
            batch_count=row.batch_count,
            violations=json.loads(row.violations),
            signer=row.signer,
        )
        for row in session.scalars(query.limit(min(limit, MAX_LIST)))
    ]


def evidence_hashes(session: Session, attestation_id: int) -> list[str]:
    return list(
        session.scalars(
            select(Batch.body_hash)
            .join(AttestationBatch, AttestationBatch.batch_id == Batch.id)
            .where(AttestationBatch.attestation_id == attestation_id)
            .order_by(Batch.body_hash)
        )
    )


def evidence_out(session: Session, attestation_id: int) -> EvidenceOut:
    row = get_attestation(session, attestation_id)
    return EvidenceOut(root=row.evidence_root, batch_hashes=evidence_hashes(session, row.id))


def bundle_page(
    session: Session, attestation_id: int, *, after: str, limit: int = BUNDLE_PAGE
) -> list[tuple[str, str]]:
    """(hash, body) of the attestation's batches with a hash above ``after``, by hash."""
    rows = session.execute(
        select(Batch.body_hash, Batch.body)
        .join(AttestationBatch, AttestationBatch.batch_id == Batch.id)
        .where(AttestationBatch.attestation_id == attestation_id, Batch.body_hash > after)
        .order_by(Batch.body_hash)
        .limit(limit)
    )
    return [(h, body) for h, body in rows]


def batch_body(session: Session, digest: str) -> str:
    """The raw body of the stored batch whose keccak256 is ``digest`` (``0x`` + 64 hex)."""
    body = session.scalar(select(Batch.body).where(Batch.body_hash == digest))
    if body is None:
        raise NotFound(f"no stored batch has hash {digest}", code="unknown_batch")
    return body
