"""Apply a registry: idempotent upsert; what the file no longer lists is deactivated, never
deleted, so the history that refers to it stays. With governance configured, only a registry
whose hash enough governance signers approved (monitor.registry.governance) is applied at all."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.attestations.models import Document
from monitor.db.models import Chain, Endpoint, Operator, Probe, utcnow
from monitor.exceptions import GovernanceError
from monitor.registry.canonical import canonical_registry, hash_bytes
from monitor.registry.governance import Approval, Governance, RegistrySignature, approve
from monitor.registry.schema import Registry, endpoint_id
from monitor.registry.state import record_applied, registry_in_force
from monitor.sla.penalties import policy_hash

KINDS = ("chains", "operators", "endpoints", "probes")


def _counts() -> dict[str, int]:
    return dict.fromkeys(KINDS, 0)


@dataclass
class ApplySummary:
    created: dict[str, int] = field(default_factory=_counts)
    updated: dict[str, int] = field(default_factory=_counts)
    deactivated: dict[str, int] = field(default_factory=_counts)
    approval: Approval | None = None  # the hash applied and who approved it

    def __str__(self) -> str:
        parts = []
        for kind in KINDS:
            parts.append(
                f"{kind}: {self.created[kind]} created, {self.updated[kind]} updated, "
                f"{self.deactivated[kind]} deactivated"
            )
        return "; ".join(parts)


def _set(row: object, values: dict[str, object]) -> bool:
    """Set attributes; True when anything changed."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    if changed:
        row.updated_at = utcnow()  # type: ignore[attr-defined]
    return changed


def apply_registry(
    session: Session,
    *,
    registry: Registry,
    governance: Governance | None = None,
    signatures: Sequence[RegistrySignature] = (),
    source: str = "registry",
) -> ApplySummary:
    """Apply ``registry`` in the caller's transaction. GovernanceError (before anything is
    written) when ``governance`` is set and ``signatures`` do not approve this registry's hash."""
    body = canonical_registry(registry)
    try:
        approval = approve(hash_bytes(body), signatures, governance=governance, source=source)
    except GovernanceError as exc:
        in_force = registry_in_force(session)
        kept = in_force.hash if in_force is not None else "none applied yet"
        raise GovernanceError(f"{exc.message}: {kept}") from None
    summary = ApplySummary(approval=approval)

    def upsert(
        kind: str, existing: object | None, values: dict[str, object], new: object
    ) -> object:
        if existing is None:
            session.add(new)
            summary.created[kind] += 1
            return new
        if _set(existing, {**values, "active": True}):
            summary.updated[kind] += 1
        return existing

    chains = {c.chain_id: c for c in session.scalars(select(Chain))}
    for entry in registry.chains:
        values: dict[str, object] = {
            "name": entry.name,
            "block_time_s": entry.block_time_s,
            "confirmations": entry.confirmations,
            "sla_availability": entry.sla.availability,
            "sla_latency_p95_ms": entry.sla.latency_p95_ms,
            "sla_max_lag_blocks": entry.sla.max_lag_blocks,
            "sla": entry.sla.model_dump_json(),
            "quorum": entry.quorum,
            "checks": json.dumps(entry.checks, sort_keys=True),
            "scoring": entry.scoring.model_dump_json(exclude_defaults=True),
        }
        upsert(
            "chains",
            chains.get(entry.chain_id),
            values,
            Chain(chain_id=entry.chain_id, active=True, **values),
        )

    operators = {o.id: o for o in session.scalars(select(Operator))}
    for op_entry in registry.operators:
        values = {
            "name": op_entry.name,
            "sla": json.dumps(
                {str(c): o.model_dump(exclude_none=True) for c, o in op_entry.sla.items()},
                sort_keys=True,
            ),
        }
        upsert(
            "operators",
            operators.get(op_entry.id),
            values,
            Operator(id=op_entry.id, active=True, **values),
        )

    policy = registry.penalties
    document = session.get(Document, "penalty_policy")
    if document is None:
        session.add(
            Document(
                name="penalty_policy",
                body=policy.canonical(),
                hash=policy_hash(policy),
                updated_at=utcnow(),
            )
        )
    elif document.body != policy.canonical():
        document.body, document.hash = policy.canonical(), policy_hash(policy)
        document.updated_at = utcnow()

    endpoints = {(e.operator_id, e.chain_id, e.url): e for e in session.scalars(select(Endpoint))}
    wanted_endpoints = set()
    session.flush()  # chains and operators exist before endpoints refer to them
    for operator in registry.operators:
        for ep in operator.endpoints:
            key = (operator.id, ep.chain_id, ep.url)
            wanted_endpoints.add(key)
            upsert(
                "endpoints",
                endpoints.get(key),
                {"archive": ep.archive},
                Endpoint(
                    id=endpoint_id(operator.id, ep.chain_id, ep.url),
                    operator_id=operator.id,
                    chain_id=ep.chain_id,
                    url=ep.url,
                    archive=ep.archive,
                    active=True,
                ),
            )

    probes = {p.address: p for p in session.scalars(select(Probe))}
    for probe_entry in registry.probes:
        values = {"name": probe_entry.name, "region": probe_entry.region}
        upsert(
            "probes",
            probes.get(probe_entry.address),
            values,
            Probe(address=probe_entry.address, active=True, **values),
        )

    wanted: dict[str, tuple[set[Any], dict[Any, Any]]] = {
        "chains": ({c.chain_id for c in registry.chains}, chains),
        "operators": ({o.id for o in registry.operators}, operators),
        "endpoints": (wanted_endpoints, endpoints),
        "probes": ({p.address for p in registry.probes}, probes),
    }
    for kind, (keys, rows) in wanted.items():
        for key, row in rows.items():
            if key not in keys and row.active:
                row.active = False
                row.updated_at = utcnow()
                summary.deactivated[kind] += 1
    record_applied(session, body=body, approval=approval, collectors=registry.collectors)
    session.flush()
    return summary
