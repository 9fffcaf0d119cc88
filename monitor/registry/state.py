"""The registry in force: which one was applied, when, and who approved it.

Kept in two ``documents`` rows (no table of its own):

* ``registry``: the canonical JSON of the applied registry and its hash (monitor.registry
  .canonical); ``updated_at`` is when that hash came into force.
* ``registry_approval``: small, read by ``GET /v1/identity``: the hash again, when it came into
  force, the approving signatures (verified when applied), the threshold and governance signers
  they were checked against, and the registry's collectors.

The ``registry`` row holds endpoint URLs with their API keys, like the ``endpoints`` table; the
dashboards' read-only role has no grant on ``documents`` (dashboards/grafana_readonly.sql).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from monitor.attestations.models import Document
from monitor.db.models import utcnow
from monitor.registry.canonical import canonical_json
from monitor.registry.governance import Approval, summary_json
from monitor.registry.schema import CollectorEntry

REGISTRY_DOCUMENT = "registry"
APPROVAL_DOCUMENT = "registry_approval"


class SignatureOut(BaseModel):
    signer: str
    signature: str


class RegistryInForce(BaseModel):
    hash: str
    applied_at: datetime
    signatures: list[SignatureOut]
    threshold: int | None
    governance_signers: list[str]
    collectors: list[CollectorEntry]

    @property
    def signers(self) -> list[str]:
        return [s.signer for s in self.signatures]


def _put(session: Session, name: str, body: str, digest: str, now: datetime) -> None:
    document = session.get(Document, name)
    if document is None:
        session.add(Document(name=name, body=body, hash=digest, updated_at=now))
    elif document.hash != digest or document.body != body:
        document.body, document.hash, document.updated_at = body, digest, now


def record_applied(
    session: Session, *, body: bytes, approval: Approval, collectors: list[CollectorEntry]
) -> None:
    """Store the applied registry and its approval; re-applying the same registry keeps the time
    it came into force (and records any new signatures)."""
    now = utcnow()
    current = session.get(Document, REGISTRY_DOCUMENT)
    applied_at = now
    if current is not None and current.hash == approval.registry_hash:
        before = registry_in_force(session)
        applied_at = before.applied_at if before is not None else current.updated_at
    _put(session, REGISTRY_DOCUMENT, body.decode("ascii"), approval.registry_hash, now)
    summary: dict[str, Any] = {
        **summary_json(approval),
        "applied_at": applied_at.isoformat(),
        "collectors": [c.model_dump(mode="json") for c in collectors],
    }
    text = canonical_json(summary).decode("ascii")
    _put(session, APPROVAL_DOCUMENT, text, approval.registry_hash, now)


def registry_in_force(session: Session) -> RegistryInForce | None:
    """None until a registry is applied (or one applied before hashes were recorded)."""
    document = session.get(Document, APPROVAL_DOCUMENT)
    if document is None:
        return None
    data = json.loads(document.body)
    return RegistryInForce(
        hash=data["registry_hash"],
        applied_at=data["applied_at"],
        signatures=data["signatures"],
        threshold=data["threshold"],
        governance_signers=data["governance_signers"],
        collectors=data["collectors"],
    )


def registered_collectors(session: Session) -> list[CollectorEntry]:
    """The collectors of the registry in force (whose signatures count as registered ones)."""
    state = registry_in_force(session)
    return state.collectors if state is not None else []
