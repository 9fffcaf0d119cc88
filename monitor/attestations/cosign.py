"""Co-signed attestations (docs/attestations.md, "Co-signed attestations").

Two sides, both in the caller's transaction:

* :func:`countersign`, on a collector asked to countersign another's attestation: it checks the
  issuer's signature, recomputes the attestation for the same subject and period from its own
  stored batches (monitor.attestations.service.compute_attestation, the issuer's code path,
  dated with the issuer's ``issuedAt``) and signs only an identical message; it then stores the
  attestation too, with its own signature as a cosignature, and serves it like its own.
* :func:`add_cosignature`, on the issuer (or any collector holding the attestation): it stores
  a countersignature that recovers over exactly the attestation's typed data.

A countersignature says: an independent collector recomputed the same figures from its own copy
of the signed evidence. Nobody's word is taken: every signature is recovered here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from eth_account.signers.local import LocalAccount
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.attestations.message import AttestationMessage
from monitor.attestations.models import Attestation, AttestationSignature
from monitor.attestations.schemas import Cosignature, CosignRequest, Countersigned
from monitor.attestations.service import compute_attestation, get_attestation, store_attestation
from monitor.exceptions import (
    AttestationMismatch,
    BadSignature,
    MalformedRequest,
    NoEvidence,
    TooManyCosignatures,
    UnknownCollector,
)
from monitor.registry.state import registry_in_force
from monitor.signing.collector import attestation_typed_data, recover_signer, sign_typed

MAX_COSIGNATURES = 64  # per attestation: far more collectors than a network runs
MAX_DIFFERENCES = 5  # fields named in a 409
ISSUED_AHEAD_S = 300  # an issuedAt this far ahead of our clock is still taken (clock skew)


def registered_collectors(session: Session) -> set[str] | None:
    """The lowercase addresses of the registry's collectors; None when it lists none (then any
    key's valid signature is taken: the verifier decides whom it counts)."""
    state = registry_in_force(session)
    if state is None or not state.collectors:
        return None
    return {c.address.lower() for c in state.collectors}


def _require_registered(session: Session, address: str, role: str) -> None:
    registered = registered_collectors(session)
    if registered is not None and address.lower() not in registered:
        raise UnknownCollector(
            f"{role} {address} is not one of the {len(registered)} collectors of the registry in "
            "force"
        )


def parse_message(typed_data: dict[str, Any]) -> dict[str, Any]:
    """The ``Attestation`` message of ``typed_data``, checked strictly (docs/attestations.md,
    "Values"), as plain JSON; the typed data must be exactly the collector domain's, as built
    here. MalformedRequest (422 ``invalid_attestation``) otherwise."""
    try:
        message = AttestationMessage.model_validate(typed_data.get("message")).model_dump(
            mode="json"
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise MalformedRequest(
            f"typed_data.message.{where}: {first['msg']}", code="invalid_attestation"
        ) from None
    if typed_data != attestation_typed_data(message):
        raise MalformedRequest(
            "typed_data is not an Attestation of the monitor-collector domain with the "
            "documented types (docs/attestations.md)",
            code="invalid_attestation",
        )
    return message


def recover(typed_data: dict[str, Any], signature: str) -> str:
    """Who signed ``typed_data``: BadSignature (401) on a signature that does not recover."""
    try:
        return recover_signer(typed_data, signature)
    except BadSignature:
        raise
    except Exception as exc:  # eth-account on values that do not fit their types
        raise BadSignature(f"the typed data cannot be encoded: {exc}") from None


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """The fields of two Attestation messages that differ, in message order, the evidence first
    (a different set of batches explains the rest)."""
    a, b = _flat(theirs), _flat(ours)
    out = []
    subject = f"{ours['subject']['operatorId']} on chain {ours['subject']['chainId']}"
    if a["batchCount"] != b["batchCount"]:
        out.append(
            f"batchCount: this collector holds {b['batchCount']} batches of {subject} for the "
            f"period, the attestation {a['batchCount']}"
        )
    elif a["evidenceRoot"] != b["evidenceRoot"]:
        out.append(
            f"evidenceRoot: this collector's {b['batchCount']} batches of {subject} for the "
            f"period hash to {b['evidenceRoot']}, the attestation says {a['evidenceRoot']} "
            "(as many batches, not the same ones)"
        )
    for name in a:
        if name not in ("batchCount", "evidenceRoot") and a[name] != b.get(name):
            out.append(
                f"{name}: the attestation says {json.dumps(a[name])}, recomputed here "
                f"{json.dumps(b.get(name))}"
            )
    return out


def countersign(
    session: Session,
    *,
    account: LocalAccount,
    request: CosignRequest,
    now: datetime,
    retention_days: float | None,
) -> tuple[Countersigned, bool]:
    """Countersign another collector's attestation when this collector's own batches give the
    same message; returns the answer and whether anything was stored (False: already done).
    Raises BadSignature (401), UnknownCollector (403), MalformedRequest (422), NotFound (404),
    NoEvidence or AttestationMismatch (409), storing nothing."""
    message = parse_message(request.typed_data)
    typed = attestation_typed_data(message)
    issuer = recover(typed, request.signature)
    if request.signer is not None and request.signer.lower() != issuer.lower():
        raise BadSignature(
            f"the attestation's signature recovers to {issuer}, not to its signer "
            f"{request.signer}: the typed data or the signature was altered"
        )
    if issuer == account.address:
        raise MalformedRequest(
            "this collector issued that attestation: its signature is already the issuer's",
            code="own_attestation",
        )
    _require_registered(session, issuer, "the issuer")
    signature = request.signature.lower()
    start = datetime.fromtimestamp(message["period"]["start"], UTC)
    end = datetime.fromtimestamp(message["period"]["end"], UTC)
    existing = session.scalars(
        select(Attestation)
        .where(
            Attestation.chain_id == message["subject"]["chainId"],
            Attestation.operator_id == message["subject"]["operatorId"],
            Attestation.period_start == start,
            Attestation.period_end == end,
            Attestation.signer == issuer,
            Attestation.signature == signature,
        )
        .limit(1)
    ).first()
    if existing is not None:  # countersigned before (a retry): the same answer, nothing stored
        own = session.get(AttestationSignature, (existing.id, account.address))
        if own is not None:
            return Countersigned(
                signer=own.signer, signature=own.signature, attestation_id=existing.id
            ), False
    issued_ts = message["issuedAt"]
    if issued_ts > now.timestamp() + ISSUED_AHEAD_S:
        raise MalformedRequest(
            f"issuedAt {issued_ts} is more than {ISSUED_AHEAD_S} s ahead of this collector's clock",
            code="invalid_attestation",
        )
    if issued_ts < message["period"]["end"]:
        raise MalformedRequest(
            "issuedAt is before the end of the period: an attestation of a period not yet over",
            code="invalid_attestation",
        )
    issued_at = datetime.fromtimestamp(issued_ts, UTC)
    if existing is None:
        try:
            computed = compute_attestation(
                session,
                operator_id=message["subject"]["operatorId"],
                chain_id=message["subject"]["chainId"],
                start=start,
                end=end,
                now=now,
                issued_at=issued_at,
                retention_days=retention_days,
            )
        except NoEvidence as exc:
            raise NoEvidence(
                f"{exc.message}; the attestation has {message['batchCount']} batches"
            ) from None
        wrong = differences(message, computed.typed["message"])
        if wrong:
            more = len(wrong) - MAX_DIFFERENCES
            raise AttestationMismatch(
                "recomputed from this collector's own batches, the attestation differs: "
                + "; ".join(wrong[:MAX_DIFFERENCES])
                + (f"; and {more} more" if more > 0 else "")
            )
        existing = store_attestation(
            session, computed, issued_at=issued_at, signer=issuer, signature=signature
        )
    own_signature = sign_typed(account, typed)
    session.add(
        AttestationSignature(
            attestation_id=existing.id,
            signer=account.address,
            signature=own_signature,
            added_at=now,
        )
    )
    session.flush()
    return Countersigned(
        signer=account.address, signature=own_signature, attestation_id=existing.id
    ), True


def add_cosignature(
    session: Session, attestation_id: int, *, cosignature: Cosignature, now: datetime
) -> tuple[Cosignature, bool]:
    """Store a countersignature of attestation ``attestation_id``; returns it and whether it is
    new (False: this signer's is already stored, and kept). Raises NotFound (404), BadSignature
    (401: not this signer's signature over exactly this typed data), UnknownCollector (403),
    MalformedRequest (422 ``issuer_signature``) or TooManyCosignatures (409)."""
    row = get_attestation(session, attestation_id)
    typed = json.loads(row.typed_data)
    signer = recover(typed, cosignature.signature)
    if signer.lower() != cosignature.signer.lower():
        raise BadSignature(
            f"the signature recovers to {signer} over attestation {attestation_id}'s typed data, "
            f"not to {cosignature.signer}: it was made over other data or by another key"
        )
    if signer.lower() == row.signer.lower():
        raise MalformedRequest(
            f"{signer} issued attestation {attestation_id}: its signature is already there",
            code="issuer_signature",
        )
    _require_registered(session, signer, "the cosigner")
    stored = session.get(AttestationSignature, (row.id, signer))
    if stored is not None:
        return Cosignature(signer=stored.signer, signature=stored.signature), False
    count = session.scalar(
        select(func.count())
        .select_from(AttestationSignature)
        .where(AttestationSignature.attestation_id == row.id)
    )
    if (count or 0) >= MAX_COSIGNATURES:
        raise TooManyCosignatures(
            f"attestation {attestation_id} already has {MAX_COSIGNATURES} cosignatures, the most "
            "it may hold"
        )
    signature = cosignature.signature.lower()
    session.add(
        AttestationSignature(
            attestation_id=row.id, signer=signer, signature=signature, added_at=now
        )
    )
    session.flush()
    return Cosignature(signer=signer, signature=signature), True
